"""Shared helpers for the denoise.cnn tests: small models on disk, noisy real images, PSNR inside a mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_random_model(
    path: Path, spatial_dims: int = 2, features: int = 8, depth: int = 3, seed: int = 0, noise: str = "gaussian", guide: str = "none"
) -> Path:
    """A randomly initialised denoise.cnn model with its card, as `voxpipe train` writes them."""
    import torch

    from voxpipe_plugins.denoise.cnn_net import Architecture, ResidualDenoiser
    from voxpipe_plugins.denoise.cnn_weights import save_model

    torch.manual_seed(seed)
    arch = Architecture(spatial_dims=spatial_dims, features=features, depth=depth, guide=guide)
    save_model(ResidualDenoiser(arch), path, {"architecture": arch.to_dict(), "noise": noise, "task": "denoise"})
    return path


def anatomical() -> tuple[np.ndarray, np.ndarray]:
    """nibabel's real T1 (held apart from all training) and its affine."""
    import nibabel as nib

    from tests.conftest import nibabel_data

    image = nib.load(str(nibabel_data("anatomical.nii")))
    return np.asarray(image.get_fdata(), dtype=np.float32), image.affine


def brain_mask(clean: np.ndarray) -> np.ndarray:
    """Inside the head: above 10 % of the robust maximum, holes filled (the region the PSNR is measured in)."""
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(clean > 0.1 * np.percentile(clean, 99.5))


def rician(clean: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Rician noise of sigma = fraction x the image maximum (as in issue 19's benchmark)."""
    rng = np.random.default_rng(seed)
    sigma = fraction * float(clean.max())
    return np.sqrt((clean + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2).astype(np.float32)


def psnr_in(output: np.ndarray, clean: np.ndarray, mask: np.ndarray) -> float:
    """PSNR inside ``mask``, peak = the clean image's maximum."""
    mse = float(np.mean((output[mask].astype(np.float64) - clean[mask]) ** 2))
    return 10 * np.log10(float(clean.max()) ** 2 / mse)

"""Bilateral filter in physical units: torch (2D/3D, CPU or CUDA) or scikit-image (2D, CPU).

Each voxel becomes a weighted mean of its neighbours, the weight a Gaussian of their
distance in mm (``sigma_spatial_mm``, converted per axis with the spacing) times a Gaussian
of their intensity difference (``sigma_color``, by default ``color_factor × σ`` with σ the
noise level estimated from the image).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.denoise import kernels
from voxpipe_plugins.denoise.base import Denoiser, rounded

CPU_CHOICE = "torch"
"""Measured on CPU (docs/denoising.md): the torch filter is faster than scikit-image's for 2D too."""


class BilateralDenoise(Denoiser):
    op = "denoise.bilateral"

    def __init__(
        self,
        key: str = "image",
        sigma_spatial_mm: float = 1.0,
        truncated: float = 2.0,
        sigma_color: float | None = None,
        color_factor: float = 2.5,
        sigma: float | None = None,
        backend: str = "auto",
        device: str = "cpu",
    ) -> None:
        super().__init__(key, device)
        self.sigma_spatial_mm, self.truncated = sigma_spatial_mm, truncated
        self.sigma_color, self.color_factor, self.sigma, self.backend = sigma_color, color_factor, sigma, backend

    def denoise_channel(self, x: torch.Tensor, spacing: tuple[float, ...]) -> tuple[torch.Tensor, dict]:
        sigma_vox = tuple(self.sigma_spatial_mm / s for s in spacing)
        radius = tuple(max(0, int(math.ceil(self.truncated * s - 0.5 - 1e-9))) for s in sigma_vox)
        if not any(radius):
            raise StageInputError(
                f"{self.op}: the window (sigma_spatial_mm {self.sigma_spatial_mm:g} x truncated {self.truncated:g}) is under "
                f"half a voxel on every axis (spacing {', '.join(f'{s:g}' for s in spacing)} mm); raise sigma_spatial_mm"
            )
        info: dict = {
            "sigma_spatial_mm": self.sigma_spatial_mm,
            "sigma_spatial_voxels": rounded(list(sigma_vox), 4),
            "radius_voxels": list(radius),
        }
        if self.sigma_color is not None:
            sigma_color = float(self.sigma_color)
            info.update(sigma_color=rounded(sigma_color), sigma_color_source="given")
        else:
            sigma, how = self.noise_sigma(x, self.sigma)
            sigma_color = self.color_factor * sigma
            info.update(sigma=rounded(sigma), sigma_source=how, sigma_color=rounded(sigma_color))
            if sigma <= 0:
                return x.clone(), {**info, "skipped": "no noise detected (sigma 0)"}
        backend = self.choose_backend(self.backend, CPU_CHOICE)
        if backend == "torch":
            out = kernels.bilateral(x, sigma_color, sigma_vox, radius)
            return out, {**info, "backend": "torch", "device": str(x.device)}
        if x.ndim != 2:
            raise StageInputError(f"{self.op}: scikit-image's bilateral filter is 2D only; use backend torch (or auto) for 3D images")
        from skimage.restoration import denoise_bilateral

        # scikit-image takes one spatial sigma and a square window.
        sigma_spatial = float(np.mean(sigma_vox))
        win_size = 2 * max(radius) + 1
        array = x.detach().cpu().numpy().astype(np.float32)
        result = denoise_bilateral(
            array, win_size=win_size, sigma_color=sigma_color, sigma_spatial=sigma_spatial, bins=10000, mode="reflect"
        )
        out = torch.from_numpy(np.ascontiguousarray(result, dtype=np.float32)).to(x.device)
        return out, {
            **info,
            "backend": "skimage",
            "device": "cpu",
            "skimage_win_size": win_size,
            "skimage_sigma_spatial": rounded(sigma_spatial, 4),
        }

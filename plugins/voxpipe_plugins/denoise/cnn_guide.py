"""The non-local guide of hybrid ``denoise.cnn`` models: ``denoise.nlm``'s estimate as an extra input channel.

A small CNN trained on little data has no access to non-local self-similarity (similar
patches far apart, or in other slices), which is what NLM exploits; NLM in turn leaves
residual noise in textured regions and blurs edges it cannot match. A hybrid model gets
[noisy, NLM estimate, σ map] and predicts a correction to the NLM estimate, so it starts
from NLM's quality and learns where NLM is wrong. The NLM settings are pinned here (not
taken from ``denoise.nlm``'s defaults, which may be retuned) and recorded in the model
card, because the network is trained on exactly this estimate.
"""

from __future__ import annotations

import torch

GUIDE_H_FACTOR = 0.8
"""h = 0.8 σ, the value the model was trained with (docs/denoising-cnn.md)."""

GUIDE_PATCH_VOXELS = 2
"""Patch radius in voxels of the finest axis (5×5 or 5×5×5 patches)."""

GUIDE_SEARCH_VOXELS = {2: 3, 3: 1}
"""Search radius in voxels of the finest axis: 7×7 windows in 2D, 3×3×3 on near-isotropic volumes."""


def guide_recipe() -> dict:
    """What the card records about the guide."""
    return {
        "method": "denoise.nlm",
        "h_factor": GUIDE_H_FACTOR,
        "patch_voxels": GUIDE_PATCH_VOXELS,
        "search_voxels": {str(k): v for k, v in GUIDE_SEARCH_VOXELS.items()},
    }


def nlm_guide(x: torch.Tensor, sigma: float, spacing: tuple[float, ...], noise: str) -> torch.Tensor:
    """NLM estimate of ``x`` (2D or 3D, no channel axis) with noise level ``sigma`` in the units of ``x``."""
    from voxpipe_plugins.denoise.nlm import NLMDenoise

    if sigma <= 0:
        return x.clone()
    finest = min(spacing)
    fine_axes = sum(1 for s in spacing if s < 2 * finest)
    search = GUIDE_SEARCH_VOXELS[3 if x.ndim == 3 and fine_axes == 3 else 2]
    stage = NLMDenoise(
        patch_radius_mm=GUIDE_PATCH_VOXELS * finest,
        search_radius_mm=search * finest,
        h_factor=GUIDE_H_FACTOR,
        sigma=float(sigma),
        noise="rician" if noise == "rician" else "gaussian",
        backend="torch",
        device=str(x.device),
    )
    out, _ = stage.denoise_channel(x.float().contiguous(), tuple(float(s) for s in spacing))
    return out

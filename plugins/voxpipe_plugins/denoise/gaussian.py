"""Gaussian smoothing in physical units: sigma_mm / spacing gives the per-axis sigma in voxels."""

from __future__ import annotations

import torch
from monai.transforms import GaussianSmooth

from voxpipe.stage import record
from voxpipe_plugins.common.checks import float_image, spatial_dims
from voxpipe_plugins.common.tensors import spacing_of


class GaussianDenoise:
    def __init__(self, key: str = "image", sigma_mm: float = 1.0, truncated: float = 4.0, device: str = "cpu") -> None:
        self.key, self.sigma_mm, self.truncated, self.device = key, sigma_mm, truncated, device

    def __call__(self, case: dict) -> dict:
        image = case[self.key]
        data = float_image(image, "denoise.gaussian")  # integers -> float32; NaN/Inf refused in one line
        spatial_dims(data, "denoise.gaussian")  # channel-first 2D or 3D only
        spacing = spacing_of(image)
        sigma = tuple(self.sigma_mm / s for s in spacing)
        smooth = GaussianSmooth(sigma=sigma, approx="erf")
        original_device = image.device if isinstance(image, torch.Tensor) else torch.device("cpu")
        result = smooth(torch.as_tensor(data).to(self.device).float())
        out = dict(case)
        out[self.key] = result.to(original_device)
        record(out, "denoise.gaussian", sigma_mm=self.sigma_mm, sigma_voxels=[round(s, 4) for s in sigma], device=self.device)
        return out

"""Median filter in physical units (MONAI ``MedianSmooth``; CPU or CUDA).

``radius_mm`` becomes the nearest whole number of voxels per axis (halves rounded down),
so a 1 mm radius on 0.7 × 0.7 × 5 mm voxels is a 3 × 3 × 1 window. MONAI builds the
window with a one-hot convolution, which needs (window size) × (image) memory; large
images are therefore filtered in slabs along the first axis (with a halo of ``radius``
voxels), bounded by ``MAX_WINDOW_VOXELS``.
"""

from __future__ import annotations

import math

import torch
from monai.transforms import MedianSmooth

from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.denoise.base import Denoiser, mm_to_voxels

MAX_WINDOW_VOXELS = 1 << 26
"""Largest (window size × slab voxels) handed to MONAI at once: 256 MB of float32."""


class MedianDenoise(Denoiser):
    op = "denoise.median"

    def __init__(self, key: str = "image", radius_mm: float = 1.0, device: str = "cpu") -> None:
        super().__init__(key, device)
        self.radius_mm = radius_mm

    def denoise_channel(self, x: torch.Tensor, spacing: tuple[float, ...]) -> tuple[torch.Tensor, dict]:
        radius = mm_to_voxels(self.radius_mm, spacing)
        if not any(radius):
            raise StageInputError(
                f"{self.op}: radius_mm {self.radius_mm:g} is under half a voxel on every axis "
                f"(spacing {', '.join(f'{s:g}' for s in spacing)} mm); make it at least {0.5 * min(spacing):g}"
            )
        window = math.prod(2 * r + 1 for r in radius)
        smooth = MedianSmooth(radius=radius)
        plane = math.prod(x.shape[1:])
        slab = max(1, MAX_WINDOW_VOXELS // (window * plane))
        r0, n0 = radius[0], x.shape[0]
        if slab >= n0:
            out = smooth(x[None])[0]
        else:
            out = torch.empty_like(x)
            for start in range(0, n0, slab):
                stop = min(n0, start + slab)
                lo, hi = max(0, start - r0), min(n0, stop + r0)
                part = smooth(x[lo:hi][None])[0]
                out[start:stop] = part[start - lo : start - lo + (stop - start)]
        out = out.as_subclass(torch.Tensor) if type(out) is not torch.Tensor else out
        return out, {"radius_mm": self.radius_mm, "radius_voxels": list(radius), "window_voxels": window, "device": str(x.device)}

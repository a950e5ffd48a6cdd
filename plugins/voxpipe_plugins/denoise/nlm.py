"""Non-local means in physical units: torch (CPU threads or CUDA) or scikit-image's fast mode.

Patch and search radii are given in mm and converted per axis with the voxel spacing, so
a 0.7 × 0.7 × 5 mm CT gets flat patches and searches mostly within slices. The filtering
parameter is ``h = h_factor × σ`` with σ the noise level (estimated from the image when
not given). See :mod:`voxpipe_plugins.denoise.kernels` for the algorithm.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.common.threads import single_threaded_torch
from voxpipe_plugins.denoise import kernels
from voxpipe_plugins.denoise.base import Denoiser, mm_to_voxels, rounded

DEFAULT_PATCH_VOXELS = 2
"""Unset ``patch_radius_mm``: two voxels of the finest axis (5×5 or 5×5×5 patches)."""

DEFAULT_SEARCH_VOXELS = {2: 3, 3: 1}
"""Unset ``search_radius_mm``, in voxels of the finest axis, by the number of fine axes: 3 (7×7
window) for 2D images and thick-slice volumes, 1 (3×3×3) for volumes fine along every axis.

Measured on real anatomy (docs/benchmarks.md, denoise_real): windows beyond these lose PSNR
on 1 mm brain MR, CT and MR slices (more weakly similar patches enter the average than the
extra averaging removes noise), while piecewise-constant phantoms prefer larger ones; the
small 3D window is also what keeps NLM well under DIPY's time.
"""

DEFAULT_H_FACTOR = 0.8
"""h = 0.8 σ: best or within 0.1 dB of the best of 0.6-1.0 on every real image measured at the default sizes."""

MAX_SEARCH_VOXELS = 15
"""Search radius cap per axis: beyond it the cost (∝ window size) buys almost nothing."""

ONE_THREAD_VOXELS = 1 << 20
"""Images up to this size (all channels) run the whole stage on the calling thread, torch's intra-op
threads off: the input checks, the noise estimate and the kernel (which decides the same way by
its own work, :data:`kernels.SINGLE_THREAD_WORK`). On a shared 2-core machine each parallel
torch operation on a small image can wait milliseconds at its barrier for a descheduled worker
thread: the σ estimate of a 34k-voxel T1 took 28 ms with two threads and 2.3 ms with one."""


class NLMDenoise(Denoiser):
    op = "denoise.nlm"

    def __init__(
        self,
        key: str = "image",
        patch_radius_mm: float | None = None,
        search_radius_mm: float | None = None,
        h_factor: float = DEFAULT_H_FACTOR,
        sigma: float | None = None,
        noise: str = "gaussian",
        aggregation: str = "patch",
        backend: str = "auto",
        device: str = "cpu",
    ) -> None:
        super().__init__(key, device)
        self.patch_radius_mm, self.search_radius_mm = patch_radius_mm, search_radius_mm
        self.h_factor, self.sigma, self.noise = h_factor, sigma, noise
        self.aggregation, self.backend = aggregation, backend

    def __call__(self, case: dict) -> dict:
        image = case[self.key]
        small = self.device.type == "cpu" and math.prod(np.shape(image)) <= ONE_THREAD_VOXELS
        with single_threaded_torch() if small else contextlib.nullcontext():
            return super().__call__(case)

    def geometry(self, dims: int, spacing: tuple[float, ...]) -> tuple[float, float, tuple[int, ...], tuple[int, ...]]:
        """Patch and search radii in mm and in voxels per axis."""
        finest = min(spacing)
        # Axes whose voxels are under twice the finest (where one finest voxel still rounds to a
        # voxel): a thick-slice volume has two, and gets the 2D defaults, slice by slice in effect.
        fine_axes = max(2, sum(1 for s in spacing if s < 2 * finest))
        patch_mm = self.patch_radius_mm if self.patch_radius_mm is not None else DEFAULT_PATCH_VOXELS * finest
        search_mm = self.search_radius_mm if self.search_radius_mm is not None else DEFAULT_SEARCH_VOXELS[min(dims, fine_axes)] * finest
        patch = mm_to_voxels(patch_mm, spacing)
        search = tuple(min(MAX_SEARCH_VOXELS, s) for s in mm_to_voxels(search_mm, spacing))
        if not any(search):
            raise StageInputError(
                f"{self.op}: search_radius_mm {search_mm:g} is under half a voxel on every axis "
                f"(spacing {', '.join(f'{s:g}' for s in spacing)} mm); make it at least {0.5 * finest:g}"
            )
        return patch_mm, search_mm, patch, search

    def denoise_channel(self, x: torch.Tensor, spacing: tuple[float, ...]) -> tuple[torch.Tensor, dict]:
        patch_mm, search_mm, patch, search = self.geometry(x.ndim, spacing)
        sigma, how = self.noise_sigma(x, self.sigma, rician=self.noise == "rician")
        info = {
            "sigma": rounded(sigma),
            "sigma_source": how,
            "patch_radius_mm": rounded(patch_mm, 4),
            "search_radius_mm": rounded(search_mm, 4),
            "patch_radius_voxels": list(patch),
            "search_radius_voxels": list(search),
            "noise": self.noise,
        }
        if sigma <= 0:
            return x.clone(), {**info, "skipped": "no noise detected (sigma 0)"}
        h = self.h_factor * sigma
        backend = self.choose_backend(self.backend, cpu_choice="torch")
        if backend == "torch":
            out = kernels.nlm(x, sigma, h, patch, search, patchwise=self.aggregation == "patch", rician=self.noise == "rician")
            return out, {**info, "h": rounded(h), "aggregation": self.aggregation, "backend": "torch", "device": str(x.device)}
        if self.noise == "rician":
            raise StageInputError(f"{self.op}: noise `rician` needs backend torch (scikit-image has no Rician mode)")
        from skimage.restoration import denoise_nl_means

        # scikit-image takes one patch size and one distance for every axis.
        patch_size, distance = 2 * max(patch) + 1, max(search)
        array = x.detach().cpu().numpy().astype(np.float32)
        result = denoise_nl_means(array, patch_size=patch_size, patch_distance=distance, h=h, sigma=sigma, fast_mode=True)
        out = torch.from_numpy(np.ascontiguousarray(result, dtype=np.float32)).to(x.device)
        return out, {
            **info,
            "h": rounded(h),
            "aggregation": "pixel",
            "backend": "skimage",
            "device": "cpu",
            "skimage_patch_size": patch_size,
            "skimage_patch_distance": distance,
        }

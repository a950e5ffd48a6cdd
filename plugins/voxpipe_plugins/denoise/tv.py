"""Total-variation (ROF) denoising, Chambolle's algorithm: torch (CPU or CUDA) or scikit-image.

The weight trades fidelity for flatness; by default ``weight_factor × σ`` with σ the noise
level estimated from the image. The torch backend scales the finite differences by
``min_spacing / spacing`` per axis, so thick slices are smoothed less across than within;
scikit-image treats voxels as cubes (recorded when that matters).
"""

from __future__ import annotations

import numpy as np
import torch

from voxpipe_plugins.denoise import kernels
from voxpipe_plugins.denoise.base import Denoiser, rounded

CPU_CHOICE = "torch"
"""Measured on CPU (docs/denoising.md): the torch iteration is faster than scikit-image's."""


class TVDenoise(Denoiser):
    op = "denoise.tv"

    def __init__(
        self,
        key: str = "image",
        weight: float | None = None,
        weight_factor: float = 0.7,
        sigma: float | None = None,
        eps: float = 2.0e-4,
        max_iter: int = 200,
        backend: str = "auto",
        device: str = "cpu",
    ) -> None:
        super().__init__(key, device)
        self.weight, self.weight_factor, self.sigma = weight, weight_factor, sigma
        self.eps, self.max_iter, self.backend = eps, max_iter, backend

    def denoise_channel(self, x: torch.Tensor, spacing: tuple[float, ...]) -> tuple[torch.Tensor, dict]:
        info: dict = {}
        if self.weight is not None:
            weight = float(self.weight)
            info.update(weight=rounded(weight), weight_source="given")
        else:
            sigma, how = self.noise_sigma(x, self.sigma)
            weight = self.weight_factor * sigma
            info.update(sigma=rounded(sigma), sigma_source=how, weight=rounded(weight))
            if sigma <= 0:
                return x.clone(), {**info, "skipped": "no noise detected (sigma 0)"}
        finest = min(spacing)
        axis_scale = [finest / s for s in spacing]
        backend = self.choose_backend(self.backend, CPU_CHOICE)
        if backend == "torch":
            out, iterations = kernels.tv_chambolle(x, weight, eps=self.eps, max_num_iter=self.max_iter, axis_scale=axis_scale)
            return out, {
                **info,
                "iterations": iterations,
                "axis_scale": rounded(axis_scale, 4),
                "backend": "torch",
                "device": str(x.device),
            }
        from skimage.restoration import denoise_tv_chambolle

        array = x.detach().cpu().numpy().astype(np.float32)
        result = denoise_tv_chambolle(array, weight=weight, eps=self.eps, max_num_iter=self.max_iter)
        out = torch.from_numpy(np.ascontiguousarray(result, dtype=np.float32)).to(x.device)
        extra = {"spacing_ignored": True} if max(axis_scale) - min(axis_scale) > 1e-6 else {}
        return out, {**info, **extra, "backend": "skimage", "device": "cpu"}

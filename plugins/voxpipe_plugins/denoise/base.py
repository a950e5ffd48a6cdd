"""What every denoiser stage shares: input checks, channels, spacing, devices, recording.

A stage subclasses :class:`Denoiser` and implements :meth:`Denoiser.denoise_channel` for
one channel (a plain 2D or 3D float32 tensor on the compute device). The base class

- refuses what no denoiser can process, with one line (:class:`StageInputError`):
  NaN/Inf voxels, shapes other than channel-first 2D (C×X×Y) or 3D (C×X×Y×Z);
- converts integer images to float32 (the output is float32);
- denoises each channel on its own, with its own noise estimate;
- passes constant channels through unchanged (there is nothing to denoise, and several
  algorithms would divide by a zero noise level), and says so in the history;
- keeps the input's affine and metadata (a ``MetaTensor`` stays a ``MetaTensor``) and device;
- records what it did with :func:`voxpipe.stage.record`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from voxpipe.stage import record
from voxpipe_plugins.common.checks import StageInputError, float_image, is_constant, spatial_dims
from voxpipe_plugins.common.noise import estimate_sigma
from voxpipe_plugins.common.tensors import like, spacing_of

BACKENDS = ("auto", "torch", "skimage")


def mm_to_voxels(value_mm: float, spacing: Sequence[float], minimum: int = 0) -> tuple[int, ...]:
    """A physical half-width (mm) as whole voxels per axis: the nearest integer, halves rounded down.

    1 mm on 0.66 mm pixels is 2 voxels, on 0.8 mm 1, on 2 mm slices 0 (the window would
    otherwise reach 2 mm, twice what was asked).
    """
    return tuple(max(minimum, int(math.ceil(value_mm / s - 0.5 - 1e-9))) for s in spacing)


def rounded(values: Any, digits: int = 6) -> Any:
    """JSON-friendly, short numbers for the history."""
    if isinstance(values, (list, tuple)):
        return [rounded(v, digits) for v in values]
    if isinstance(values, float):
        return round(values, digits)
    return values


class Denoiser:
    """Base of the denoiser stages: a MONAI-style ``case -> case`` callable."""

    op = "denoise.base"
    allowed_dims: tuple[int, ...] = (2, 3)

    def __init__(self, key: str = "image", device: str = "cpu") -> None:
        self.key = key
        self.device = torch.device(device)

    # -- to implement -------------------------------------------------------------------
    def denoise_channel(self, x: torch.Tensor, spacing: tuple[float, ...]) -> tuple[torch.Tensor, dict]:
        """Denoise one channel; return the result (same shape) and what to record."""
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------------
    def noise_sigma(self, x: torch.Tensor, given: float | None, rician: bool = False) -> tuple[float, str]:
        """The noise σ to use: the configured one, or the MAD estimate (see common/noise.py)."""
        if given is not None:
            return float(given), "given"
        if rician:
            return estimate_sigma(x, rician=True), "estimated (MAD of Haar detail, bright blocks: Rician)"
        return estimate_sigma(x), "estimated (MAD of Haar detail)"

    def choose_backend(self, requested: str, cpu_choice: str, available: Sequence[str] = ("torch", "skimage")) -> str:
        """``auto``: torch on CUDA, ``cpu_choice`` (the faster one measured on CPU) otherwise."""
        if requested != "auto":
            if requested not in available:
                raise StageInputError(f"{self.op}: backend `{requested}` is not available here (choose from {', '.join(available)})")
            return requested
        if self.device.type == "cuda" and "torch" in available:
            return "torch"
        return cpu_choice if cpu_choice in available else available[0]

    # -- the stage ---------------------------------------------------------------------------
    def __call__(self, case: dict) -> dict:
        image = case[self.key]
        data = float_image(image, self.op)
        dims = spatial_dims(data, self.op, self.allowed_dims)
        spacing = spacing_of(image)
        plain = data.as_subclass(torch.Tensor) if isinstance(data, torch.Tensor) else data
        source_device = plain.device
        channels, details = [], []
        for c in range(plain.shape[0]):
            x = plain[c]
            if is_constant(x):
                channels.append(x.clone())
                details.append({"skipped": "constant image: nothing to denoise"})
                continue
            result, info = self.denoise_channel(x.to(self.device), spacing)
            if not bool(torch.isfinite(result).all()):
                raise StageInputError(f"{self.op}: produced non-finite values (channel {c}); check the parameters")
            channels.append(result.to(device=source_device, dtype=torch.float32))
            details.append(info)
        output = torch.stack(channels)
        out = dict(case)
        out[self.key] = self._wrap(image, output)
        summary = details[0] if len(details) == 1 else {"channels": details}
        record(out, self.op, key=self.key, spatial_dims=dims, spacing_mm=rounded(list(spacing), 4), **summary)
        return out

    @staticmethod
    def _wrap(reference: Any, output: torch.Tensor) -> Any:
        """Give the output the input's type: MetaTensor (affine + meta), tensor or array."""
        if isinstance(reference, MetaTensor):
            return like(reference, output)
        if isinstance(reference, torch.Tensor):
            return output
        return output.cpu().numpy().astype(np.float32)

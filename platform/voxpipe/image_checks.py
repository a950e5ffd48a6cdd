"""Input checks for image stages (core API for plugin authors): clear one-line refusals instead of crashes or NaN outputs."""

from __future__ import annotations

from typing import Any

import torch


class StageInputError(ValueError):
    """The image is not something this stage can process; the message says what and what to do."""


def float_image(image: Any, stage: str, allow_nonfinite: bool = False) -> torch.Tensor:
    """Return ``image`` as float32 (a MetaTensor stays a MetaTensor), refusing NaN/Inf voxels.

    Integer inputs (CT in HU as int16, 8-bit PNGs) are converted, since every filter here
    computes in floating point. NaN or infinite voxels would spread through any filter, so
    they are refused with a count unless ``allow_nonfinite``.
    """
    tensor = image if isinstance(image, torch.Tensor) else torch.as_tensor(image)
    if not tensor.is_floating_point():
        tensor = tensor.float()
    elif tensor.dtype != torch.float32:
        tensor = tensor.to(torch.float32)
    # One multithreaded sum, no temporary: NaN and Inf propagate into it. Only when it is not
    # finite (bad voxels, or a sum that overflowed) are the voxels counted one by one.
    if not allow_nonfinite and not bool(torch.isfinite(tensor.sum())):
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise StageInputError(f"{stage}: image has {bad} NaN or infinite voxels; fill or mask them before this stage")
    return tensor


def spatial_dims(image: torch.Tensor, stage: str, allowed: tuple[int, ...] = (2, 3)) -> int:
    """Number of spatial dimensions of a channel-first image, refusing what the stage cannot do."""
    dims = image.ndim - 1
    if dims not in allowed:
        wanted = " or ".join(f"{d}D" for d in allowed)
        raise StageInputError(f"{stage}: expected a channel-first {wanted} image, got shape {tuple(image.shape)}")
    return dims


def is_constant(image: torch.Tensor) -> bool:
    return bool(image.numel() == 0 or torch.all(image == image.reshape(-1)[0]))

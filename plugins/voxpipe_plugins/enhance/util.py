"""Helpers shared by the enhance stages: one-pass input checks, masks, moving between devices.

The checks reuse :mod:`voxpipe_plugins.common.checks` (``StageInputError`` and its messages)
but test for NaN/Inf with one ``aminmax`` pass, which also yields the range most stages need:
counting non-finite voxels (what ``float_image`` does) costs more than windowing a
300x512x512 volume, so the count is only taken when there is something to report.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from voxpipe_plugins.common.checks import StageInputError, float_image, spatial_dims
from voxpipe_plugins.common.tensors import like


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor without MetaTensor bookkeeping (a view, no copy), for fast reductions."""
    as_tensor = getattr(tensor, "as_tensor", None)
    return as_tensor() if callable(as_tensor) else tensor


def checked_float(image: Any, stage: str, dims: tuple[int, ...] = (2, 3)) -> tuple[torch.Tensor, float, float]:
    """``image`` as float32 (MetaTensor kept, no copy when it already is float32), with its min and max.

    Refuses, with one line: unsupported dimensionality (4D, 1D, missing channel axis), empty
    images and NaN/Inf voxels (with their count).
    """
    if not hasattr(image, "ndim"):
        raise StageInputError(f"{stage}: expected an image tensor or array, got {type(image).__name__}")
    spatial_dims(image, stage, dims)
    if 0 in tuple(image.shape):
        raise StageInputError(f"{stage}: image is empty, shape {tuple(image.shape)}")
    tensor = float_image(image, stage, allow_nonfinite=True)
    low, high = (float(v) for v in torch.aminmax(plain(tensor)))
    if not (math.isfinite(low) and math.isfinite(high)):
        float_image(tensor, stage)  # raises StageInputError with the count of bad voxels
    return tensor, low, high


def refuse_constant(low: float, high: float, stage: str, what: str) -> None:
    if low == high:
        raise StageInputError(f"{stage}: image is constant ({low:g}); {what} is undefined for a constant image")


def rewrap(reference: Any, result: Any) -> torch.Tensor:
    """``result`` as a tensor with the reference's affine and metadata when the reference is a MetaTensor.

    No copy: a NumPy result is wrapped with ``torch.from_numpy``.
    """
    data = torch.from_numpy(result) if isinstance(result, np.ndarray) else result
    if isinstance(reference, MetaTensor):
        return like(reference, plain(data))
    return data


def source_device(image: Any) -> torch.device:
    return image.device if isinstance(image, torch.Tensor) else torch.device("cpu")


def build_mask(
    case: dict, image: torch.Tensor, stage: str, mask_key: str | None, mask_labels: list[int] | None, mask_threshold: float | None
) -> torch.Tensor | None:
    """Boolean mask with the image's shape (C, spatial...) or None when no mask is configured.

    A label map with one channel applies to every channel of the image. The label test and
    the threshold test are combined with AND.
    """
    mask: torch.Tensor | None = None
    if mask_key is not None:
        if mask_key not in case or case[mask_key] is None:
            raise StageInputError(f"{stage}: case has no `{mask_key}` to use as a mask; run a stage that writes it first")
        source = plain(torch.as_tensor(case[mask_key])).to(image.device)
        if source.ndim == image.ndim - 1:
            source = source[None]
        if source.ndim != image.ndim or tuple(source.shape[1:]) != tuple(image.shape[1:]) or source.shape[0] not in (1, image.shape[0]):
            raise StageInputError(
                f"{stage}: mask `{mask_key}` has shape {tuple(source.shape)}, the image "
                f"{tuple(image.shape)}; resample the mask onto the image grid first"
            )
        if mask_labels is None:
            mask = source != 0
        else:
            mask = torch.isin(source, torch.as_tensor(mask_labels, device=source.device, dtype=source.dtype))
        mask = mask.expand(image.shape)
    if mask_threshold is not None:
        above = plain(image) > mask_threshold
        mask = above if mask is None else (mask & above)
    return mask


def count_per_channel(mask: torch.Tensor) -> list[int]:
    return [int(c) for c in mask.reshape(mask.shape[0], -1).sum(dim=1)]

"""MetaTensor helpers for stages: build, re-wrap and measure images and label maps (core API).

Part of the author's kit (:mod:`voxpipe.plugin` re-exports the public names). A case's
``image`` and ``label`` are MONAI ``MetaTensor``s, channel-first, with a 4x4 RAS affine;
these helpers keep that true when a stage goes through NumPy or builds a new array, without
MONAI's warning about an affine given twice (``MetaTensor(x, meta=image.meta)`` passes the
affine both in ``meta`` and as the default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor


def make_metatensor(array: np.ndarray, affine: np.ndarray, meta: dict[str, Any] | None = None) -> MetaTensor:
    """Channel-first array + 4x4 affine (RAS, as MONAI and nibabel use) -> MetaTensor."""
    affine_t = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    info = {"space": "RAS", "spatial_shape": np.asarray(array.shape[1:])}
    info.update(meta or {})
    info["original_affine"] = np.asarray(affine, dtype=np.float64)
    # No forced copy: transposed views (DICOM, NIfTI's Fortran order) keep their strides.
    return MetaTensor(torch.from_numpy(array), affine=affine_t, meta=info)


def affine_of(image: Any) -> np.ndarray:
    """The 4x4 affine of a MetaTensor (identity for plain tensors and arrays)."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return np.eye(4)
    return np.asarray(affine.detach().cpu().numpy() if hasattr(affine, "detach") else affine, dtype=np.float64)


def spacing_of(image: Any) -> tuple[float, ...]:
    """Voxel spacing per spatial axis (mm), from the affine's column norms."""
    spatial_dims = image.ndim - 1
    affine = affine_of(image)
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    spacing = [float(n) if n > 0 else 1.0 for n in norms[:spatial_dims]]
    return tuple(spacing + [1.0] * (spatial_dims - len(spacing)))


spacing = spacing_of


def like(reference: Any, array: torch.Tensor | np.ndarray, **meta: Any) -> MetaTensor:
    """A new MetaTensor with ``reference``'s affine and metadata and the given data."""
    data = torch.as_tensor(array)
    base = {k: v for k, v in (getattr(reference, "meta", {}) or {}).items() if k != "affine"}
    base.update(meta)
    return MetaTensor(data, affine=getattr(reference, "affine", None), meta=base)


def to_numpy(image: Any) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        return image.detach().cpu().numpy()
    return np.asarray(image)


def _channel_first(array: Any, reference: Any) -> torch.Tensor:
    """``array`` as a tensor, given a channel axis when it has only the reference's spatial axes."""
    data = torch.as_tensor(array.copy() if isinstance(array, np.ndarray) and not array.flags.writeable else array)
    if isinstance(data, MetaTensor):
        data = data.as_tensor()
    if tuple(data.shape) == tuple(reference.shape[1:]):
        data = data[None]
    return data


def as_image(array: Any, like: Any) -> MetaTensor:
    """Re-wrap ``array`` (NumPy or torch, channel-first or spatial only) with ``like``'s affine and meta.

    A spatial-only array (``like.shape[1:]``) gets the channel axis. The label table, if
    ``like`` had one, is dropped: the result is an image.
    """
    data = _channel_first(array, like)
    meta = {k: v for k, v in (getattr(like, "meta", {}) or {}).items() if k not in ("affine", "label_names")}
    return MetaTensor(data, affine=getattr(like, "affine", None), meta=meta)


def as_label(array: Any, like: Any, names: Mapping[int, str] | None = None) -> MetaTensor:
    """Re-wrap a label map with ``like``'s affine and meta, as an integer label with a label table.

    Bool stays bool; floats must hold whole numbers and become the smallest integer type that
    holds them. ``names`` (value -> name) becomes ``meta["label_names"]``; left out, ``like``'s
    table is kept if it has one (re-wrapping a label after an operation).
    """
    data = _channel_first(array, like)
    if data.is_floating_point():
        rounded = torch.round(data)
        if not torch.equal(rounded, data):
            raise ValueError("as_label: the array has non-integer values; threshold or round it first")
        data = rounded
        low, high = (int(v) for v in torch.aminmax(data)) if data.numel() else (0, 0)
        data = data.to(torch.uint8 if low >= 0 and high < 256 else torch.int16 if -32768 <= low and high < 32768 else torch.int32)
    meta = {k: v for k, v in (getattr(like, "meta", {}) or {}).items() if k not in ("affine", "label_names")}
    table = names if names is not None else label_names(like)
    if table:
        meta["label_names"] = {int(k): str(v) for k, v in sorted(table.items(), key=lambda item: int(item[0]))}
    return MetaTensor(data, affine=getattr(like, "affine", None), meta=meta)


def label_names(label: Any) -> dict[int, str]:
    """A label map's table (``meta["label_names"]``) as ``{int value: name}``; empty when it has none."""
    names = (getattr(label, "meta", {}) or {}).get("label_names") or {}
    return {int(k): str(v) for k, v in names.items()}

"""MetaTensor helpers: build them like MONAI's LoadImage does, read spacing from affines."""

from __future__ import annotations

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

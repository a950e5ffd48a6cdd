"""Grey-level discretisation (IBSI 2.7): the step that makes texture matrices finite and comparable.

Two IBSI methods:

* fixed bin number (FBN), ``Ng`` bins spread over the ROI's own range:
  ``X_d = floor(Ng (X - X_min) / (X_max - X_min)) + 1``, with ``X = X_max`` mapped to ``Ng``.
  Comparable *within* an image; used for MR and other arbitrary-unit images.
* fixed bin size (FBS), bins of width ``w`` starting at ``X_low`` (the ROI minimum or a
  fixed lower bound such as -1000 HU): ``X_d = floor((X - X_low) / w) + 1``.
  Comparable *across* images with calibrated units (CT).

Levels start at 1, as in IBSI; 0 is never a valid level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Discretised:
    """Grey levels (1..levels) of the ROI voxels and how they were made."""

    values: np.ndarray  # int32 levels, same shape as the input values
    levels: int  # number of grey levels Ng of the texture matrices
    method: str  # "bin_count" | "bin_width"
    lower: float  # X_min (FBN) or X_low (FBS)
    width: float  # bin width in image units (FBN: (X_max - X_min) / Ng)


def fixed_bin_count(values: np.ndarray, bins: int) -> Discretised:
    """IBSI fixed bin number: ``bins`` equal bins over [min, max] of ``values``."""
    low, high = float(values.min()), float(values.max())
    if high == low:  # a constant ROI has one grey level
        return Discretised(np.ones(values.shape, np.int32), 1, "bin_count", low, 0.0)
    levels = np.floor(bins * (values - low) / (high - low)).astype(np.int64) + 1
    levels = np.minimum(levels, bins)  # X_max falls on the upper edge: it belongs to the last bin
    return Discretised(levels.astype(np.int32), bins, "bin_count", low, (high - low) / bins)


def fixed_bin_width(values: np.ndarray, width: float, lower: float | None = None) -> Discretised:
    """IBSI fixed bin size: bins of ``width`` from ``lower`` (default: the ROI minimum).

    Values below ``lower`` would get levels < 1; they are refused by the caller's
    choice of bound (IBSI re-segments them away), here they are clipped to level 1.
    """
    low = float(values.min()) if lower is None else float(lower)
    levels = np.floor((values - low) / width).astype(np.int64) + 1
    levels = np.maximum(levels, 1)
    return Discretised(levels.astype(np.int32), int(levels.max()), "bin_width", low, float(width))

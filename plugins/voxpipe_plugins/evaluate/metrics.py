"""Overlap and surface-distance metrics for one pair of label maps, with MONAI, in mm.

Per label value: Dice and IoU (``monai.metrics.compute_dice`` / ``compute_iou``), the 95th
percentile symmetric Hausdorff distance (``compute_hausdorff_distance(percentile=95,
spacing=...)``) and the average symmetric surface distance
(``compute_average_surface_distance(symmetric=True, spacing=...)``), both in mm from the
reference's voxel spacing.

Empty structures (documented in docs/segmentation.md):

========================  ======  ======  =============
reference / prediction    Dice    IoU     HD95, ASSD
========================  ======  ======  =============
both empty                1       1       NaN (no surface: undefined; left out of means)
one of them empty         0       0       inf (no surface to measure to)
========================  ======  ======  =============
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("dice", "iou", "hd95_mm", "assd_mm")


@dataclass
class LabelScore:
    label: int
    dice: float
    iou: float
    hd95_mm: float
    assd_mm: float
    ref_voxels: int
    pred_voxels: int

    def value(self, metric: str) -> float:
        return float(getattr(self, metric))


def score_label(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], label: int = 1) -> LabelScore:
    """Metrics of one binary structure (``pred``/``ref`` bool arrays on one grid, spacing in mm)."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance, compute_iou

    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_pred == 0 and n_ref == 0:
        return LabelScore(label, 1.0, 1.0, math.nan, math.nan, 0, 0)
    if n_pred == 0 or n_ref == 0:
        return LabelScore(label, 0.0, 0.0, math.inf, math.inf, n_ref, n_pred)
    # One-hot, batch-first (B=1, C=1): MONAI's metric layout.
    p = torch.from_numpy(pred)[None, None].to(torch.float32)
    r = torch.from_numpy(ref)[None, None].to(torch.float32)
    sp = [float(s) for s in spacing]
    dice = float(compute_dice(p, r, include_background=True)[0, 0])
    iou = float(compute_iou(p, r, include_background=True)[0, 0])
    with warnings.catch_warnings():  # MONAI's own internal call of a deprecated argument (get_mask_edges)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\.")
        hd95 = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=sp)[0, 0])
        assd = float(compute_average_surface_distance(p, r, include_background=True, symmetric=True, spacing=sp)[0, 0])
    return LabelScore(label, dice, iou, hd95, assd, n_ref, n_pred)


def score_case(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], labels: Sequence[int] | None = None) -> list[LabelScore]:
    """Every label value (non-zero, in either map unless ``labels`` is given) of one case."""
    if labels is None:
        labels = sorted(({int(v) for v in np.unique(ref)} | {int(v) for v in np.unique(pred)}) - {0})
    return [score_label(pred == value, ref == value, spacing, value) for value in labels]


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and (population) std over the values that are not NaN; inf propagates. Returns (mean, std, n)."""
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return math.nan, math.nan, 0
    if any(math.isinf(v) for v in kept):
        return math.inf, math.nan, len(kept)
    array = np.asarray(kept, dtype=np.float64)
    return float(array.mean()), float(array.std()), len(kept)

"""Grey-level co-occurrence matrix (GLCM) texture features, IBSI chapter 3.6.

For each direction (13 in 3D, 4 in 2D) at Chebyshev distance ``d``, the matrix counts
pairs of ROI voxels (both inside the mask) with levels (i, j); it is made symmetric by
adding its transpose, as IBSI does. Aggregation (IBSI 3.6 "aggregating features"):

* ``averaged``: features are computed on each direction's matrix and averaged (IBSI
  "3D: averaged", pyradiomics' default);
* ``merged``: the matrices are summed first, then features are computed once
  (IBSI "3D: merged").

Counting is vectorised: per direction, one slice pair and one ``bincount`` over
``i * Ng + j``. The feature formulas are written out in docs/matching.md.
"""

from __future__ import annotations

import itertools

import numpy as np

NAMES = (
    "joint_maximum",
    "joint_average",
    "joint_variance",
    "joint_entropy",
    "difference_average",
    "difference_variance",
    "difference_entropy",
    "sum_average",
    "sum_variance",
    "sum_entropy",
    "angular_second_moment",
    "contrast",
    "dissimilarity",
    "inverse_difference",
    "inverse_difference_normalised",
    "inverse_difference_moment",
    "inverse_difference_moment_normalised",
    "inverse_variance",
    "correlation",
    "autocorrelation",
    "cluster_tendency",
    "cluster_shade",
    "cluster_prominence",
    "information_correlation_1",
    "information_correlation_2",
)


def directions(dims: int) -> list[tuple[int, ...]]:
    """Unit offsets, one per undirected direction: the first non-zero component is positive."""
    offsets = []
    for offset in itertools.product((-1, 0, 1), repeat=dims):
        nonzero = [o for o in offset if o != 0]
        if nonzero and nonzero[0] > 0:
            offsets.append(offset)
    return offsets


def _pair_slices(offset: tuple[int, ...], shape: tuple[int, ...]):
    src, dst = [], []
    for o, n in zip(offset, shape):
        if o >= 0:
            src.append(slice(0, n - o))
            dst.append(slice(o, n))
        else:
            src.append(slice(-o, n))
            dst.append(slice(0, n + o))
    return tuple(src), tuple(dst)


def glcm_matrices(levels: np.ndarray, mask: np.ndarray, ng: int, distance: int = 1) -> np.ndarray:
    """Symmetric co-occurrence counts, shape (directions, Ng, Ng), of ``levels`` (1..Ng) inside ``mask``."""
    grey = np.where(mask, levels, 0).astype(np.intp)  # 0 marks voxels outside the region
    out = np.zeros((len(directions(levels.ndim)), ng, ng), dtype=np.float64)
    side = ng + 1
    for d, unit in enumerate(directions(levels.ndim)):
        offset = tuple(distance * u for u in unit)
        if any(abs(o) >= n for o, n in zip(offset, grey.shape)):
            continue
        src, dst = _pair_slices(offset, grey.shape)
        # pair code a * (Ng + 1) + b over the whole overlap; pairs touching level 0 land in row/column 0, dropped
        pair = grey[src] * side  # a fresh contiguous array: ravel() below does not copy
        pair += grey[dst]
        counts = np.bincount(pair.ravel(), minlength=side * side).reshape(side, side)[1:, 1:]
        out[d] = counts + counts.T
    return out


def glcm_features(matrix: np.ndarray) -> dict[str, float]:
    """IBSI GLCM features of one co-occurrence matrix (counts or probabilities, Ng x Ng).

    An empty matrix (no neighbouring pairs in the ROI) gives zeros. Correlation of a
    matrix with zero marginal variance is defined as 1 (a single grey level is perfectly
    correlated with itself), so vectors stay finite.
    """
    total = matrix.sum()
    if total <= 0:
        return dict.fromkeys(NAMES, 0.0)
    p = matrix / total
    ng = p.shape[0]
    i, j = np.meshgrid(np.arange(1, ng + 1, dtype=np.float64), np.arange(1, ng + 1, dtype=np.float64), indexing="ij")
    px = p.sum(axis=1)
    levels = np.arange(1, ng + 1, dtype=np.float64)
    mu = float((levels * px).sum())  # marginals are equal for a symmetric matrix
    var_x = float(((levels - mu) ** 2 * px).sum())
    k_diff = np.abs(i - j).astype(np.int64)
    k_sum = (i + j).astype(np.int64)
    p_diff = np.bincount(k_diff.ravel(), weights=p.ravel(), minlength=ng)  # k = 0..Ng-1
    p_sum = np.bincount(k_sum.ravel(), weights=p.ravel(), minlength=2 * ng + 1)[2:]  # k = 2..2Ng
    k_d = np.arange(ng, dtype=np.float64)
    k_s = np.arange(2, 2 * ng + 1, dtype=np.float64)
    diff_avg = float((k_d * p_diff).sum())
    sum_avg = float((k_s * p_sum).sum())
    nz = p > 0

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log2(q)).sum())

    d = i - j
    joint_avg = float((i * p).sum())
    # information correlation (Haralick 1973, IBSI): entropies in bits, exp() in the second as IBSI writes it
    hxy = float(-(p[nz] * np.log2(p[nz])).sum())
    hx = entropy(px)
    outer = np.outer(px, px)
    hxy1 = float(-(p[nz] * np.log2(outer[nz])).sum())
    onz = outer > 0
    hxy2 = float(-(outer[onz] * np.log2(outer[onz])).sum())
    return {
        "joint_maximum": float(p.max()),
        "joint_average": joint_avg,
        "joint_variance": float(((i - joint_avg) ** 2 * p).sum()),
        "joint_entropy": hxy,
        "difference_average": diff_avg,
        "difference_variance": float(((k_d - diff_avg) ** 2 * p_diff).sum()),
        "difference_entropy": entropy(p_diff),
        "sum_average": sum_avg,
        "sum_variance": float(((k_s - sum_avg) ** 2 * p_sum).sum()),
        "sum_entropy": entropy(p_sum),
        "angular_second_moment": float((p * p).sum()),
        "contrast": float((d * d * p).sum()),
        "dissimilarity": float((np.abs(d) * p).sum()),
        "inverse_difference": float((p / (1.0 + np.abs(d))).sum()),
        "inverse_difference_normalised": float((p / (1.0 + np.abs(d) / ng)).sum()),
        "inverse_difference_moment": float((p / (1.0 + d * d)).sum()),
        "inverse_difference_moment_normalised": float((p / (1.0 + d * d / ng**2)).sum()),
        "inverse_variance": float((p_diff[1:] / k_d[1:] ** 2).sum()),
        "correlation": float((((i - mu) * (j - mu)) * p).sum() / var_x) if var_x > 0 else 1.0,
        "autocorrelation": float((i * j * p).sum()),
        "cluster_tendency": float(((i + j - 2 * mu) ** 2 * p).sum()),
        "cluster_shade": float(((i + j - 2 * mu) ** 3 * p).sum()),
        "cluster_prominence": float(((i + j - 2 * mu) ** 4 * p).sum()),
        "information_correlation_1": (hxy - hxy1) / hx if hx > 0 else 0.0,
        "information_correlation_2": float(np.sqrt(max(0.0, 1.0 - np.exp(-2.0 * (hxy2 - hxy))))),
    }


def texture(levels: np.ndarray, mask: np.ndarray, ng: int, distance: int = 1, aggregation: str = "averaged") -> dict[str, float]:
    """GLCM features of the ROI, aggregated over directions as ``aggregation`` says."""
    matrices = glcm_matrices(levels, mask, ng, distance)
    if aggregation == "merged":
        return glcm_features(matrices.sum(axis=0))
    used = [m for m in matrices if m.sum() > 0]
    if not used:
        return dict.fromkeys(NAMES, 0.0)
    per_direction = [glcm_features(m) for m in used]
    return {name: float(np.mean([f[name] for f in per_direction])) for name in NAMES}

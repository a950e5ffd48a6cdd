"""Tissue classes from intensities inside a mask: 1D k-means and a Gaussian mixture.

Both cluster the 1D intensities of the voxels in the mask (a brain mask for CSF/GM/WM on
T1, the body for fat/soft tissue on CT). The mixture is scikit-learn's
:class:`~sklearn.mixture.GaussianMixture`, started from the k-means solution; k-means
stays a few lines of NumPy, because in one dimension a sorted search beats scikit-learn's
general ``KMeans`` (docs/benchmarks.md, "Tissue classes"). Models are fitted on at most
``max_samples`` voxels drawn with a fixed seed (deterministic) and then applied to every
voxel in the mask. Classes are numbered 1..k by increasing mean intensity; 0 is outside
the mask.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from voxpipe.stage import record
from voxpipe_plugins.segment.base import (
    add_warning,
    default_names,
    intensity,
    mask_from_case,
    to_label,
)

CHUNK = 1 << 20
"""Voxels assigned at a time: the mixture holds k float64 columns per voxel."""

TOLERANCE = 1e-5
"""EM stops when the mean log-likelihood per voxel (free of units) gains less than this.
Tighter walks on where classes overlap and the likelihood is flat (docs/benchmarks.md)."""


def kmeans_1d(x: np.ndarray, k: int, iterations: int = 100) -> np.ndarray:
    """Lloyd's k-means on 1D data from the optimal split of its histogram; returns sorted centres.

    Lloyd's from evenly spaced quantiles falls into a local optimum when one class holds most
    voxels (white matter inside a tightly cut brain mask: two centres split it, CSF and grey
    matter share one). The start is the exact minimum of the same criterion on a 256-bin
    histogram (dynamic programming, as multi-Otsu), so only the bins' width is left to refine.
    """
    centres = histogram_centres(x, k)
    for _ in range(iterations):
        edges = (centres[1:] + centres[:-1]) / 2
        assign = np.searchsorted(edges, x)
        new = np.array([x[assign == c].mean() if np.any(assign == c) else centres[c] for c in range(k)])
        if np.allclose(new, centres, rtol=0, atol=1e-9 * max(1.0, float(np.abs(new).max()))):
            centres = new
            break
        centres = np.sort(new)
    return np.sort(centres)


def histogram_centres(x: np.ndarray, k: int, bins: int = 256) -> np.ndarray:
    """Centres of the k contiguous runs of histogram bins with the least within-run sum of squares (exact DP)."""
    counts, edges = np.histogram(x, bins=bins)
    keep = counts > 0
    mids = ((edges[1:] + edges[:-1]) / 2)[keep]
    counts = counts[keep].astype(np.float64)
    if mids.size <= k:  # as many distinct values as classes or fewer: each bin is a class
        return np.quantile(x, (np.arange(k) + 0.5) / k).astype(np.float64) if mids.size < k else mids.astype(np.float64)
    n = np.concatenate([[0.0], np.cumsum(counts)])
    s1 = np.concatenate([[0.0], np.cumsum(counts * mids)])
    s2 = np.concatenate([[0.0], np.cumsum(counts * mids**2)])

    def cost(first: np.ndarray, last: int) -> np.ndarray:  # bins first..last-1, for every first
        weight = n[last] - n[first]
        total = s1[last] - s1[first]
        return s2[last] - s2[first] - np.divide(total**2, weight, out=np.zeros_like(total), where=weight > 0)

    size = mids.size
    best = np.full((k + 1, size + 1), np.inf)
    start = np.zeros((k + 1, size + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for c in range(1, k + 1):
        for last in range(c, size + 1):
            first = np.arange(c - 1, last)
            total = best[c - 1, first] + cost(first, last)
            pick = int(np.argmin(total))
            best[c, last], start[c, last] = total[pick], first[pick]
    centres, last = [], size
    for c in range(k, 0, -1):
        first = int(start[c, last])
        centres.append((s1[last] - s1[first]) / (n[last] - n[first]))
        last = first
    return np.sort(np.array(centres, dtype=np.float64))


def gmm_1d(x: np.ndarray, k: int, seed: int = 0):
    """A 1D Gaussian mixture fitted by scikit-learn from the k-means solution.

    Returns the fitted model and its components' order by increasing mean. Starting from
    k-means (the weights, means and variances of its clusters) makes the fit deterministic
    and independent of scikit-learn's random initialisation; variances are floored
    relative to the data's spread, so the result does not depend on its units.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    means = kmeans_1d(x, k)
    assign = np.searchsorted((means[1:] + means[:-1]) / 2, x)
    spread = float(x.var()) or 1.0
    floor = 1e-6 * spread
    counts = np.bincount(assign, minlength=k)
    variances = np.array([max(float(x[assign == c].var()) if counts[c] > 1 else spread / k**2, floor) for c in range(k)])
    weights = np.maximum(counts / len(x), 1e-6)
    model = GaussianMixture(
        k,
        covariance_type="spherical",
        tol=TOLERANCE,
        reg_covar=floor,
        max_iter=200,
        init_params="random_from_data",
        random_state=seed,  # unused: every parameter is given
        weights_init=weights / weights.sum(),
        means_init=means[:, None],
        precisions_init=1.0 / variances,
    )
    with warnings.catch_warnings():  # not converged in max_iter: the fit so far is kept, as EM always did
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x[:, None])
    return model, np.argsort(model.means_[:, 0])


class _TissueClasses:
    STAGE = "segment.tissue"

    def __init__(
        self,
        key: str = "image",
        output_key: str = "label",
        classes: int = 3,
        mask_key: str | None = None,
        mask_labels: Sequence[int] | None = None,
        mask_threshold: float | None = None,
        names: Sequence[str] | None = None,
        max_samples: int = 200_000,
        seed: int = 0,
    ) -> None:
        if names is not None and len(names) != classes:
            raise ValueError(f"`names` has {len(names)} entries for {classes} classes")
        self.key, self.output_key, self.classes = key, output_key, classes
        self.mask_key, self.mask_labels, self.mask_threshold = mask_key, mask_labels, mask_threshold
        self.names, self.max_samples, self.seed = names, max_samples, seed

    def __call__(self, case: dict) -> dict:
        image = case[self.key]
        values = intensity(image, self.STAGE)
        mask = mask_from_case(case, self.mask_key, values.shape, self.STAGE, self.mask_labels)
        if self.mask_threshold is not None:
            above = values > self.mask_threshold
            mask = above if mask is None else (mask & above)
        if mask is None:
            mask = np.ones_like(values, dtype=bool)
        out = dict(case)
        label = np.zeros_like(values, dtype=np.int32)
        inside = values[mask].astype(np.float64)
        details: dict = {"classes": self.classes, "mask_voxels": int(inside.size)}
        if inside.size < self.classes or np.ptp(inside) == 0:
            add_warning(
                out,
                f"{self.STAGE}: the mask holds {inside.size} voxel(s) of {len(np.unique(inside))} value(s), "
                f"too few for {self.classes} classes; label map `{self.output_key}` is empty",
            )
        else:
            rng = np.random.default_rng(self.seed)
            sample = inside if inside.size <= self.max_samples else rng.choice(inside, self.max_samples, replace=False)
            assign, fitted = self.fit_assign(sample, inside)
            label[mask] = assign + 1
            details.update(fitted)
            details["voxels"] = [int((assign == c).sum()) for c in range(self.classes)]
        out[self.output_key] = to_label(image, label, default_names(self.classes, 1, self.names))
        record(out, self.STAGE, **details)
        return out

    def fit_assign(self, sample: np.ndarray, values: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError


class KMeansSegmenter(_TissueClasses):
    STAGE = "segment.kmeans"

    def fit_assign(self, sample, values):
        centres = kmeans_1d(sample, self.classes)
        assign = np.searchsorted((centres[1:] + centres[:-1]) / 2, values)
        return assign, {"centres": [round(float(c), 4) for c in centres]}


class GMMSegmenter(_TissueClasses):
    STAGE = "segment.gmm"

    def fit_assign(self, sample, values):
        model, order = gmm_1d(sample, self.classes, self.seed)
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)  # component -> class by increasing mean
        assign = np.empty(values.shape, dtype=np.int64)
        for start in range(0, values.size, CHUNK):
            assign[start : start + CHUNK] = rank[model.predict(values[start : start + CHUNK, None])]
        return assign, {
            "weights": [round(float(w), 4) for w in model.weights_[order]],
            "means": [round(float(m), 4) for m in model.means_[order, 0]],
            "stds": [round(float(np.sqrt(v)), 4) for v in model.covariances_[order]],
        }

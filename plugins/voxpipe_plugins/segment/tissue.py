"""Tissue classes from intensities inside a mask: k-means and a Gaussian mixture (NumPy only).

Both cluster the 1D intensities of the voxels in the mask (a brain mask for CSF/GM/WM on
T1, the body for fat/soft tissue on CT). They are written here with NumPy rather than
scikit-learn: in one dimension k-means is a few lines, and the mixture's EM is a few
more, with no extra dependency. Models are fitted on at most ``max_samples`` voxels drawn
with a fixed seed (deterministic) and then applied to every voxel in the mask. Classes
are numbered 1..k by increasing mean intensity; 0 is outside the mask.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from voxpipe.stage import record
from voxpipe_plugins.segment.base import add_warning, default_names, intensity, mask_from_case, to_label


def kmeans_1d(x: np.ndarray, k: int, iterations: int = 100) -> np.ndarray:
    """Lloyd's k-means on 1D data, initialised at evenly spaced quantiles; returns sorted centres."""
    centres = np.quantile(x, (np.arange(k) + 0.5) / k).astype(np.float64)
    for _ in range(iterations):
        edges = (centres[1:] + centres[:-1]) / 2
        assign = np.searchsorted(edges, x)
        new = np.array([x[assign == c].mean() if np.any(assign == c) else centres[c] for c in range(k)])
        if np.allclose(new, centres, rtol=0, atol=1e-9 * max(1.0, float(np.abs(new).max()))):
            centres = new
            break
        centres = np.sort(new)
    return np.sort(centres)


def gmm_1d(x: np.ndarray, k: int, iterations: int = 200, tol: float = 1e-6):
    """EM for a 1D Gaussian mixture, started from k-means; returns (weights, means, variances) sorted by mean."""
    means = kmeans_1d(x, k)
    edges = (means[1:] + means[:-1]) / 2
    assign = np.searchsorted(edges, x)
    spread = float(x.var()) or 1.0
    floor = 1e-6 * spread
    variances = np.array([max(float(x[assign == c].var()) if np.sum(assign == c) > 1 else spread / k**2, floor) for c in range(k)])
    weights = np.array([max(np.mean(assign == c), 1e-6) for c in range(k)])
    previous = -np.inf
    for _ in range(iterations):
        log_p = _log_joint(x, weights, means, variances)
        top = log_p.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(log_p - top).sum(axis=1))
        resp = np.exp(log_p - log_norm[:, None])
        nk = resp.sum(axis=0) + 1e-12
        weights = nk / len(x)
        means = (resp * x[:, None]).sum(axis=0) / nk
        variances = np.maximum((resp * (x[:, None] - means) ** 2).sum(axis=0) / nk, floor)
        likelihood = float(log_norm.mean())
        if likelihood - previous < tol * abs(likelihood):
            break
        previous = likelihood
    order = np.argsort(means)
    return weights[order], means[order], variances[order]


def _log_joint(x: np.ndarray, weights, means, variances) -> np.ndarray:
    return (np.log(weights) - 0.5 * np.log(2 * np.pi * variances)
            - 0.5 * (x[:, None] - means) ** 2 / variances)


class _TissueClasses:
    STAGE = "segment.tissue"

    def __init__(self, key: str = "image", output_key: str = "label", classes: int = 3, mask_key: str | None = None,
                 mask_labels: Sequence[int] | None = None, mask_threshold: float | None = None,
                 names: Sequence[str] | None = None, max_samples: int = 200_000, seed: int = 0) -> None:
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
            add_warning(out, f"{self.STAGE}: the mask holds {inside.size} voxel(s) of {len(np.unique(inside))} value(s), "
                             f"too few for {self.classes} classes; label map `{self.output_key}` is empty")
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
        weights, means, variances = gmm_1d(sample, self.classes)
        assign = np.empty(values.shape, dtype=np.int64)
        for start in range(0, values.size, 1 << 20):  # chunks: k columns of float64 per voxel
            chunk = values[start:start + (1 << 20)]
            assign[start:start + chunk.size] = np.argmax(_log_joint(chunk, weights, means, variances), axis=1)
        return assign, {"weights": [round(float(w), 4) for w in weights], "means": [round(float(m), 4) for m in means],
                        "stds": [round(float(np.sqrt(v)), 4) for v in variances]}

"""First-order (intensity) statistics of the ROI voxels, IBSI chapters 3.3 (statistics) and 3.4 (histogram).

Statistics use the raw intensities X_1..X_N inside the mask; moments are the biased
(population) ones IBSI prescribes. The histogram features (entropy, uniformity) use the
discretised grey levels, so they depend on the bin settings. Every formula is in
docs/matching.md.
"""

from __future__ import annotations

import numpy as np

NAMES = (
    "mean",
    "variance",
    "skewness",
    "kurtosis",
    "median",
    "minimum",
    "p10",
    "p90",
    "maximum",
    "iqr",
    "range",
    "mad",
    "robust_mad",
    "medad",
    "cov",
    "qcod",
    "energy",
    "rms",
    "entropy",
    "uniformity",
)


def first_order(values: np.ndarray, levels: np.ndarray) -> dict[str, float]:
    """IBSI first-order features of ``values`` (raw, 1-D) and ``levels`` (their grey levels, 1..Ng).

    Undefined ratios (skewness and kurtosis of a constant ROI, CoV of a zero mean) are 0,
    so a feature vector is always finite.
    """
    x = values.astype(np.float64, copy=False)
    n = x.size
    mean = x.mean()
    dev = x - mean
    m2 = float(np.mean(dev**2))
    m3 = float(np.mean(dev**3))
    m4 = float(np.mean(dev**4))
    p10, p25, median, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    robust = x[(x >= p10) & (x <= p90)]
    counts = np.bincount(levels.ravel())[1:]
    p = counts[counts > 0] / n
    energy = float(np.sum(x * x))
    return {
        "mean": float(mean),
        "variance": m2,
        "skewness": m3 / m2**1.5 if m2 > 0 else 0.0,
        "kurtosis": m4 / m2**2 - 3.0 if m2 > 0 else 0.0,  # excess kurtosis, as IBSI
        "median": float(median),
        "minimum": float(x.min()),
        "p10": float(p10),
        "p90": float(p90),
        "maximum": float(x.max()),
        "iqr": float(p75 - p25),
        "range": float(x.max() - x.min()),
        "mad": float(np.mean(np.abs(dev))),
        "robust_mad": float(np.mean(np.abs(robust - robust.mean()))),
        "medad": float(np.mean(np.abs(x - median))),
        "cov": float(np.sqrt(m2) / mean) if mean != 0 else 0.0,
        "qcod": float((p75 - p25) / (p75 + p25)) if (p75 + p25) != 0 else 0.0,
        "energy": energy,
        "rms": float(np.sqrt(energy / n)),
        "entropy": float(-np.sum(p * np.log2(p))),
        "uniformity": float(np.sum(p * p)),
    }

"""Tissue classes in 1D: the hand-written EM (before) against scikit-learn's GaussianMixture
(now), and the NumPy 1D k-means against scikit-learn's KMeans.

For each method: the time to fit on the stage's sample (at most 200,000 voxels, as
``segment.gmm``/``segment.kmeans`` do) and to assign every voxel in the mask, median of
``--repeats`` interleaved runs, and the Dice of each class against the phantom's truth.
On the real T1 (nibabel's ``anatomical.nii``, no truth) it reports how many voxels the
two mixtures label alike. Writes its section of docs/benchmarks.md with ``--write``.

    .venv/bin/python benchmarks/gmm_fit.py [--repeats 5] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from benchlib import machine, write_section

BEGIN, END = "<!-- gmm_fit:begin -->", "<!-- gmm_fit:end -->"
MAX_SAMPLES, K = 200_000, 3


def hand_gmm(x: np.ndarray, k: int, iterations: int = 200, tol: float = 1e-6):
    """The EM that segment/tissue.py had before (verbatim but for names): the 'before' column."""
    from voxpipe_plugins.segment.tissue import kmeans_1d

    means = kmeans_1d(x, k)
    assign = np.searchsorted((means[1:] + means[:-1]) / 2, x)
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


def _log_joint(x, weights, means, variances):
    return np.log(weights) - 0.5 * np.log(2 * np.pi * variances) - 0.5 * (x[:, None] - means) ** 2 / variances


def run_hand_gmm(sample, values):
    weights, means, variances = hand_gmm(sample, K)
    out = np.empty(values.shape, dtype=np.int64)
    for start in range(0, values.size, 1 << 20):
        chunk = values[start : start + (1 << 20)]
        out[start : start + chunk.size] = np.argmax(_log_joint(chunk, weights, means, variances), axis=1)
    return out


def run_stage(cls) -> Callable:
    stage = cls(classes=K)
    return lambda sample, values: stage.fit_assign(sample, values)[0]


def run_sklearn_kmeans(sample, values):
    from sklearn.cluster import KMeans

    init = np.quantile(sample, (np.arange(K) + 0.5) / K)[:, None]  # the same start as kmeans_1d
    model = KMeans(K, init=init, n_init=1, random_state=0).fit(sample[:, None])
    rank = np.argsort(np.argsort(model.cluster_centers_[:, 0]))
    return rank[model.predict(values[:, None])]


def methods() -> dict[str, Callable]:
    from voxpipe_plugins.segment.tissue import GMMSegmenter, KMeansSegmenter

    return {
        "GMM, hand-written EM (before)": run_hand_gmm,
        "GMM, scikit-learn GaussianMixture (now)": run_stage(GMMSegmenter),
        "k-means, NumPy 1D (kept)": run_stage(KMeansSegmenter),
        "k-means, scikit-learn KMeans": run_sklearn_kmeans,
    }


def sample_of(values: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    return values if values.size <= MAX_SAMPLES else rng.choice(values, MAX_SAMPLES, replace=False)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    import nibabel as nib

    from voxpipe_plugins.segment.phantoms import brain_phantom

    start = time.perf_counter()
    import sklearn.mixture  # noqa: F401 - timed: a worker's first GMM case pays it (sklearn is deferred in the fork server)

    sklearn_import = time.perf_counter() - start

    cases = []
    for shape, spacing, noise in [((64, 76, 60), 2.0, 0.04), ((64, 76, 60), 2.0, 0.10), ((160, 192, 160), 1.0, 0.06)]:
        phantom = brain_phantom(shape=shape, spacing=(spacing,) * 3, noise=noise)
        mask = phantom.truth["brain"]
        cases.append(
            (
                f"brain phantom {'x'.join(map(str, shape))}, noise {noise}",
                phantom.image[mask].astype(np.float64),
                phantom.truth["classes"][mask],
            )
        )
    t1 = np.asanyarray(nib.load(Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii").dataobj).astype(np.float64)
    low, high = np.percentile(t1, (0.5, 99.5))  # as configs/brain-tissue.yaml scales it, and its head threshold
    scaled = np.clip((t1 - low) / (high - low), 0, 1)
    cases.append(("real T1 (nibabel anatomical.nii), head > 0.2", scaled[scaled > 0.2], None))

    rows, agreement = [], {}
    for title, values, truth in cases:
        sample = sample_of(values)
        times: dict[str, list[float]] = {}
        results = {}
        for _ in range(args.repeats):
            for name, method in methods().items():  # interleaved, so load on the machine hits all alike
                t = time.perf_counter()
                results[name] = method(sample, values)
                times.setdefault(name, []).append(time.perf_counter() - t)
        for name in methods():
            scores = "" if truth is None else " / ".join(f"{dice(results[name] == c, truth == c + 1):.4f}" for c in range(K))
            rows.append(f"| {title} | {values.size:,} | {name} | {statistics.median(times[name]) * 1000:.0f} | {scores or '-'} |")
        before, now = results["GMM, hand-written EM (before)"], results["GMM, scikit-learn GaussianMixture (now)"]
        agreement[title] = float((before == now).mean())
    text = "\n".join(
        [
            BEGIN,
            (
                f"Machine: {machine()}; median of {args.repeats} interleaved runs; fit on at most {MAX_SAMPLES:,} sampled voxels, "
                "then every voxel in the mask assigned. Dice per class (CSF / GM / WM) against the phantom's truth."
            ),
            "",
            "| case | voxels in mask | method | ms | Dice CSF / GM / WM |",
            "|---|---:|---|---:|---|",
            *rows,
            "",
            "Voxels the two mixtures label alike: " + "; ".join(f"{t}: {a:.2%}" for t, a in agreement.items()) + ".",
            f"Importing `sklearn.mixture` (once per worker, on its first GMM case): {sklearn_import * 1000:.0f} ms.",
            END,
        ]
    )
    print(text)
    if args.write:
        write_section(BEGIN, END, text)


if __name__ == "__main__":
    main()

"""The model behind ``segment.tissue``: a Gaussian mixture, partial-volume classes and a hidden-MRF prior.

Pure NumPy/scipy on the voxels of a mask, so it stays fast on a 1 mm brain (about 2 million
voxels): every step is a vectorised pass over the masked voxels, and the only spatial
operation, the neighbourhood average of the class memberships, is one
``scipy.ndimage.correlate`` per class on the mask's bounding box.

- The start is scikit-learn's :class:`~sklearn.mixture.GaussianMixture` on a seeded sample,
  itself started from 1D k-means (deterministic). A *shared* variance is the default: with
  one variance per class the broad grey-matter class swallows the darker half of white
  matter (issue 20).
- A partial-volume class between two neighbouring pure classes a < b models a voxel that
  holds a fraction ``f`` of a and ``1 - f`` of b with ``f`` uniform on [0, 1] and the pure
  classes' noise (Santago & Gage 1993): its density is a uniform on [mu_a, mu_b] convolved
  with a Gaussian, ``(Phi((x - mu_a) / s) - Phi((x - mu_b) / s)) / (mu_b - mu_a)``. Its
  posterior is folded back into a and b by the voxel's fraction ``f = (mu_b - x) / (mu_b - mu_a)``.
- The spatial prior is a Potts-like hidden MRF solved by mean field: class c's log prior
  gains ``beta * sum_j w_j m_j . v_c``, where ``m_j`` are the neighbours' folded memberships,
  ``v_c`` the composition of class c (one-hot for pure classes, half/half for a mixture)
  and ``w_j`` weights proportional to 1/distance in mm over the 6, 18 or 26 neighbours,
  normalised to sum to one over the neighbours inside the mask: ``beta`` means the same at
  any spacing and near the mask's edge, and a 3 mm slice gap counts a third of a 1 mm one.
- The M-step re-estimates the pure classes' means and (shared or per-class) variances from
  their posteriors, each voxel weighted by the square of the share of its neighbours that
  belong to the same class (its "purity"), and every class's weight. Boundary voxels are
  part-volume whatever the mixture says; left in, the grey/white boundary pulls the
  white-matter mean down by a fifth of the GM/WM contrast on MNI152 and moves the
  boundary into grey matter (docs/brain-tissue.md has the numbers). A fixed number of
  rounds, so it is deterministic, stopping early once the labels settle.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

SETTLED = 1e-4
"""EM stops early once fewer than this fraction of the voxels change label in a round."""

PURE_SHARE_MIN = 0.05
"""A class whose purity-weighted mass is below this share of its plain mass is estimated from its plain posteriors."""


@dataclass
class Mixture:
    """Pure classes (means, variances, darkest first) plus partial-volume pairs (a, a + 1)."""

    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray  # pure classes first, then one per pair
    pairs: list[tuple[int, int]] = field(default_factory=list)
    shared: bool = True  # one variance for all classes

    @property
    def k(self) -> int:
        return int(self.means.size)

    def composition(self) -> np.ndarray:
        """(classes + pairs) x classes: what each class is made of (a mixture is half/half)."""
        rows = [np.eye(self.k)[c] for c in range(self.k)]
        for a, b in self.pairs:
            row = np.zeros(self.k)
            row[[a, b]] = 0.5
            rows.append(row)
        return np.array(rows)


def initial_mixture(sample: np.ndarray, k: int, shared_variance: bool, partial_volume: bool, seed: int) -> Mixture:
    """Fit a k-class 1D Gaussian mixture with scikit-learn, started from k-means (deterministic)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from voxpipe_plugins.segment.tissue import kmeans_1d

    centres = kmeans_1d(sample, k)
    assign = np.searchsorted((centres[1:] + centres[:-1]) / 2, sample)
    spread = float(sample.var()) or 1.0
    floor = 1e-6 * spread
    counts = np.bincount(assign, minlength=k)
    variances = np.array([max(float(sample[assign == c].var()) if counts[c] > 1 else spread / k**2, floor) for c in range(k)])
    weights = np.maximum(counts / sample.size, 1e-6)
    pooled = max(float(np.sum(variances * counts) / max(counts.sum(), 1)), floor)

    def fit(shared: bool):
        model = GaussianMixture(
            k,
            covariance_type="tied" if shared else "spherical",
            tol=1e-5,
            reg_covar=floor,
            max_iter=200,
            random_state=seed,  # unused: every parameter is given
            weights_init=weights / weights.sum(),
            means_init=centres[:, None],
            precisions_init=np.array([[1.0 / pooled]]) if shared else 1.0 / variances,
        )
        with warnings.catch_warnings():  # not converged in max_iter: the fit so far is kept
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(sample[:, None])
        order = np.argsort(model.means_[:, 0])
        means = model.means_[order, 0].astype(np.float64)
        fitted = np.full(k, float(np.ravel(model.covariances_)[0])) if shared else np.asarray(model.covariances_, np.float64)[order]
        return model, order, means, fitted

    model, order, means, fitted = fit(shared_variance)
    if shared_variance and np.min(np.diff(means)) < np.sqrt(fitted[0]):
        # Two classes closer than one noise sd: the data is not k equal-width peaks (a whole head, a
        # wide background); one variance per class keeps k distinct classes.
        shared_variance = False
        model, order, means, fitted = fit(False)
    pure = model.weights_[order].astype(np.float64)
    pairs = [(c, c + 1) for c in range(k - 1)] if partial_volume else []
    if pairs:  # mixtures start with a fifth of the weight, shared out; EM moves it where the data wants
        pure = 0.8 * pure
        weights = np.concatenate([pure, np.full(len(pairs), 0.2 / len(pairs))])
    else:
        weights = pure
    return Mixture(means, np.maximum(fitted, floor), weights, pairs, shared_variance)


def neighbour_kernel(spacing: tuple[float, ...], neighbours: int) -> np.ndarray:
    """3^d kernel of 1/distance (mm) weights over the 6/18/26 (3D) or 4/8 (2D) neighbours, centre 0."""
    ndim = len(spacing)
    offsets = np.stack(np.meshgrid(*[np.array([-1, 0, 1])] * ndim, indexing="ij"), axis=-1)
    steps = np.abs(offsets).sum(axis=-1)
    reach = {6: 1, 18: 2, 26: 3, 4: 1, 8: 2}[neighbours]
    distance = np.sqrt(((offsets * np.asarray(spacing, dtype=np.float64)) ** 2).sum(axis=-1))
    kernel = np.where((steps >= 1) & (steps <= reach), 1.0 / np.where(distance > 0, distance, 1.0), 0.0)
    return (kernel / kernel.sum()).astype(np.float32)


def log_likelihoods(x: np.ndarray, mix: Mixture) -> np.ndarray:
    """(classes + pairs) x voxels log densities: Gaussians for pure classes, Santago-Gage for mixtures."""
    from scipy.special import ndtr

    rows = np.empty((mix.k + len(mix.pairs), x.size), dtype=x.dtype)
    for c, (mean, variance) in enumerate(zip(mix.means.tolist(), mix.variances.tolist())):
        np.subtract(x, mean, out=rows[c])
        np.square(rows[c], out=rows[c])
        rows[c] *= -0.5 / variance
        rows[c] -= 0.5 * np.log(2 * np.pi * variance)
    for p, (a, b) in enumerate(mix.pairs):
        sigma = float(np.sqrt(0.5 * (mix.variances[a] + mix.variances[b])))
        low, high = float(mix.means[a]), float(mix.means[b])
        width = max(high - low, 1e-12)
        density = ndtr((x - low) / sigma) - ndtr((x - high) / sigma)
        np.log(np.maximum(density, 1e-30, out=density), out=rows[mix.k + p])
        rows[mix.k + p] -= np.log(width)
    return rows


def fold(q: np.ndarray, x: np.ndarray, mix: Mixture) -> np.ndarray:
    """Memberships of the pure classes: each mixture's posterior split by the voxel's fraction."""
    m = q[: mix.k].copy()
    for p, (a, b) in enumerate(mix.pairs):
        high = float(mix.means[b])
        width = max(high - float(mix.means[a]), 1e-12)
        share = np.clip((high - x) / width, 0.0, 1.0)
        m[a] += q[mix.k + p] * share
        m[b] += q[mix.k + p] * (1.0 - share)
    return m


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits -= logits.max(axis=0, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0, keepdims=True)
    return logits


def _m_step(q: np.ndarray, x: np.ndarray, mix: Mixture, purity: np.ndarray | None = None) -> Mixture:
    """Means and variances from the pure classes' posteriors, each voxel weighted by ``purity`` (see the module)."""
    pure = q[: mix.k]
    if purity is not None:
        weighted = pure * purity
        # A class with (almost) no voxel inside its own region (a thin or scattered one) keeps its plain posteriors.
        thin = weighted.sum(axis=1) < PURE_SHARE_MIN * np.maximum(pure.sum(axis=1), 1e-12)
        pure = np.where(thin[:, None], pure, weighted)
    mass = np.maximum(pure.sum(axis=1), 1e-12)
    means = (pure @ x).astype(np.float64) / mass
    squares = np.array([pure[c] @ np.square(x - means[c]) for c in range(mix.k)], dtype=np.float64)
    floor = 1e-6 * max(float(x.var()), 1e-12)
    variances = np.full(mix.k, squares.sum() / mass.sum()) if mix.shared else squares / mass
    order = np.argsort(means, kind="stable")
    if not np.array_equal(order, np.arange(mix.k)):  # keep "darkest first" if two classes crossed
        means, variances = means[order], variances[order]
    weights = np.maximum(q.mean(axis=1), 1e-8)
    return Mixture(means, np.maximum(variances, floor), weights / weights.sum(), mix.pairs, mix.shared)


class NeighbourAverage:
    """Each voxel's kernel-weighted average of the class memberships over its neighbours inside the mask."""

    def __init__(self, grid_mask: np.ndarray, kernel: np.ndarray) -> None:
        from scipy import ndimage

        self.kernel, self.index = kernel, np.flatnonzero(grid_mask)
        support = ndimage.correlate(grid_mask.astype(np.float32), kernel, mode="constant").ravel()[self.index]
        self.support = np.where(support > 0, 1.0 / np.maximum(support, 1e-12), 0.0).astype(np.float32)
        self.plane = np.zeros(grid_mask.shape, dtype=np.float32)

    def __call__(self, memberships: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        near = np.empty(memberships.shape, dtype=np.float32)
        flat = self.plane.reshape(-1)
        for c, row in enumerate(memberships):
            flat[self.index] = row
            near[c] = ndimage.correlate(self.plane, self.kernel, mode="constant").reshape(-1)[self.index]
        near *= self.support
        return near


@dataclass
class Result:
    labels: np.ndarray  # voxels, 0..k-1
    memberships: np.ndarray  # k x voxels, sums to 1
    mixture: Mixture
    rounds: int
    bias: np.ndarray | None = None  # the multiplicative field at the voxels, when estimated


def segment(
    x: np.ndarray,
    grid_mask: np.ndarray,
    mix: Mixture,
    spacing: tuple[float, ...],
    beta: float,
    neighbours: int,
    iterations: int,
    bias_fwhm_mm: float | None = None,
    offset: float = 0.0,
) -> Result:
    """EM with a mean-field hidden-MRF prior on the voxels ``x`` = ``image[grid_mask]`` (C order).

    With ``bias_fwhm_mm``, a smooth multiplicative bias field is estimated each round
    (:mod:`tissue_bias`) on ``x + offset`` (proportional to the raw intensities) and divided out.
    """
    observed = x
    bias = None
    if bias_fwhm_mm:
        from voxpipe_plugins.segment.tissue_bias import BiasField

        bias = BiasField(grid_mask, spacing, bias_fwhm_mm)
        floor = np.float32(1e-3)
        log_observed = np.log(np.maximum(observed + np.float32(offset), floor))
        field = np.zeros_like(x)

    composition = mix.composition().astype(np.float32)
    neighbourhood = NeighbourAverage(grid_mask, neighbour_kernel(spacing, neighbours))
    q = _softmax(log_likelihoods(x, mix) + np.log(mix.weights).astype(x.dtype)[:, None])
    m = fold(q, x, mix)
    labels = m.argmax(axis=0)
    rounds = 0
    for _ in range(iterations):
        rounds += 1
        if bias is not None:
            predicted = (mix.means.astype(np.float32) @ m).astype(np.float32)
            residual = log_observed - np.log(np.maximum(predicted + np.float32(offset), floor))
            field = bias.estimate(residual, m.max(axis=0))
            x = (np.exp(log_observed - field) - np.float32(offset)).astype(np.float32)
        near = neighbourhood(m)
        mix = _m_step(q, x, mix, np.square(near))
        logits = log_likelihoods(x, mix)
        logits += np.log(mix.weights).astype(x.dtype)[:, None]
        if beta > 0:
            near *= np.float32(beta)
            logits += composition @ near
        q = _softmax(logits)
        m = fold(q, x, mix)
        new = m.argmax(axis=0)
        changed = int((new != labels).sum())
        labels = new
        if changed <= SETTLED * x.size:
            break
    m /= m.sum(axis=0, keepdims=True)
    return Result(labels, m, mix, rounds, None if bias is None else np.exp(field))

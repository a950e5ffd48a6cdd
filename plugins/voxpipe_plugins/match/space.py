"""The spaces matching happens in: standardised raw features, or an Isomap embedding of them.

Features of different units (mm³ next to a unitless entropy) are z-scored with the
gallery's mean and standard deviation (constant features are centred, not scaled), so
that no single feature dominates a Euclidean distance. Isomap (Tenenbaum et al. 2000,
scikit-learn) replaces straight-line distances by geodesic ones along a k-nearest-
neighbour graph, and embeds them in a few dimensions; new queries are placed with
``Isomap.transform``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxpipe.errors import UsageError


@dataclass
class Space:
    """A fitted feature space: standardisation, then optionally Isomap."""

    mean: np.ndarray
    scale: np.ndarray
    isomap: object | None = None

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(x) - self.mean) / self.scale
        return self.isomap.transform(z) if self.isomap is not None else z


def fit_space(
    gallery: np.ndarray, kind: str = "raw", standardize: bool = True, neighbors: int = 10, components: int = 2
) -> tuple[Space, np.ndarray]:
    """Fit the space on ``gallery`` (cases x features); return it and the gallery's coordinates."""
    n = gallery.shape[0]
    if standardize:
        mean, scale = gallery.mean(axis=0), gallery.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
    else:
        mean, scale = np.zeros(gallery.shape[1]), np.ones(gallery.shape[1])
    space = Space(mean, scale)
    z = (gallery - mean) / scale
    if kind == "raw":
        return space, z
    if kind != "isomap":
        raise UsageError(f"unknown space {kind!r}; use raw or isomap")
    if n < 3:
        raise UsageError(f"Isomap needs at least 3 cases, the store has {n}; use --space raw")
    from sklearn.manifold import Isomap

    k = max(2, min(neighbors, n - 1))
    components = max(1, min(components, n - 1))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # disconnected neighbour graphs are handled by sklearn and reported below
        space.isomap = Isomap(n_neighbors=k, n_components=components).fit(z)
        coords = space.isomap.embedding_
    return space, np.asarray(coords, dtype=np.float64)


def distances(queries: np.ndarray, gallery: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Query x gallery distance matrix (euclidean or cosine)."""
    from scipy.spatial.distance import cdist

    if metric not in ("euclidean", "cosine"):
        raise UsageError(f"unknown metric {metric!r}; use euclidean or cosine")
    return cdist(np.atleast_2d(queries), gallery, metric=metric)


def top_k(dist_row: np.ndarray, k: int, exclude: int | None = None) -> list[tuple[int, float]]:
    """Indices and distances of the ``k`` nearest gallery items (ties broken by index, stable)."""
    order = np.argsort(dist_row, kind="stable")
    if exclude is not None:
        order = order[order != exclude]
    return [(int(i), float(dist_row[i])) for i in order[:k]]

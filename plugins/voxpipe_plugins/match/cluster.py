"""k-means and agglomerative clustering of feature vectors, with silhouette (and ARI when labels exist).

The silhouette coefficient (Rousseeuw 1987) needs no labels: the mean over cases of
(b - a) / max(a, b), a = mean distance to its own cluster, b = to the nearest other one;
1 is perfect, 0 overlapping. With ``n_clusters`` unset the number of clusters is the one
with the best silhouette in 2..min(10, n - 1). When labels exist the adjusted Rand index
(Hubert & Arabie 1985; 0 = chance, 1 = identical partitions) compares clusters and labels.
"""

from __future__ import annotations

import numpy as np

from voxpipe.errors import UsageError


def cluster_once(x: np.ndarray, method: str, n_clusters: int, linkage: str = "ward", seed: int = 0) -> np.ndarray:
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(x)
    if method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering

        return AgglomerativeClustering(n_clusters=n_clusters, linkage=linkage).fit_predict(x)
    raise UsageError(f"unknown clustering method {method!r}; use kmeans or agglomerative")


def silhouette(x: np.ndarray, assignment: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    if len(set(assignment.tolist())) < 2 or len(set(assignment.tolist())) >= len(x):
        return 0.0
    return float(silhouette_score(x, assignment))


def cluster(
    x: np.ndarray,
    method: str = "kmeans",
    n_clusters: int | None = None,
    linkage: str = "ward",
    labels: list[str | None] | None = None,
    seed: int = 0,
) -> dict:
    """Cluster the rows of ``x``; the result holds the assignment, silhouette, and ARI/NMI if labels."""
    n = x.shape[0]
    if n < 3:
        raise UsageError(f"clustering needs at least 3 cases, the store has {n}")
    if n_clusters is not None and not 2 <= n_clusters < n:
        raise UsageError(f"--clusters must be between 2 and {n - 1} for {n} cases")
    tried = {}
    if n_clusters is None:
        for k in range(2, min(10, n - 1) + 1):
            assignment = cluster_once(x, method, k, linkage, seed)
            tried[k] = silhouette(x, assignment)
        n_clusters = max(tried, key=lambda k: (tried[k], -k))
    assignment = cluster_once(x, method, n_clusters, linkage, seed)
    result = {
        "method": method,
        "clusters": int(n_clusters),
        "silhouette": silhouette(x, assignment),
        "assignment": assignment.astype(int).tolist(),
        "sizes": np.bincount(assignment).astype(int).tolist(),
    }
    if method == "agglomerative":
        result["linkage"] = linkage
    if tried:
        result["silhouette_by_k"] = {str(k): round(v, 4) for k, v in tried.items()}
    if labels is not None:
        known = [i for i, label in enumerate(labels) if label is not None]
        if len(known) >= 2:
            from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

            truth = [labels[i] for i in known]
            pred = assignment[known]
            result["adjusted_rand"] = float(adjusted_rand_score(truth, pred))
            result["nmi"] = float(normalized_mutual_info_score(truth, pred))
            result["labelled"] = len(known)
    return result

"""Retrieval quality with known labels: precision@k and mean average precision (leave-one-out).

Every labelled case is a query against all the other labelled cases; a gallery case is
relevant when its label equals the query's. For one query with ranked gallery
``g_1..g_{n-1}`` and ``R`` relevant items:

* precision@k = |relevant among g_1..g_k| / k;
* average precision AP = (1/R) * sum over relevant ranks r of precision@r;
* mAP = mean AP over the queries that have at least one relevant item.

Chance level, reported next to the scores, is the expected precision of a random
ranking: the mean over queries of R / (n - 1). A query whose label no other case has
(a class with one sample) cannot retrieve anything relevant: it is left out of every
average and counted as ``singletons``, so one rare class does not drag the scores down.
"""

from __future__ import annotations

import numpy as np


def leave_one_out(dist: np.ndarray, labels: list[str], ks: tuple[int, ...] = (1, 5)) -> dict:
    """Scores from a square distance matrix between labelled cases and their labels."""
    labels_arr = np.asarray(labels)
    n = len(labels_arr)
    precision = {k: [] for k in ks}
    aps, chance, per_case = [], [], []
    for q in range(n):
        order = np.argsort(dist[q], kind="stable")
        order = order[order != q]
        relevant = labels_arr[order] == labels_arr[q]
        r = int(relevant.sum())
        row = {"query": q}
        if r == 0:
            per_case.append(row)
            continue
        chance.append(r / max(n - 1, 1))
        for k in ks:
            kk = min(k, len(order))
            p = float(relevant[:kk].mean()) if kk else 0.0
            precision[k].append(p)
            row[f"precision@{k}"] = p
        hits = np.cumsum(relevant)
        ranks = np.nonzero(relevant)[0]
        ap = float(np.mean(hits[ranks] / (ranks + 1)))
        aps.append(ap)
        row["ap"] = ap
        per_case.append(row)
    return {
        "queries": len(aps),
        "singletons": n - len(aps),
        **{f"precision@{k}": float(np.mean(v)) if v else 0.0 for k, v in precision.items()},
        "map": float(np.mean(aps)) if aps else 0.0,
        "chance": float(np.mean(chance)) if chance else 0.0,
        "per_case": per_case,
    }

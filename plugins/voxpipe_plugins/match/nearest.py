"""The ``match.nearest`` stage: the k most similar cases of a feature store, per case in a run.

The store is loaded and the space fitted once, when the pipeline is built. Each case's
own vector (``case["features"]``, the same sets as the store) is placed in that space; the
result goes to ``case["outputs"][name]``: the neighbours with distances and labels and,
when the store has labels, the majority label among them (a k-NN classification; ties go
to the label of the nearest).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from voxpipe.errors import UsageError
from voxpipe.stage import record
from voxpipe_plugins.match import space as spaces
from voxpipe_plugins.match import store as stores


class NearestMatcher:
    def __init__(
        self,
        store: str,
        k: int = 5,
        sets=None,
        space: str = "raw",
        metric: str = "euclidean",
        standardize: bool = True,
        neighbors: int = 10,
        components: int = 8,
        name: str = "match",
        context=None,
    ) -> None:
        path = context.resolve_path(store) if context is not None else store
        self.store = stores.load(path)
        self.sets = self.store.choose(tuple(sets or ()))
        self.k, self.metric, self.name, self.kind = k, metric, name, space
        self.space, self.coords = spaces.fit_space(self.store.matrix(self.sets), space, standardize, neighbors, components)

    def query_vector(self, case: dict) -> np.ndarray:
        features = case.get("features") or {}
        parts = []
        for s in self.sets:
            if s not in features:
                raise UsageError(f"match.nearest: the case has no feature set `{s}`; run the extractor that made the store first")
            v = np.asarray(features[s], dtype=np.float64).reshape(-1)
            want = self.store.matrices[s].shape[1]
            if v.size != want:
                raise UsageError(f"match.nearest: feature set `{s}` has {v.size} values, the store's has {want}; use the store's config")
            parts.append(v)
        return np.concatenate(parts)

    def __call__(self, case: dict) -> dict:
        q = self.space.transform(self.query_vector(case))
        dist = spaces.distances(q, self.coords, self.metric)[0]
        own = self.store.case_ids.index(case["case_id"]) if case.get("case_id") in self.store.case_ids else None
        hits = spaces.top_k(dist, self.k, exclude=own)
        neighbours = [
            {"case_id": self.store.case_ids[i], "distance": round(d, 6), "label": self.store.labels.get(self.store.case_ids[i])}
            for i, d in hits
        ]
        result = {"neighbors": neighbours}
        votes = [n["label"] for n in neighbours if n["label"] is not None]
        if votes:
            counts = Counter(votes)
            top = max(counts.values())
            result["label"] = next(v for v in votes if counts[v] == top)
            result["votes"] = dict(counts)
        case.setdefault("outputs", {})[self.name] = result
        record(case, "match.nearest", k=self.k, space=self.kind, metric=self.metric, sets=self.sets, gallery=len(self.store.case_ids))
        return case

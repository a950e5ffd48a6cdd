"""The ``write.features`` stage: each case's feature vectors as ``features.npz`` + ``features.json``.

``features.npz`` holds one float32 array per feature set (the set's name is the array's
name); ``features.json`` says what they are: the names of the elements, the stage that made
each set with its recorded details, the library versions, and the head predictions
(``case["outputs"]``) when there are any. The config hash is not known to a stage; the
feature store takes it from the case's ``case.json`` when it collects the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxpipe.atomic import atomic_path, write_json
from voxpipe.stage import record
from voxpipe_plugins.match.provenance import stage_record, versions

FEATURES_NPZ = "features.npz"
FEATURES_JSON = "features.json"
FORMAT = "voxpipe-features"


def vector(value, name: str) -> np.ndarray:
    """A feature value as a 1-D float32 array, refusing what the store could not hold."""
    array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, dtype=np.float32).reshape(-1)
    if array.size == 0:
        raise ValueError(f"write.features: feature set `{name}` is empty")
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise ValueError(f"write.features: feature set `{name}` has {bad} NaN or infinite values; fix the extractor's input")
    return array


class FeatureWriter:
    """Writes ``case["features"]`` (all sets, or ``sets``) into the case folder, atomically."""

    def __init__(self, sets: list[str] | None = None) -> None:
        self.sets = list(sets) if sets else None

    def __call__(self, case: dict) -> dict:
        features = case.get("features") or {}
        if not features:
            raise ValueError("write.features: the case has no features; put an extractor (e.g. radiomics.extract) before this stage")
        chosen = self.sets or sorted(features)
        missing = [s for s in chosen if s not in features]
        if missing:
            raise ValueError(f"write.features: no feature set {missing} in the case (it has {sorted(features)}); check `sets`")
        names = case.get("feature_names") or {}
        arrays = {s: vector(features[s], s) for s in chosen}
        info = {"format": FORMAT, "version": 1, "case_id": case.get("case_id"), "sets": {}, "versions": versions()}
        for s, array in arrays.items():
            element_names = list(names.get(s) or [])
            if element_names and len(element_names) != array.size:
                raise ValueError(f"write.features: feature set `{s}` has {array.size} values but {len(element_names)} names")
            info["sets"][s] = {"length": int(array.size), "names": element_names or None, "stage": stage_record(case, s)}
        if case.get("outputs"):
            info["outputs"] = case["outputs"]
        out_dir = Path(case["output_dir"])
        with atomic_path(out_dir / FEATURES_NPZ) as tmp:
            with open(tmp, "wb") as handle:  # a file object: numpy would append .npz to a name
                np.savez(handle, **arrays)
        write_json(out_dir / FEATURES_JSON, info)
        record(case, "write.features", files=[FEATURES_NPZ, FEATURES_JSON], sets={s: int(a.size) for s, a in arrays.items()})
        return case

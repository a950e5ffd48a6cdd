"""The feature store: case id -> feature vectors, collected from ``voxpipe run`` outputs.

On disk a store is a folder with two files, published together (a store appears whole
or not at all):

* ``vectors.npz``: ``case_ids`` (strings) and one float32 matrix (cases x length) per set;
* ``store.json``: the sets (length, element names), each case's provenance (run folder
  name, config hash, the stage record of each set) and the labels, if given.

Collecting refuses what cannot be compared: a feature set whose length differs from the
other cases' (a different config or extractor), a case that lacks a set the others have,
a case id seen twice, non-finite values. Each refusal is one line naming the case.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxpipe.atomic import publish_dir, write_json
from voxpipe.errors import UsageError
from voxpipe.source_map import case_for_input
from voxpipe_plugins.match.provenance import versions
from voxpipe_plugins.match.writer import FEATURES_JSON, FEATURES_NPZ

VECTORS = "vectors.npz"
STORE_JSON = "store.json"
FORMAT = "voxpipe-feature-store"


@dataclass
class FeatureStore:
    """Feature vectors of many cases, row ``i`` of every matrix belonging to ``case_ids[i]``."""

    case_ids: list[str]
    matrices: dict[str, np.ndarray]
    names: dict[str, list[str] | None]
    provenance: list[dict] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def sets(self) -> list[str]:
        return sorted(self.matrices)

    def index(self, case_id: str) -> int:
        try:
            return self.case_ids.index(case_id)
        except ValueError:
            raise UsageError(
                f"case {case_id} is not in the store ({len(self.case_ids)} cases); list them with `voxpipe features export STORE -`"
            ) from None

    def choose(self, sets: tuple[str, ...] | list[str] = ()) -> list[str]:
        """The sets to use: those named (checked), else the only one."""
        if not sets:
            if len(self.matrices) == 1:
                return self.sets
            raise UsageError(f"the store has feature sets {', '.join(self.sets)}; choose with --feature-set NAME (repeat to concatenate)")
        unknown = [s for s in sets if s not in self.matrices]
        if unknown:
            raise UsageError(f"no feature set {unknown[0]!r} in the store (it has {', '.join(self.sets)}); check --feature-set")
        return list(sets)

    def matrix(self, sets=()) -> np.ndarray:
        """Cases x features for the chosen sets (concatenated in the order given)."""
        return np.hstack([self.matrices[s] for s in self.choose(sets)]).astype(np.float64)

    def column_names(self, sets=()) -> list[str]:
        columns = []
        for s in self.choose(sets):
            names = self.names.get(s) or [f"{i}" for i in range(self.matrices[s].shape[1])]
            columns += [f"{s}.{n}" for n in names]
        return columns

    def label_list(self) -> list[str | None]:
        return [self.labels.get(c) for c in self.case_ids]

    def save(self, target: Path, force: bool = False) -> Path:
        """Write the store folder atomically (built beside ``target``, then moved into place)."""
        target = Path(target)
        if target.exists() and not (target / STORE_JSON).exists():
            raise UsageError(f"{target} exists and is not a feature store; choose another -o")
        if target.exists() and not force:
            raise UsageError(f"feature store {target} exists; add --force to replace it")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            with open(staging / VECTORS, "wb") as handle:
                np.savez(
                    handle,
                    case_ids=np.asarray(self.case_ids, dtype=str),
                    **{f"set_{s}": m.astype(np.float32) for s, m in self.matrices.items()},
                )
            write_json(
                staging / STORE_JSON,
                {
                    "format": FORMAT,
                    "version": 1,
                    "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                    "versions": versions(),
                    "sets": {s: {"length": int(m.shape[1]), "names": self.names.get(s)} for s, m in self.matrices.items()},
                    "cases": self.provenance,
                    "labels": self.labels,
                },
            )
            publish_dir(staging, target, target.parent)
        finally:
            if staging.exists():
                import shutil

                shutil.rmtree(staging, ignore_errors=True)
        return target


def load(path: Path) -> FeatureStore:
    """Read a store folder written by :meth:`FeatureStore.save`."""
    path = Path(path)
    try:
        info = json.loads((path / STORE_JSON).read_text(encoding="utf-8"))
        data = np.load(path / VECTORS, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"{path} is not a feature store (no {STORE_JSON} / {VECTORS}); make one with `voxpipe features collect`") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"feature store {path} cannot be read ({type(exc).__name__}); collect it again") from None
    if info.get("format") != FORMAT:
        raise UsageError(f"{path / STORE_JSON} is not a voxpipe feature store")
    matrices = {key[4:]: data[key] for key in data.files if key.startswith("set_")}
    names = {s: (info["sets"].get(s) or {}).get("names") for s in matrices}
    return FeatureStore([str(c) for c in data["case_ids"]], matrices, names, info.get("cases", []), info.get("labels", {}))


def case_folders(path: Path) -> list[Path]:
    """Case folders under a run output (``case-*/features.npz``), or ``path`` itself if it is one."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist; give `voxpipe run` output folders")
    if (path / FEATURES_NPZ).is_file():
        return [path]
    found = sorted(p.parent for p in path.glob(f"*/{FEATURES_NPZ}"))
    if not found:
        raise UsageError(f"no {FEATURES_NPZ} under {path}; the pipeline needs a `write.features` stage")
    return found


def read_case(folder: Path) -> tuple[str, dict[str, np.ndarray], dict]:
    """One case folder -> (case id, set -> vector, features.json contents)."""
    try:
        info = json.loads((folder / FEATURES_JSON).read_text(encoding="utf-8"))
        with np.load(folder / FEATURES_NPZ, allow_pickle=False) as data:
            vectors = {k: np.asarray(data[k], dtype=np.float32).reshape(-1) for k in data.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"case folder {folder.name}: features cannot be read ({type(exc).__name__}); rerun the case") from None
    return str(info.get("case_id") or folder.name), vectors, info


def _config_hash(folder: Path) -> str | None:
    try:
        return json.loads((folder / "case.json").read_text(encoding="utf-8")).get("config_hash")
    except (OSError, ValueError):
        return None


def collect(paths: list[Path], labels: dict[str, str] | None = None) -> FeatureStore:
    """Gather every case under ``paths`` into one store, refusing vectors that cannot be compared."""
    rows: dict[str, dict[str, np.ndarray]] = {}
    names: dict[str, list[str] | None] = {}
    first: dict[str, str] = {}  # set -> case that fixed its length
    provenance: list[dict] = []
    origin: dict[str, str] = {}
    for path in paths:
        for folder in case_folders(path):
            cid, vectors, info = read_case(folder)
            if cid in rows:
                raise UsageError(f"case {cid} appears twice (in {origin[cid]} and {Path(path).name}); collect each case once")
            for s, v in vectors.items():
                if not np.all(np.isfinite(v)):
                    raise UsageError(f"case {cid}: feature set `{s}` has NaN or infinite values; rerun or drop the case")
                if s in first and v.size != rows[first[s]][s].size:
                    raise UsageError(
                        f"case {cid}: feature set `{s}` has {v.size} values but case {first[s]} has "
                        f"{rows[first[s]][s].size}; features of one set must come from one config "
                        "(and 2D and 3D cases have different shape features: collect them apart)"
                    )
                first.setdefault(s, cid)
                set_info = (info.get("sets") or {}).get(s) or {}
                if s not in names or names[s] is None:
                    names[s] = set_info.get("names")
            rows[cid] = vectors
            origin[cid] = Path(path).name
            provenance.append(
                {
                    "case_id": cid,
                    "run": Path(path).name,
                    "config_hash": _config_hash(folder),
                    "stages": {s: ((info.get("sets") or {}).get(s) or {}).get("stage") for s in vectors},
                }
            )
    if not rows:
        raise UsageError("no cases to collect")
    all_sets = sorted(first)
    for cid, vectors in rows.items():
        lacking = [s for s in all_sets if s not in vectors]
        if lacking:
            raise UsageError(
                f"case {cid} has no feature set `{lacking[0]}` (case {first[lacking[0]]} has); "
                "collect runs of one config, or write the same sets everywhere"
            )
    ids = list(rows)
    matrices = {s: np.stack([rows[c][s] for c in ids]) for s in all_sets}
    store = FeatureStore(ids, matrices, names, provenance)
    if labels:
        store.labels = {c: labels[c] for c in ids if c in labels}
    return store


def read_labels(path: Path, source_map: dict[str, str] | None = None) -> dict[str, str]:
    """``case_id,label`` CSV (header required) -> dict; a row without both is an error naming its line.

    With ``source_map`` (case id -> input, from ``voxpipe run --source-map``) the CSV may name
    inputs instead (``input,label``: the path as given to ``run``, or a file name), since users
    know their files, not their pseudonymous case ids.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            key = "case_id" if "case_id" in fields else "input" if "input" in fields and source_map is not None else None
            if key is None or "label" not in fields:
                wanted = "`case_id` (or `input` with --source-map)" if source_map is not None else "`case_id`"
                raise UsageError(f"{path}: needs columns {wanted} and `label` (found {', '.join(fields) or 'none'})")
            labels = {}
            for line, row in enumerate(reader, start=2):
                name, label = (row.get(key) or "").strip(), (row.get("label") or "").strip()
                if not name or not label:
                    raise UsageError(f"{path}:{line}: empty {key} or label; fill it or remove the row")
                cid = name if key == "case_id" else case_for_input(source_map, name)
                if cid is None:
                    raise UsageError(f"{path}:{line}: that input is not in the source map (or its file name is not unique there)")
                labels[cid] = label
            return labels
    except OSError as exc:
        raise UsageError(f"cannot read labels {path} ({exc.strerror or type(exc).__name__})") from None

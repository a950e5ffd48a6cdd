"""Feature tables: CSV (always) and Parquet (when pyarrow is installed), one row per case."""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

import numpy as np

from voxpipe.atomic import atomic_path
from voxpipe.errors import UsageError
from voxpipe_plugins.match.store import FeatureStore


def table(store: FeatureStore, sets=()) -> tuple[list[str], list[list]]:
    """Header and rows: case_id, label, then one column per feature (``<set>.<name>``)."""
    x = store.matrix(sets)
    header = ["case_id", "label"] + store.column_names(sets)
    rows = [[cid, store.labels.get(cid, "")] + [float(v) for v in row] for cid, row in zip(store.case_ids, x.astype(np.float32))]
    return header, rows


def write_csv(store: FeatureStore, target: Path | None, sets=()) -> str | None:
    """Write the table as CSV to ``target`` (atomically), or return it as text when ``target`` is None.

    float32 values are written with ``repr`` of their float64 value, which reads back to the
    same float32 exactly.
    """
    header, rows = table(store, sets)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if target is None:
        return buffer.getvalue()
    with atomic_path(Path(target)) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return None


def has_parquet() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def write_parquet(store: FeatureStore, target: Path, sets=()) -> None:
    if not has_parquet():
        raise UsageError("Parquet export needs pyarrow (`pip install pyarrow`); or export to .csv")
    import pyarrow as pa
    import pyarrow.parquet as pq

    header, rows = table(store, sets)
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    arrays = {name: pa.array(values, type=pa.string() if i < 2 else pa.float32()) for i, (name, values) in enumerate(columns.items())}
    with atomic_path(Path(target)) as tmp:
        pq.write_table(pa.table(arrays), tmp)


def read_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Read an exported CSV back: case ids, column names, float32 matrix (for round trips and other tools)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    ids = [r[0] for r in rows]
    values = np.asarray([[float(v) for v in r[2:]] for r in rows], dtype=np.float32).reshape(len(rows), len(header) - 2)
    return ids, header[2:], values

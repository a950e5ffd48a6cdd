"""Label volumes for the run report: mL per label of a volume, pixels per label of a 2D image.

The pictures' writers (``write.preview``, ``write.montage``) record them for the label map
they draw, so the report's numbers describe the label the pictures show, after every stage
that changed it.
"""

from __future__ import annotations

import numpy as np

from voxpipe.label_counts import value_counts
from voxpipe.report_items import report_metric


def label_names(case: dict, label) -> dict[int, str]:
    """Value -> name from the label's ``meta["label_names"]`` or the case's ``label_names`` table."""
    meta = getattr(label, "meta", None)
    tables = [case.get("label_names"), case.get("labels"), meta.get("label_names") if isinstance(meta, dict) else None]
    for table in tables:
        if isinstance(table, dict):
            try:
                return {int(k): str(v) for k, v in table.items()}
            except (TypeError, ValueError):
                continue
    return {}


def label_volumes(case: dict, key: str = "label") -> list[tuple[str, float | int, str]]:
    """``[(label name, size, unit)]`` of ``case[key]``: mL on a channel-first volume, px on a 2D image."""
    label = case.get(key)
    if label is None:
        return []
    array = np.asarray(label.detach().cpu().numpy() if hasattr(label, "detach") else label)
    if array.ndim < 3:
        return []
    values, counts = value_counts(array)
    volume = array.ndim == 4
    voxel_mm3 = 1.0
    affine = getattr(label, "affine", None)
    if volume and affine is not None:
        matrix = np.asarray(affine.detach().cpu().numpy() if hasattr(affine, "detach") else affine, dtype=float)
        voxel_mm3 = float(abs(np.linalg.det(matrix[:3, :3])))
    names = label_names(case, label)
    return [
        (names.get(value, f"label {value}"), round(count * voxel_mm3 / 1000.0, 3) if volume else int(count), "mL" if volume else "px")
        for value, count in zip(values.tolist(), counts.tolist())
    ]


def report_label_volumes(case: dict, key: str = "label", source: str = "") -> None:
    """Record each label's volume (``volumes_ml.<name>``) or area (``areas_px.<name>``) for the report.

    ``source`` (the recording stage's id) is kept on each item, so the report can say where
    every number came from.
    """
    for name, size, unit in label_volumes(case, key):
        group = "volumes_ml" if unit == "mL" else "areas_px"
        report_metric(case, f"{group}.{name}", size, unit=unit, label=name)
        if source:
            _set_source(case, f"{group}.{name}", source)


def _set_source(case: dict, name: str, source: str) -> None:
    """Add ``source`` to the metric just recorded, copy-on-write like :func:`report_metric`."""
    items = dict(case["report"])
    items["metrics"] = [({**m, "source": source} if m.get("name") == name else m) for m in items["metrics"]]
    case["report"] = items

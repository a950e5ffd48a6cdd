"""`write.predictions`: a case's head predictions as JSON in its output folder (atomic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxpipe.atomic import write_json
from voxpipe.stage import record


def _plain(value):
    """numpy scalars/arrays -> JSON-friendly Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class PredictionsWriter:
    def __init__(self, filename: str = "predictions.json", include_features: bool = False) -> None:
        self.filename, self.include_features = filename, include_features

    def __call__(self, case: dict) -> dict:
        outputs = case.get("outputs")
        if not outputs:
            raise ValueError("write.predictions: the case has no predictions (case['outputs']); put a head stage before this writer")
        data = {"case_id": case.get("case_id"), "outputs": _plain(outputs)}
        if self.include_features and case.get("features"):
            data["features"] = _plain(case["features"])
        write_json(Path(case["output_dir"]) / self.filename, data)
        record(case, "write.predictions", files=[self.filename])
        return case

"""Library versions and stage records that say where a feature vector came from."""

from __future__ import annotations

import importlib.metadata
from typing import Any

LIBRARIES = ("voxpipe", "numpy", "torch", "monai", "scikit-image", "scikit-learn", "scipy")


def versions() -> dict[str, str]:
    """Installed versions of the libraries that can change a feature's value (metadata only: no imports)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def stage_record(case: dict, feature_set: str) -> dict[str, Any] | None:
    """The history entry of the stage that made ``feature_set``: the last one naming it.

    Extractors name their set with ``feature_set=`` (``radiomics.extract``) or ``name=``
    in :func:`voxpipe.stage.record`; a set no entry names has no stage record.
    """
    for entry in reversed(case.get("history", [])):
        if entry.get("feature_set") == feature_set or entry.get("name") == feature_set:
            return dict(entry)
    return None

"""Where a de-identified data set goes, and how it is written.

Names come from the *new* UIDs through the key (``study-<hex>/series-<hex>/<hex>.dcm``),
never from tag text or input file names, so an output path reveals nothing and is the
same in every run. Files are written atomically (0600 by default) below folders created
0700, through :func:`voxpipe.safe_paths.safe_join` (no link planted in the output is followed).
"""

from __future__ import annotations

from pathlib import Path

from voxpipe.atomic import atomic_path
from voxpipe.safe_paths import safe_join
from voxpipe_plugins.deid.pseudonyms import Pseudonyms


def relative_parts(ds, pseudonyms: Pseudonyms, flat: bool = False) -> tuple[str, ...]:
    study = pseudonyms.token("path", str(ds.get("StudyInstanceUID", "")), 12)
    series = pseudonyms.token("path", str(ds.get("SeriesInstanceUID", "")), 12)
    instance = pseudonyms.token("path", str(ds.get("SOPInstanceUID", "")), 16)
    if flat:
        return (f"{instance}.dcm",)
    return (f"study-{study}", f"series-{series}", f"{instance}.dcm")


def write_dataset(ds, root: Path, parts: tuple[str, ...]) -> Path:
    target = safe_join(root, *parts, make_dirs=True)
    with atomic_path(target) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return target

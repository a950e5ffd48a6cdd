"""Dispatch each case to the reader for its kind."""

from __future__ import annotations

from pathlib import Path

from voxpipe.cases import Discovery, discover_by_suffix
from voxpipe.stage import record
from voxpipe_plugins.io_image.reader import IMAGE_SUFFIXES, read_image2d
from voxpipe_plugins.io_nifti.reader import NIFTI_SUFFIXES, read_nifti

READERS = {
    "nifti": lambda path, loader, cid: read_nifti(path, loader.dtype, cid),
    "image": lambda path, loader, cid: read_image2d(path, loader.image_mode, cid),
}


def discover(root: Path, params=None) -> Discovery:
    return discover_by_suffix(root, {**NIFTI_SUFFIXES, **IMAGE_SUFFIXES})


class AutoLoader:
    """Loads ``case["source"]`` with the reader for its kind."""

    def __init__(self, key: str = "image", dtype: str = "float32", image_mode: str = "keep") -> None:
        self.key, self.dtype, self.image_mode = key, dtype, image_mode

    def __call__(self, case: dict) -> dict:
        source = case["source"]
        out = dict(case)
        out[self.key] = READERS[source.kind](source.path, self, case.get("case_id", ""))
        record(out, "load.auto", kind=source.kind, shape=list(out[self.key].shape))
        return out

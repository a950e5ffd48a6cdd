"""Dispatch each case to the reader for its kind."""

from __future__ import annotations

from pathlib import Path

from voxpipe.cases import Discovery, iter_files, suffix_of
from voxpipe.stage import record
from voxpipe_plugins.io_dicom.loader import case_source, discover_series, load_into_case, options_from
from voxpipe_plugins.io_image.reader import IMAGE_SUFFIXES, read_image2d
from voxpipe_plugins.io_nifti.reader import NIFTI_SUFFIXES, read_nifti

READERS = {
    "nifti": lambda path, loader, cid: read_nifti(path, loader.dtype, cid),
    "image": lambda path, loader, cid: read_image2d(path, loader.image_mode, cid),
}


KNOWN_SUFFIXES = {**NIFTI_SUFFIXES, **IMAGE_SUFFIXES}
NOT_DICOM_SUFFIXES = {".txt", ".json", ".csv", ".xml", ".html", ".pdf", ".md", ".yaml", ".yml", ".zip", ".gz", ".py", ".log"}


def discover(root: Path, params=None) -> Discovery:
    """NIfTI and images by suffix; every other file is offered to DICOM series discovery."""
    from voxpipe.cases import CaseSource

    found = Discovery()
    candidates = []
    for file in iter_files(Path(root)):
        suffix = suffix_of(file)
        kind = KNOWN_SUFFIXES.get(suffix)
        if kind is not None:
            found.cases.append(CaseSource(identity=str(file.resolve()), paths=(file,), kind=kind))
        elif suffix in NOT_DICOM_SUFFIXES:
            found.skipped[f"not a supported file type ({suffix})"] += 1
        else:
            candidates.append(file)
    if candidates:
        options = options_from(getattr(params, "dicom", None))
        for series in discover_series(candidates, options.selection, found.skipped):
            found.cases.append(case_source(series))
    return found


class AutoLoader:
    """Loads ``case["source"]`` with the reader for its kind."""

    def __init__(self, key: str = "image", dtype: str = "float32", image_mode: str = "keep", dicom=None) -> None:
        self.key, self.dtype, self.image_mode = key, dtype, image_mode
        self.dicom = options_from(dicom)

    def __call__(self, case: dict) -> dict:
        source = case["source"]
        if source.kind == "dicom":
            return load_into_case(case, self.key, self.dicom, "load.auto")
        out = dict(case)
        out[self.key] = READERS[source.kind](source.path, self, case.get("case_id", ""))
        record(out, "load.auto", kind=source.kind, shape=list(out[self.key].shape))
        return out

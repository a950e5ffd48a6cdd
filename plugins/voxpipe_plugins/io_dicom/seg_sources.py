"""The source headers a DICOM SEG is built from, completed from the geometry VoxPipe measured.

highdicom copies the patient and study modules from the first source header and takes
pixel measures, orientation and positions from the headers. Real series often lack
attributes it reads (SliceThickness is optional in many exports; type 2 patient and study
attributes go missing; slices disagree on orientation in the last decimal). The loader has
already checked and measured the stack, so what the SEG needs is filled in here, on
in-memory copies: slice thickness from the measured slice spacing, one orientation for all
slices, empty type 2 attributes, and a frame of reference derived from the series when the
source has none. The source files are never changed.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from pydicom.dataset import Dataset

TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
)
"""Type 2 in the patient and general study modules: present in the SEG, empty when unknown."""


def slice_spacing(affine) -> float:
    """The distance between slices of the loaded grid (length of the slice axis of the affine)."""
    return float(np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, 2]))


def complete(datasets: list[Dataset], affine, warnings: list[str]) -> list[Dataset]:
    """Fill in, on ``datasets`` (copies), what highdicom needs and the source does not carry.

    ``warnings`` gets one line per kind of attribute derived (no values).
    """
    spacing = slice_spacing(affine)
    derived: set[str] = set()
    first_iop = datasets[0].get("ImageOrientationPatient")
    frame_uid = next((str(ds.FrameOfReferenceUID) for ds in datasets if _valid_uid(ds.get("FrameOfReferenceUID"))), None)
    for ds in datasets:
        derived |= _drop_invalid(ds)
        for keyword in TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
        if not _valid_uid(ds.get("StudyInstanceUID")):
            ds.StudyInstanceUID = derived_uid("study", str(ds.get("SeriesInstanceUID", "")))
            derived.add("StudyInstanceUID")
        if "ImagePositionPatient" in ds or "PerFrameFunctionalGroupsSequence" in ds:
            if frame_uid is None:
                frame_uid = derived_uid("frame-of-reference", str(ds.get("SeriesInstanceUID", "")))
                derived.add("FrameOfReferenceUID")
            if not _valid_uid(ds.get("FrameOfReferenceUID")):
                ds.FrameOfReferenceUID = frame_uid
        if "ImagePositionPatient" in ds:
            if first_iop is not None:
                ds.ImageOrientationPatient = first_iop  # the loader checked they agree within 1e-4
            if not _positive(ds.get("SliceThickness")):
                ds.SliceThickness = _ds_text(spacing)
                derived.add("SliceThickness")
            if "SpacingBetweenSlices" in ds and not _positive(ds.get("SpacingBetweenSlices")):
                del ds.SpacingBetweenSlices
        if "SharedFunctionalGroupsSequence" in ds:
            derived |= _complete_shared_measures(ds, spacing)
    if derived:
        warnings.append(
            "write.dicom_seg: " + ", ".join(sorted(derived)) + " missing or not valid for its VR in the source: "
            "derived from the loaded series, or left empty"
        )
    return datasets


def _drop_invalid(ds: Dataset) -> set[str]:
    """Top-level values that fail their VR (a name in PatientBirthDate, text in StudyTime, a sex other than M, F, O):
    highdicom would refuse them, quoting the value. They go; type 2 ones come back empty. Returns their keywords."""
    from voxpipe_plugins.deid.vr import GRAMMAR_VRS, valid

    dropped = set()
    for tag in list(ds.keys()):
        if tag.group == 0x0002:
            continue
        elem = ds[tag]
        bad = elem.VR in GRAMMAR_VRS and not valid(elem.VR, elem.value)
        if elem.keyword == "PatientSex" and str(elem.value or "").strip() not in ("", "M", "F", "O"):
            bad = True
        if bad:
            del ds[tag]
            dropped.add(elem.keyword or "a private attribute")
    return dropped


def _complete_shared_measures(ds: Dataset, spacing: float) -> set[str]:
    try:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    except (AttributeError, IndexError):
        return set()
    if not _positive(measures.get("SliceThickness")):
        measures.SliceThickness = _ds_text(spacing)
        return {"SliceThickness"}
    return set()


def derived_uid(purpose: str, series_uid: str) -> str:
    """A UID for what the source lacks, the same for every SEG of one series: ``2.25.`` + 128 bits of a hash."""
    digest = hashlib.sha256(f"voxpipe-seg-{purpose}\x00{series_uid}".encode()).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big"))


def _valid_uid(value) -> bool:
    import re

    return isinstance(value, str) and 0 < len(value) <= 64 and re.fullmatch(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))*", value) is not None


def _positive(value) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


def _ds_text(value: float) -> str:
    """A DS string (at most 16 characters) for ``value``."""
    text = f"{value:.6g}"
    return text if len(text) <= 16 else f"{value:.8e}"[:16]

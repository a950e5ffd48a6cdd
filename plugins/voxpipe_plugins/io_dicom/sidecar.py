"""BIDS-style JSON sidecar beside each converted NIfTI, like dcm2niix's, with no PHI by default.

Why: dcm2niix users read acquisition parameters (TR, TE, field strength, kernel...) from
the ``.json`` next to the image, and BIDS tools expect the same names and units (times in
seconds). Only acquisition attributes are written by default; free text (descriptions,
comments), places, devices, dates, times and UIDs may identify a patient and are added
only when the caller asks for them (``--sidecar-phi``).
"""

from __future__ import annotations

import json
import re
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from voxpipe.atomic import atomic_path

MS_TO_S = 0.001

ACQUISITION: dict[str, tuple[str, float | None]] = {
    # BIDS name: (DICOM keyword, factor to BIDS units or None to keep)
    "Modality": ("Modality", None),
    "MagneticFieldStrength": ("MagneticFieldStrength", None),
    "ImagingFrequency": ("ImagingFrequency", None),
    "Manufacturer": ("Manufacturer", None),
    "ManufacturersModelName": ("ManufacturerModelName", None),
    "PatientPosition": ("PatientPosition", None),
    "BodyPartExamined": ("BodyPartExamined", None),
    "SoftwareVersions": ("SoftwareVersions", None),
    "MRAcquisitionType": ("MRAcquisitionType", None),
    "ScanningSequence": ("ScanningSequence", None),
    "SequenceVariant": ("SequenceVariant", None),
    "ScanOptions": ("ScanOptions", None),
    "SequenceName": ("SequenceName", None),
    "ImageType": ("ImageType", None),
    "SeriesNumber": ("SeriesNumber", None),
    "AcquisitionNumber": ("AcquisitionNumber", None),
    "SliceThickness": ("SliceThickness", None),
    "SpacingBetweenSlices": ("SpacingBetweenSlices", None),
    "EchoNumber": ("EchoNumbers", None),
    "EchoTime": ("EchoTime", MS_TO_S),
    "RepetitionTime": ("RepetitionTime", MS_TO_S),
    "InversionTime": ("InversionTime", MS_TO_S),
    "FlipAngle": ("FlipAngle", None),
    "ConvolutionKernel": ("ConvolutionKernel", None),
    "KVP": ("KVP", None),
    "ExposureTime": ("ExposureTime", MS_TO_S),
    "XRayTubeCurrent": ("XRayTubeCurrent", None),
    "XRayExposure": ("Exposure", None),
    "ImageOrientationPatientDICOM": ("ImageOrientationPatient", None),
}
"""Written by default: acquisition parameters, which say nothing about who was scanned."""

IDENTIFYING: dict[str, tuple[str, float | None]] = {
    "SeriesDescription": ("SeriesDescription", None),
    "ProtocolName": ("ProtocolName", None),
    "StudyDescription": ("StudyDescription", None),
    "ImageComments": ("ImageComments", None),
    "InstitutionName": ("InstitutionName", None),
    "InstitutionalDepartmentName": ("InstitutionalDepartmentName", None),
    "StationName": ("StationName", None),
    "DeviceSerialNumber": ("DeviceSerialNumber", None),
    "AcquisitionTime": ("AcquisitionTime", None),
    "SeriesInstanceUID": ("SeriesInstanceUID", None),
    "StudyInstanceUID": ("StudyInstanceUID", None),
}
"""Free text, places, devices, times and UIDs: only with ``phi=True``."""


JOINED = {"ScanningSequence", "SequenceVariant", "ScanOptions", "SoftwareVersions"}


def sidecar_path(nifti: Path) -> Path:
    """``x.nii.gz`` / ``x.nii`` -> ``x.json`` (dcm2niix's rule)."""
    name = nifti.name
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name.rsplit(".", 1)[0]
    return nifti.with_name(stem + ".json")


def sidecar_fields(dicom_file: Path, phi: bool = False) -> dict[str, Any]:
    """The sidecar's fields from one file of the series (headers only)."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warnings quote raw header values
        ds = pydicom.dcmread(dicom_file, stop_before_pixels=True)
    table = {**ACQUISITION, **IDENTIFYING} if phi else ACQUISITION
    fields: dict[str, Any] = {}
    for name, (keyword, factor) in table.items():
        value = _plain(ds.get(keyword), factor)
        if name in JOINED and isinstance(value, list):
            value = "\\".join(str(v) for v in value)  # dcm2niix keeps these as DICOM's backslash-joined text
        if value not in (None, "", []):
            fields[name] = value
    if "Manufacturer" in fields:
        fields["Manufacturer"] = manufacturer(str(fields["Manufacturer"]))
    fields["ConversionSoftware"] = "voxpipe"
    fields["ConversionSoftwareVersion"] = _version()
    return fields


MANUFACTURERS = {
    "SIEMENS": "Siemens",
    "GE": "GE",
    "PHILIPS": "Philips",
    "TOSHIBA": "Toshiba",
    "CANON": "Canon",
    "HITACHI": "Hitachi",
    "UIH": "UIH",
    "BRUKER": "Bruker",
}


def manufacturer(text: str) -> str:
    """dcm2niix's short vendor name (``GE MEDICAL SYSTEMS`` -> ``GE``), so the two tools' sidecars agree."""
    first = re.split(r"[^A-Za-z]+", text.strip().upper())[0] if text.strip() else ""
    return MANUFACTURERS.get(first, text.strip())


def write_sidecar(nifti: Path, dicom_file: Path, phi: bool = False) -> Path:
    """Write the sidecar beside ``nifti`` (see :func:`write_sidecar_fields`)."""
    target = sidecar_path(nifti)
    write_sidecar_fields(target, sidecar_fields(dicom_file, phi), phi)
    return target


def _plain(element: Any, factor: float | None) -> Any:
    """A pydicom value as JSON: numbers as numbers (scaled), multi-values as lists, text stripped."""
    if element is None:
        return None
    value = element.value if hasattr(element, "value") else element
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = [_scalar(v, factor) for v in value]
        return [v for v in items if v is not None]
    return _scalar(value, factor)


def _scalar(value: Any, factor: float | None) -> Any:
    if isinstance(value, bytes):
        return None  # binary values are never acquisition parameters
    if isinstance(value, int) and not isinstance(value, bool):
        return value * factor if factor else value
    if isinstance(value, float) or type(value).__name__ in ("DSfloat", "DSdecimal"):
        number = float(value) * (factor or 1)
        return int(number) if number.is_integer() else round(number, 9)
    if type(value).__name__ == "IS":
        return int(value)
    text = str(value).strip()
    return text or None


def _version() -> str:
    try:
        return version("voxpipe")
    except PackageNotFoundError:
        return "unknown"


def write_sidecar_fields(target: Path, fields: dict[str, Any], phi: bool = False) -> None:
    """Write ready ``fields`` to ``target`` atomically, with the NIfTI's mode (0600 unless widened); 0600 always if it holds PHI."""
    with atomic_path(target, mode=0o600 if phi else None) as tmp:
        tmp.write_text(json.dumps(fields, indent=2) + "\n", encoding="utf-8")

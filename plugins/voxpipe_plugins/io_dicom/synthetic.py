"""Synthetic DICOM series with known geometry, for tests, benchmarks and demos.

Every slice is written from a 3D array of *real-world values* (e.g. HU) laid out as
``volume[k, r, c]`` (slice, row, column), with an exact geometry: ``origin`` is the
ImagePositionPatient of slice 0, ``row_dir``/``col_dir`` the ImageOrientationPatient
cosines, ``spacing`` = (row spacing, column spacing, slice step) in mm, and the slice
stack advancing along ``slice_dir`` (the normal by default; tilt it to mimic a gantry
tilt). Options cover the messy cases hospitals export: shuffled names, reversed instance
numbers, per-slice rescale, signed 12-bit storage, MONOCHROME1, a template header copied
from a real file, and any transfer syntax pydicom can encode.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage, "OT": SecondaryCaptureImageStorage}


@dataclass
class SeriesSpec:
    """How to write a series; defaults give a clean axial CT."""

    spacing: tuple[float, float, float] = (0.7, 0.7, 2.5)  # row spacing, column spacing, slice step (mm)
    origin: tuple[float, float, float] = (-100.0, -120.0, 40.0)
    row_dir: tuple[float, float, float] = (1.0, 0.0, 0.0)  # direction along a row (increasing column)
    col_dir: tuple[float, float, float] = (0.0, 1.0, 0.0)  # direction down a column (increasing row)
    slice_dir: tuple[float, float, float] | None = None  # None: the normal row_dir x col_dir
    modality: str = "CT"
    series_uid: str = field(default_factory=generate_uid)
    study_uid: str = field(default_factory=generate_uid)
    frame_uid: str = field(default_factory=generate_uid)
    series_description: str = "synthetic series"
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL")
    slope: float | Sequence[float] = 1.0
    intercept: float | Sequence[float] = -1024.0
    bits_stored: int = 16
    signed: bool = True
    monochrome1: bool = False
    reverse_instance_numbers: bool = False
    shuffle_names: bool = True
    echo_number: int | None = None
    template: Dataset | None = None
    patient_name: str = "Synthetic^Patient"
    transfer_syntax: str = ExplicitVRLittleEndian
    extra: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_dir, float), np.asarray(self.col_dir, float))

    def step(self) -> np.ndarray:
        direction = np.asarray(self.slice_dir if self.slice_dir is not None else self.normal(), float)
        return direction / np.linalg.norm(direction) * self.spacing[2]

    def position(self, k: float) -> np.ndarray:
        return np.asarray(self.origin, float) + k * self.step()


def _type2_attributes(ds: Dataset) -> None:
    """Patient/study attributes every image must carry (type 2: present, may be empty)."""
    for keyword, value in (
        ("PatientBirthDate", "19700101"),
        ("PatientSex", "O"),
        ("StudyDate", "20260101"),
        ("StudyTime", "120000"),
        ("ReferringPhysicianName", ""),
        ("AccessionNumber", ""),
        ("StudyID", "1"),
        ("Manufacturer", "VoxPipe synthetic"),
    ):
        if keyword not in ds:
            setattr(ds, keyword, value)


def _per_slice(value: float | Sequence[float], k: int) -> float:
    return float(value[k]) if isinstance(value, (list, tuple, np.ndarray)) else float(value)


def stored_values(values: np.ndarray, slope: float, intercept: float, spec: SeriesSpec) -> np.ndarray:
    """Real-world values -> the integers written to PixelData (what a scanner stores)."""
    stored = np.rint((values - intercept) / slope)
    if spec.monochrome1:
        low, high = _stored_range(spec)
        stored = (low + high) - stored
    low, high = _stored_range(spec)
    if stored.min() < low or stored.max() > high:
        raise ValueError(f"values do not fit {spec.bits_stored}-bit {'signed' if spec.signed else 'unsigned'} storage")
    container = np.int16 if spec.signed else np.uint16
    return stored.astype(container)


def _stored_range(spec: SeriesSpec) -> tuple[int, int]:
    if spec.signed:
        return -(2 ** (spec.bits_stored - 1)), 2 ** (spec.bits_stored - 1) - 1
    return 0, 2**spec.bits_stored - 1


def make_slice(values: np.ndarray, k: int, n_slices: int, spec: SeriesSpec) -> Dataset:
    """One slice (``values[r, c]`` in real-world units) as a complete DICOM dataset."""
    slope, intercept = _per_slice(spec.slope, k), _per_slice(spec.intercept, k)
    pixels = stored_values(values, slope, intercept, spec)
    if spec.template is not None:
        ds = copy.deepcopy(spec.template)
        ds.pop((0x7FE0, 0x0010), None)
    else:
        ds = Dataset()
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS.get(spec.modality, SecondaryCaptureImageStorage)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = spec.study_uid, spec.series_uid, spec.frame_uid
    ds.Modality = spec.modality
    ds.PatientName, ds.PatientID = spec.patient_name, "SYN-0001"
    _type2_attributes(ds)
    ds.SeriesDescription = spec.series_description
    ds.ImageType = list(spec.image_type)
    ds.SeriesNumber = 1
    ds.InstanceNumber = (n_slices - k) if spec.reverse_instance_numbers else (k + 1)
    ds.ImagePositionPatient = [f"{v:.6f}" for v in spec.position(k)]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*spec.row_dir, *spec.col_dir)]
    ds.PixelSpacing = [f"{spec.spacing[0]:.6f}", f"{spec.spacing[1]:.6f}"]
    ds.SliceThickness = f"{spec.spacing[2]:.6f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if spec.monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, spec.bits_stored, spec.bits_stored - 1
    ds.PixelRepresentation = 1 if spec.signed else 0
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    if spec.echo_number is not None:
        ds.EchoNumbers = spec.echo_number
    for keyword, value in spec.extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    if spec.transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(spec.transfer_syntax, encoding_plugin=_encoder_for(spec.transfer_syntax))
    return ds


def _encoder_for(syntax: str) -> str:
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    return {RLELossless: "pydicom", JPEGLSLossless: "pyjpegls", JPEG2000Lossless: "pylibjpeg"}.get(syntax, "")


def write_series(folder: str | Path, volume: np.ndarray, spec: SeriesSpec | None = None, skip: Sequence[int] = ()) -> list[Path]:
    """Write ``volume[k, r, c]`` (real-world values) as one file per slice; returns the paths."""
    spec = spec or SeriesSpec()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    n = volume.shape[0]
    names = [f"IM{i:05d}" for i in range(n)]
    if spec.shuffle_names:
        rng.shuffle(names)
    paths = []
    for k in range(n):
        if k in skip:
            continue
        ds = make_slice(volume[k], k, n, spec)
        path = folder / f"{names[k]}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def expected_affine(spec: SeriesSpec, n_rows: int | None = None) -> np.ndarray:
    """The RAS affine VoxPipe must produce for a series written from ``spec``.

    Array axes are (column i, row j, slice k), as in MONAI/ITK: i runs along ``row_dir``
    with the column spacing, j along ``col_dir`` with the row spacing, k along the stack.
    DICOM patient coordinates are LPS; RAS flips the first two axes.
    """
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(spec.row_dir, float) * spec.spacing[1]
    lps[:3, 1] = np.asarray(spec.col_dir, float) * spec.spacing[0]
    lps[:3, 2] = spec.step()
    lps[:3, 3] = spec.origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def ct_like_volume(shape=(40, 64, 48), seed: int = 0) -> np.ndarray:
    """A body-shaped HU phantom: air -1000, soft tissue 40, a bone ring 700, noise."""
    rng = np.random.default_rng(seed)
    k, r, c = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    volume = np.full(shape, -1000.0)
    body = (r / 0.8) ** 2 + (c / 0.9) ** 2 <= 1
    volume[body] = 40.0
    ring = body & ((r / 0.7) ** 2 + (c / 0.8) ** 2 > 1)
    volume[ring] = 700.0
    volume[(r - 0.2) ** 2 + (c + 0.3) ** 2 + k**2 < 0.05] = 200.0  # an off-centre "organ": breaks symmetry
    return np.rint(volume + rng.normal(0, 10, shape))


def load_template(name: str = "CT_small.dcm") -> Dataset:
    """A real header from pydicom's test files, to copy into synthetic slices."""
    from pydicom.data import get_testdata_file

    return pydicom.dcmread(get_testdata_file(name, download=False))


def write_enhanced(path: str | Path, volume: np.ndarray, spec: SeriesSpec | None = None, frame_order: Sequence[int] | None = None) -> Path:
    """Write ``volume[k, r, c]`` as one enhanced CT multi-frame object.

    Geometry and rescale go into functional groups: orientation, pixel measures and value
    transformation shared, position per frame. ``frame_order`` stores the frames in that
    order (e.g. shuffled) to check that readers order frames by position, not storage.
    """
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import EnhancedCTImageStorage

    spec = spec or SeriesSpec()
    order = list(frame_order) if frame_order is not None else list(range(volume.shape[0]))
    slope, intercept = _per_slice(spec.slope, 0), _per_slice(spec.intercept, 0)
    ds = Dataset()
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = spec.study_uid, spec.series_uid, spec.frame_uid
    ds.Modality, ds.PatientName, ds.PatientID = "CT", spec.patient_name, "SYN-0001"
    _type2_attributes(ds)
    ds.SeriesDescription = spec.series_description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(order)
    ds.Rows, ds.Columns = volume.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, spec.bits_stored, spec.bits_stored - 1, int(spec.signed)
    shared = Dataset()
    orientation, measures, transform = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [f"{v:.8f}" for v in (*spec.row_dir, *spec.col_dir)]
    measures.PixelSpacing = [f"{spec.spacing[0]:.6f}", f"{spec.spacing[1]:.6f}"]
    measures.SliceThickness = f"{spec.spacing[2]:.6f}"
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in order:
        item, position, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in spec.position(k)]
        content.InStackPositionNumber = k + 1
        item.PlanePositionSequence = DicomSequence([position])
        item.FrameContentSequence = DicomSequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    pixels = np.stack([stored_values(volume[k], slope, intercept, spec) for k in order])
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path

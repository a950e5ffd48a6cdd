"""DICOM I/O on real files that ship inside pydicom and nibabel (never downloaded).

Every expectation is computed independently of VoxPipe: pydicom's own ``pixel_array`` for
values, the DICOM geometry maths written out here (and SimpleITK) for affines, and the
raw file bytes for pixel offsets. Layout conventions checked (see ``loader.py``):

* a stack is ``(1, columns, rows, slices)``, i.e. ``array[0, i, j, k] == frame_k[j, i]``;
* a 2D image without patient geometry is ``(1, columns, rows)`` (grey) or
  ``(C, columns, rows)`` (colour); multi-frame colour is ``(C, columns, rows, frames)``;
* the affine is RAS: DICOM's LPS with the first two rows negated.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402

from voxpipe_plugins.io_dicom import headers as H  # noqa: E402
from voxpipe_plugins.io_dicom.loader import DicomOptions, SeriesError, discover_series, load_volume  # noqa: E402
from voxpipe_plugins.io_dicom.pixels import PixelError  # noqa: E402

PYDICOM_DIR = Path(os.path.dirname(get_testdata_file("CT_small.dcm", download=False)))
DICOMDIR_TESTS = PYDICOM_DIR / "dicomdirtests"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NOT_DICOM_SUFFIXES = {".txt", ".json", ".dump", ".icc", ".gz"}


def _nibabel_dir() -> Path:
    import nibabel

    return Path(nibabel.__file__).parent


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _quiet_pydicom():
    """pydicom warns about the odd values its own test files hold on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def pydicom_file(name: str) -> Path:
    """A pydicom test file by name; skip the test when this pydicom does not ship it."""
    found = get_testdata_file(name, download=False)
    if found is None or not Path(found).exists():
        pytest.skip(f"{name} is not shipped with this pydicom (only downloadable)")
    return Path(found)


def read(path: Path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, **kwargs)


def pixels_of(ds) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


def load(paths, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_volume([Path(p) for p in paths], DicomOptions(**options))


def real_world(ds, stored: np.ndarray) -> np.ndarray:
    """Stored values -> real-world values as the standard defines them (float64)."""
    if "DoseGridScaling" in ds:
        slope = float(ds.DoseGridScaling)
    else:
        slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return stored.astype(np.float64) * slope + intercept


def has_geometry(ds) -> bool:
    return "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds


def expected_layout(ds) -> np.ndarray:
    """pydicom's decode of a single file, rescaled and in the loader's axis order."""
    pa = pixels_of(ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        return pa.transpose(3, 2, 1, 0) if frames > 1 else pa.transpose(2, 1, 0)
    values = real_world(ds, pa)
    if frames == 1:
        values = values[None]
    stacked = values.transpose(2, 1, 0)[None]  # (K, R, C) -> (1, C, R, K)
    if frames == 1 and not has_geometry(ds):
        return stacked[..., 0]  # 2D image: (1, C, R)
    return stacked


def assert_matches_pydicom(volume_array: np.ndarray, expected: np.ndarray) -> None:
    assert volume_array.shape == expected.shape
    if np.issubdtype(volume_array.dtype, np.floating):
        np.testing.assert_allclose(volume_array, expected, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(volume_array, expected)


def geometry_affine(ds, step_lps: np.ndarray | None = None, origin=None) -> np.ndarray:
    """The DICOM geometry maths, written out: columns along the row cosine times the column
    spacing (PixelSpacing[1]), rows along the column cosine times the row spacing
    (PixelSpacing[0]), slices along ``step_lps``, origin at ImagePositionPatient; LPS -> RAS."""
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    # Unit vectors by definition; some files store them to few digits (J2K_pixelrep_mismatch).
    row_cosine, column_cosine = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * column_spacing
    lps[:3, 1] = column_cosine * row_spacing
    lps[:3, 2] = np.cross(row_cosine, column_cosine) if step_lps is None else step_lps
    lps[:3, 3] = [float(v) for v in (ds.ImagePositionPatient if origin is None else origin)]
    return LPS_TO_RAS @ lps


def sitk_affine(image) -> np.ndarray:
    """SimpleITK's direction/spacing/origin (LPS) as a RAS affine."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing(), dtype=np.float64)
    lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ lps


def assert_in_plane_affine(affine: np.ndarray, expected: np.ndarray, atol: float = 1e-6) -> None:
    """Columns i, j and the origin exactly; the slice axis along the same direction."""
    np.testing.assert_allclose(affine[:3, [0, 1, 3]], expected[:3, [0, 1, 3]], atol=atol, rtol=0)
    k, k_expected = affine[:3, 2], expected[:3, 2]
    assert np.linalg.norm(k) > 0
    np.testing.assert_allclose(k / np.linalg.norm(k), k_expected / np.linalg.norm(k_expected), atol=1e-6)
    np.testing.assert_array_equal(affine[3], [0, 0, 0, 1])


def _all_test_files() -> list[Path]:
    return sorted(p for p in PYDICOM_DIR.rglob("*") if p.is_file() and p.suffix.lower() not in NOT_DICOM_SUFFIXES)


ALL_FILES = _all_test_files()


def _public(header: H.SliceHeader) -> dict:
    return {k: v for k, v in header.values.items() if not k.startswith("_")}


def _pydicom_reads(path: Path) -> bool:
    """Is it a Part 10 file pydicom reads without ``force``?"""
    try:
        read(path, stop_before_pixels=True)
        return True
    except Exception:  # noqa: BLE001
        return False


# --------------------------------------------------------------------------- 1. headers


@pytest.mark.parametrize("path", ALL_FILES, ids=[str(p.relative_to(PYDICOM_DIR)) for p in ALL_FILES])
def test_fast_header_agrees_with_pydicom(path: Path):
    """Where the fast reader accepts a file, it reads exactly what pydicom reads."""
    if not _pydicom_reads(path):
        # Not a Part 10 file: header_of may refuse it, but only as NotDicom.
        try:
            H.header_of(path)
        except H.NotDicom:
            pass
        return
    header = H.header_of(path)  # never raises for a file pydicom reads
    assert header.transfer_syntax
    try:
        fast = H.read_header(path)
    except H.Unsupported:
        # Declined: header_of must then be pydicom's reading.
        slow = H.read_header_pydicom(path)
        assert _public(header) == _public(slow)
        assert header.has_pixels == slow.has_pixels and header.enhanced == slow.enhanced
        return
    assert _public(header) == _public(fast)
    try:
        slow = H.read_header_pydicom(path)
    except ValueError:
        assert path.name == "badVR.dcm"  # pydicom itself cannot parse a value of this one
        return
    assert _public(fast) == _public(slow)
    assert fast.enhanced == slow.enhanced
    assert fast.has_pixels == slow.has_pixels
    assert fast.transfer_syntax == slow.transfer_syntax
    assert fast.sop_class == slow.sop_class


COMMON_FAST = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_implicit.dcm",
    "MR_small_padded.dcm",
    "JPEG2000.dcm",
    "693_J2KI.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "JPGExtended.dcm",
    "rtdose.dcm",
    "rtdose_rle.dcm",
    "SC_rgb_rle_2frame.dcm",
    "examples_rgb_color.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "examples_jpeg2k.dcm",
    "JPEGLSNearLossless_16.dcm",
]


def test_fast_path_reads_the_common_files():
    for name in COMMON_FAST:
        header = H.read_header(pydicom_file(name))  # raises Unsupported if declined
        assert header.has_pixels, name
        assert header.get("Rows") and header.get("Columns"), name
    images = [p for p in DICOMDIR_TESTS.rglob("*") if p.is_file() and p.parent.name[:2] in ("CT", "CR", "MR")]
    assert len(images) >= 25
    for path in images:
        assert H.read_header(path).has_pixels, path.name


def test_fast_path_declines_big_endian_and_deflated():
    for name in ("MR_small_bigendian.dcm", "MR_small_expb.dcm", "image_dfl.dcm", "rtdose_expb.dcm"):
        path = pydicom_file(name)
        with pytest.raises(H.Unsupported):
            H.read_header(path)
        header = H.header_of(path)
        assert header.transfer_syntax == str(read(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        assert header.has_pixels and header.compressed is False


def test_pixel_offset_points_at_the_pixel_bytes():
    """For uncompressed little-endian files, the recorded offset is where Pixel Data's value starts."""
    checked = []
    for path in ALL_FILES:
        try:
            header = H.read_header(path)
        except Exception:  # noqa: BLE001 - declined (Unsupported) or not DICOM
            continue
        if header.transfer_syntax not in (H.EXPLICIT_LE, H.IMPLICIT_LE) or header.pixel_offset is None:
            continue
        ds = read(path)
        if "PixelData" not in ds:
            continue
        raw = path.read_bytes()
        value = ds.PixelData
        if header.pixel_offset + header.pixel_length > len(raw):  # MR_truncated: the file ends inside Pixel Data
            with pytest.raises(PixelError, match="truncated"):
                load([path])
            assert raw[header.pixel_offset :] == value, path.name
            continue
        assert header.pixel_length == len(value), path.name
        assert raw[header.pixel_offset : header.pixel_offset + len(value)] == value, path.name
        bits = int(ds.get("BitsAllocated", 0) or 0)
        if int(ds.get("SamplesPerPixel", 1)) != 1 or bits not in (8, 16, 32):
            continue
        try:
            pa = pixels_of(ds)
        except Exception:  # noqa: BLE001 - e.g. PixelData shorter than declared (MR_truncated)
            continue
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
        direct = np.frombuffer(raw, dtype=dtype, count=pa.size, offset=header.pixel_offset)
        stored = int(ds.get("BitsStored", bits))
        if stored < bits:  # pydicom hands out the stored bits only
            shift = bits - stored
            direct = (direct << shift) >> shift if signed else direct & ((1 << stored) - 1)
        np.testing.assert_array_equal(direct.reshape(pa.shape), pa, err_msg=path.name)
        checked.append(path.name)
    assert {"CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "rtdose.dcm"} <= set(checked)
    assert len(checked) >= 30


# --------------------------------------------------------------------------- 2. compressed twins

MR_TWINS = [
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_padded.dcm",
]


@pytest.fixture(scope="module")
def mr_small():
    path = pydicom_file("MR_small.dcm")
    return load([path]), read(path)


def test_mr_small_against_pydicom_and_geometry(mr_small):
    volume, ds = mr_small
    assert volume.array.shape == (1, 64, 64, 1) and volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.array[0, :, :, 0], pixels_of(ds).T)
    assert_in_plane_affine(volume.affine, geometry_affine(ds))


@pytest.mark.parametrize("name", MR_TWINS)
def test_lossless_twins_equal_mr_small_exactly(name, mr_small):
    reference, _ = mr_small
    volume = load([pydicom_file(name)])
    assert volume.array.dtype == reference.array.dtype
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_array_equal(volume.affine, reference.affine)
    assert volume.meta["slice_spacing"] == reference.meta["slice_spacing"]


DECODED_BY_BACKENDS = [
    "image_dfl.dcm",  # deflated
    "JPGExtended.dcm",  # JPEG extended 12-bit
    "SC_rgb_jpeg.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_jpeg_lossy_gdcm.dcm",
    "SC_rgb_jpeg_app14_dcmd.dcm",
    "SC_rgb_jpeg_dcmd.dcm",
    "SC_jpeg_no_color_transform.dcm",
    "SC_rgb_small_odd_jpeg.dcm",
    "JPEGLSNearLossless_08.dcm",
    "JPEGLSNearLossless_16.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_jls_lossy_sample.dcm",
    "JPEG2000.dcm",
    "693_J2KI.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "GDCMJ2K_TextGBR.dcm",
    "examples_jpeg2k.dcm",
]


@pytest.mark.parametrize("name", DECODED_BY_BACKENDS)
def test_compressed_and_deflated_files_match_pydicom(name):
    path = pydicom_file(name)
    ds = read(path)
    volume = load([path])
    assert_matches_pydicom(volume.array, expected_layout(ds))
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        # auto dtype: exact integers when the rescale is integral
        slope = float(ds.get("RescaleSlope", 1) or 1)
        assert volume.array.dtype in (np.int16, np.int32) if slope == 1 else volume.array.dtype == np.float32
    assert volume.meta["transfer_syntax"] == str(ds.file_meta.TransferSyntaxUID)


@pytest.mark.parametrize("name", ["693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_j2k_bit_depth_quirks_keep_pydicom_values(name):
    """693: J2K precision differs from BitsStored; 1149: unsigned J2K data with PixelRepresentation 1."""
    ds = read(pydicom_file(name))
    volume = load([pydicom_file(name)])
    assert volume.array.dtype == np.int16
    expected = real_world(ds, pixels_of(ds))
    np.testing.assert_array_equal(volume.array[0, :, :, 0], expected.T)
    assert volume.array.min() < 0  # signed data stays signed
    assert_in_plane_affine(volume.affine, geometry_affine(ds))


def _undecodable(name: str) -> Path:
    path = pydicom_file(name)
    try:
        pixels_of(read(path))
    except Exception:  # noqa: BLE001
        return path
    pytest.skip(f"pydicom's backends here decode {name}")


@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"])
def test_undecodable_pixel_data_is_a_clear_error(name):
    path = _undecodable(name)
    with pytest.raises((PixelError, SeriesError)) as info:
        load([path])
    assert path.name in str(info.value)


# --------------------------------------------------------------------------- 3. CT_small


def test_ct_small_values_and_affine():
    path = pydicom_file("CT_small.dcm")
    ds = read(path)
    volume = load([path])
    assert volume.array.shape == (1, 128, 128, 1)
    assert volume.array.dtype == np.int16  # slope 1, whole intercept: exact integers
    expected = pixels_of(ds).astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume.array[0, :, :, 0], expected.T)
    assert volume.array.min() == expected.min() < 0
    assert_in_plane_affine(volume.affine, geometry_affine(ds))
    # The written-out numbers, for the record: axial, 0.661468 mm pixels, LPS origin flipped to RAS.
    np.testing.assert_allclose(volume.affine[:3, 3], [158.135803, 179.035797, -75.699997], atol=1e-9)
    np.testing.assert_allclose(np.diag(volume.affine)[:2], [-0.661468, -0.661468], atol=1e-12)
    assert volume.meta["modality"] == "CT" and volume.meta["orientation"] == "axial"


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm", "MR_small_jp2klossless.dcm"])
def test_single_files_agree_with_simpleitk(name):
    sitk = pytest.importorskip("SimpleITK")
    path = pydicom_file(name)
    image = sitk.ReadImage(str(path))
    theirs = sitk.GetArrayFromImage(image)  # (k, j, i)
    volume = load([path])
    np.testing.assert_array_equal(volume.array[0].transpose(2, 1, 0), theirs)
    assert_in_plane_affine(volume.affine, sitk_affine(image))


def test_real_ct_series_agrees_with_simpleitk_in_any_file_order():
    """dicomdirtests' CT5N: five real axial slices whose InstanceNumber runs against z."""
    sitk = pytest.importorskip("SimpleITK")
    folder = DICOMDIR_TESTS / "98892001" / "CT5N"
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    image = reader.Execute()
    files = sorted(folder.iterdir())
    rng = np.random.default_rng(3)
    for order in (files, files[::-1], list(rng.permutation(files))):
        volume = load(order)
        assert volume.array.shape == (1, 16, 16, 5)
        np.testing.assert_array_equal(volume.array[0].transpose(2, 1, 0), sitk.GetArrayFromImage(image))
        np.testing.assert_allclose(volume.affine, sitk_affine(image), atol=1e-6)
    # and by the maths: first slice is the most inferior one, step = position difference
    datasets = sorted((read(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
    step = np.subtract([float(v) for v in datasets[1].ImagePositionPatient], [float(v) for v in datasets[0].ImagePositionPatient])
    np.testing.assert_allclose(volume.affine, geometry_affine(datasets[0], step), atol=1e-9)
    for k, ds in enumerate(datasets):
        np.testing.assert_array_equal(volume.array[0, :, :, k], real_world(ds, pixels_of(ds)).T)
    assert volume.meta["slice_spacing"] == pytest.approx(2.5)


# --------------------------------------------------------------------------- 4. RT dose


def _rtdose_expectations(ds):
    pa = pixels_of(ds)  # (frames, rows, cols)
    offsets = np.array([float(v) for v in ds.GridFrameOffsetVector])
    return pa, offsets


def test_rtdose_multiframe():
    path = pydicom_file("rtdose.dcm")
    ds = read(path)
    pa, offsets = _rtdose_expectations(ds)
    volume = load([path])
    frames = int(ds.NumberOfFrames)
    assert volume.array.shape == (1, int(ds.Columns), int(ds.Rows), frames)
    assert volume.array.dtype == np.float32  # DoseGridScaling is fractional
    order = np.argsort(offsets)  # along the normal (0, 0, 1): ascending offsets
    expected = pa[order].astype(np.float64) * float(ds.DoseGridScaling)
    np.testing.assert_allclose(volume.array[0], expected.transpose(2, 1, 0), rtol=1e-6)
    steps = np.diff(offsets[order])
    assert volume.meta["slice_spacing"] == pytest.approx(float(np.median(steps)))
    step = np.cross(*np.split(np.array([float(v) for v in ds.ImageOrientationPatient]), 2)) * steps[0]
    np.testing.assert_allclose(volume.affine, geometry_affine(ds, step), atol=1e-9)
    assert volume.meta["modality"] == "RTDOSE"


@pytest.mark.parametrize("name", ["rtdose_rle.dcm", "rtdose_expb.dcm"])
def test_rtdose_twins_equal_exactly(name):
    reference = load([pydicom_file("rtdose.dcm")])
    volume = load([pydicom_file(name)])
    assert volume.array.dtype == reference.array.dtype
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_array_equal(volume.affine, reference.affine)


def test_rtdose_frames_are_ordered_by_position_not_storage(tmp_path):
    """The same dose with a descending offset vector: frame 0 is now the most superior."""
    ds = read(pydicom_file("rtdose.dcm"))
    pa, offsets = _rtdose_expectations(ds)
    ds.GridFrameOffsetVector = [-v for v in offsets]
    path = tmp_path / "rtdose_descending.dcm"
    ds.save_as(path)
    volume = load([path])
    expected = pa[::-1].astype(np.float64) * float(ds.DoseGridScaling)
    np.testing.assert_allclose(volume.array[0], expected.transpose(2, 1, 0), rtol=1e-6)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    lowest = ipp + np.array([0.0, 0.0, -offsets[-1]])
    np.testing.assert_allclose(volume.affine, geometry_affine(ds, np.array([0.0, 0.0, 5.0]), origin=lowest), atol=1e-9)


def test_single_frame_rtdose_is_scaled_to_gray():
    path = pydicom_file("rtdose_1frame.dcm")
    ds = read(path)
    volume = load([path])
    expected = pixels_of(ds).astype(np.float64) * float(ds.DoseGridScaling)
    np.testing.assert_allclose(volume.array[0, :, :, 0], expected.T, rtol=1e-6)


# --------------------------------------------------------------------------- 5. colour and 2D

COLOUR = [
    "SC_rgb.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_rle_16bit_2frame.dcm",
    "SC_rgb_rle_32bit_2frame.dcm",
    "SC_rgb_small_odd.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "ExplVR_BigEnd.dcm",
    "examples_rgb_color.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "SC_rgb_dcmtk_+eb+cr.dcm",
    "examples_ybr_color.dcm",
]


@pytest.mark.parametrize("name", COLOUR)
def test_colour_images_match_pydicom(name):
    path = pydicom_file(name)
    ds = read(path)
    pa = pixels_of(ds)
    volume = load([path])
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    assert volume.array.shape == ((3, cols, rows, frames) if frames > 1 else (3, cols, rows))
    np.testing.assert_array_equal(volume.array, expected_layout(ds))
    assert volume.array.dtype == pa.dtype.newbyteorder("=")
    if frames > 1:
        np.testing.assert_array_equal(volume.array[:, :, :, 1], pa[1].transpose(2, 1, 0))


def test_grey_2d_image_layout_and_spacing():
    """JPGExtended (NM, no patient position): a (1, columns, rows) image with its pixel size."""
    path = pydicom_file("JPGExtended.dcm")
    ds = read(path)
    volume = load([path])
    assert volume.array.shape == (1, int(ds.Columns), int(ds.Rows))
    np.testing.assert_array_equal(volume.array[0], pixels_of(ds).T)
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    np.testing.assert_allclose(np.abs(np.diag(volume.affine)[:2]), [column_spacing, row_spacing])


# --------------------------------------------------------------------------- 6. dicomdirtests


@pytest.fixture(scope="module")
def dicomdir_discovery():
    skipped: Counter = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = discover_series(DICOMDIR_TESTS, None, skipped)
    return series, skipped


def test_dicomdir_folder_discovery(dicomdir_discovery):
    series, skipped = dicomdir_discovery
    files = [p for p in DICOMDIR_TESTS.rglob("*") if p.is_file()]
    index_files = [p for p in files if p.name.upper().startswith("DICOMDIR")]
    assert len(index_files) == 8
    dicomdir_counts = {reason: n for reason, n in skipped.items() if "DICOMDIR" in reason}
    assert sum(dicomdir_counts.values()) == len(index_files), skipped
    assert skipped["not DICOM"] == sum(1 for p in files if p.name.upper().startswith("README"))
    tiny_alpha = [p for p in (DICOMDIR_TESTS / "TINY_ALPHA").rglob("IM*")]
    assert sum(n for reason, n in skipped.items() if "no pixel data" in reason) == len(tiny_alpha) == 50
    for reason in skipped:  # reasons only: no file or patient names
        assert "/" not in reason and "CompressedSamples" not in reason
    modalities = Counter(s.modality for s in series)
    assert set(modalities) == {"CT", "CR", "MR"}
    assert modalities["CR"] == 3
    used = [h.path for s in series for h in s.headers]
    assert len(used) == len(set(used))
    assert not any(p.name.upper().startswith("DICOMDIR") or "TINY_ALPHA" in p.parts for p in used)
    ct5n = [s for s in series if s.first.path.parent.name == "CT5N"]
    assert len(ct5n) == 1 and ct5n[0].slice_count == 5 and ct5n[0].orientation == "axial"
    mr700 = [s for s in series if s.first.path.parent.name == "MR700"]
    assert len(mr700) == 7  # seven radial projections, each its own orientation


def test_dicomdir_folder_every_series_loads_or_is_refused_clearly(dicomdir_discovery):
    series, _ = dicomdir_discovery
    loaded = refused = 0
    for item in series:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                volume = load_volume([h.path for h in item.headers], DicomOptions(), item.frames, item.headers)
        except SeriesError as exc:
            refused += 1
            assert "missing slice" in str(exc) and "irregular: resample" in str(exc)  # CT2: slices 18 and 180-182
            continue
        loaded += 1
        assert np.isfinite(volume.array.astype(np.float64)).all()
        assert np.isfinite(volume.affine).all() and abs(np.linalg.det(volume.affine[:3, :3])) > 0
        ds = read(item.first.path)
        if len(item.headers) == 1 and ds.PhotometricInterpretation == "MONOCHROME2":
            assert_matches_pydicom(volume.array, expected_layout(ds))
    assert refused == 1 and loaded == len(series) - 1


def test_cr_monochrome1_is_inverted_and_rescaled(dicomdir_discovery):
    """The CRs are MONOCHROME1, 12-bit, slope 0.684: inverted to the MONOCHROME2 convention."""
    path = DICOMDIR_TESTS / "77654033" / "CR1" / "6154"
    ds = read(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    volume = load([path])
    stored = pixels_of(ds).astype(np.float64)
    inverted = (2 ** int(ds.BitsStored) - 1) - stored
    np.testing.assert_allclose(volume.array[0], real_world(ds, inverted).T, rtol=1e-6)
    assert "MONOCHROME1" in volume.meta["photometric"]


def test_dicomdir_folder_every_file_is_accounted_for(dicomdir_discovery):
    series, skipped = dicomdir_discovery
    files = [p for p in DICOMDIR_TESTS.rglob("*") if p.is_file()]
    used = {h.path for s in series for h in s.headers}
    dropped: dict[int, Counter] = {id(s.dropped): s.dropped for s in series}  # one Counter per original series
    accounted = sum(skipped.values()) + len(used) + sum(sum(c.values()) for c in dropped.values())
    assert accounted == len(files), (len(files), accounted, skipped)


# --------------------------------------------------------------------------- 7. nibabel's DICOM files


def _nibabel_dicoms() -> list[Path]:
    root = _nibabel_dir()
    return sorted(list((root / "tests" / "data").glob("*.dcm")) + list((root / "nicom" / "tests" / "data").glob("*.dcm")))


NIBABEL_DICOMS = _nibabel_dicoms()


@pytest.mark.parametrize("path", NIBABEL_DICOMS, ids=[str(p.relative_to(_nibabel_dir())) for p in NIBABEL_DICOMS])
def test_nibabel_dicom_files(path):
    ds = read(path)
    if "PixelData" not in ds:  # csa_slice_norm.dcm: a header-only file
        skipped: Counter = Counter()
        assert discover_series([path], None, skipped) == []
        assert sum(n for reason, n in skipped.items() if "no pixel data" in reason) == 1
        return
    volume = load([path])
    assert_matches_pydicom(volume.array, expected_layout(ds))
    slope = float(ds.get("RescaleSlope", 1) or 1)
    assert volume.array.dtype == (np.float32 if slope != 1 else np.int16)
    assert_in_plane_affine(volume.affine, geometry_affine(ds))
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.ReadImage(str(path))
    assert_in_plane_affine(volume.affine, sitk_affine(image), atol=1e-5)


def test_nibabel_siemens_pair_is_one_series():
    """0.dcm and 1.dcm: two slices of one Siemens series, 3 mm apart in z with a slightly oblique
    slice plane. Positions are 0.3 degrees off the normal, which the loader reports as tilt."""
    folder = _nibabel_dir() / "tests" / "data"
    skipped: Counter = Counter()
    series = discover_series(folder, None, skipped)
    assert len(series) == 1 and series[0].modality == "MR" and series[0].slice_count == 2
    assert skipped["not DICOM"] > 0  # the NIfTI and other test files around them
    paths = [folder / "0.dcm", folder / "1.dcm"]
    first, second = (read(p) for p in paths)
    try:
        volume = load(paths[::-1])
        np.testing.assert_array_equal(volume.array[0, :, :, 1], pixels_of(second).T)
    except SeriesError as exc:
        assert "tilt" in str(exc)
        volume = load(paths[::-1], irregular="resample")
        assert any("tilt" in w for w in volume.warnings)
        b = volume.array[0, :, :, 1].astype(np.float64).ravel()
        assert np.corrcoef(b, pixels_of(second).T.astype(np.float64).ravel())[0, 1] > 0.999
    assert volume.array.shape == (1, 256, 256, 2)
    np.testing.assert_array_equal(volume.array[0, :, :, 0], pixels_of(first).T)  # the lower slice first
    assert_in_plane_affine(volume.affine, geometry_affine(first))
    assert np.linalg.norm(volume.affine[:3, 2]) == pytest.approx(3.0, abs=1e-3)


# --------------------------------------------------------------------------- 8. commands


@pytest.fixture
def two_series(tmp_path) -> Path:
    folder = tmp_path / "study"
    (folder / "a").mkdir(parents=True)
    shutil.copy(pydicom_file("CT_small.dcm"), folder / "a" / "IM0001")
    shutil.copy(pydicom_file("MR_small_RLE.dcm"), folder / "IM0002")
    return folder


def test_info_hides_phi_unless_asked(cli, two_series):
    names = [str(read(p, stop_before_pixels=True).PatientName) for p in sorted(two_series.rglob("IM*"))]
    assert names and all(names)
    result = cli("info", two_series)
    assert result.exit_code == 0, result.stderr
    for name in names:
        assert name not in result.stdout and name not in result.stderr
    assert "CT" in result.stdout and "MR" in result.stdout and "128x128x1" in result.stdout and "RLE" in result.stdout
    shown = cli("info", two_series, "--show-phi")
    assert shown.exit_code == 0
    for name in names:
        assert name in shown.stdout
    as_json = cli("info", two_series, "--json")
    assert as_json.exit_code == 0
    data = json.loads(as_json.stdout)
    assert sorted(row["modality"] for row in data["series"]) == ["CT", "MR"]
    assert not any(name in as_json.stdout for name in names)
    assert all(row["case_id"].startswith("case-") for row in data["series"])


def test_convert_folder_writes_one_nifti_per_series(cli, two_series, tmp_path):
    import nibabel as nib

    out = tmp_path / "nifti"
    out.mkdir()
    result = cli("convert", two_series, out)
    assert result.exit_code == 0, result.stderr
    written = sorted(out.glob("*.nii.gz"))
    assert [re.fullmatch(r"case-[0-9a-f]{12}_(CT|MR)\.nii\.gz", p.name) is not None for p in written] == [True, True]
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".json") == sorted(p.name.replace(".nii.gz", ".json") for p in written)
    by_modality = {p.name.split("_")[1].split(".")[0]: p for p in written}
    for modality, source in (("CT", two_series / "a" / "IM0001"), ("MR", two_series / "IM0002")):
        image = nib.load(by_modality[modality])
        expected = load([source])
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), expected.array[0])
        np.testing.assert_allclose(image.affine, expected.affine, atol=1e-4)
        assert int(image.header["sform_code"]) > 0 and int(image.header["qform_code"]) > 0
    for path in written:  # no patient name in the output files
        assert b"CompressedSamples" not in nib.load(path).header.binaryblock


def test_convert_single_file_output(cli, two_series, tmp_path):
    import nibabel as nib

    target = tmp_path / "ct.nii.gz"
    result = cli("convert", two_series / "a", target)
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(np.asanyarray(nib.load(target).dataobj), load([two_series / "a" / "IM0001"]).array[0])
    several = cli("convert", two_series, tmp_path / "both.nii.gz")
    assert several.exit_code == 2 and len(several.error_lines) == 1 and "--series" in several.stderr


def test_commands_on_a_folder_without_dicom(cli, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here\n")
    shutil.copy(PYDICOM_DIR / "README.txt", folder / "README")
    for args in (("convert", folder, tmp_path / "out"), ("info", folder)):
        result = cli(*args)
        assert result.exit_code == 2
        assert len(result.stderr.strip().splitlines()) == 1 and len(result.error_lines) == 1
        assert "no DICOM" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_convert_goes_on_past_an_undecodable_series(cli, tmp_path):
    bad = _undecodable("JPEG-lossy.dcm")
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(bad, folder / "a_nm.dcm")
    shutil.copy(pydicom_file("CT_small.dcm"), folder / "b_ct.dcm")
    out = tmp_path / "out"
    result = cli("convert", folder, out)
    assert result.exit_code == 1, result.stderr
    assert "internal error" not in result.stderr
    assert sorted(p.name.split("_", 1)[1] for p in out.iterdir()) == ["CT.json", "CT.nii.gz"]  # the failed series left nothing


# --------------------------------------------------------------------------- 9. voxpipe run

DICOM_TO_NIFTI = """\
version: 1
name: dicom-to-nifti
device: cpu
stages:
  - use: load.dicom
  - use: write.nifti
"""


def test_run_dicom_to_nifti(cli, tmp_path, write_config):
    import nibabel as nib

    folder = tmp_path / "input"
    folder.mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), folder / "1")
    shutil.copy(pydicom_file("MR_small.dcm"), folder / "2")
    (folder / "notes.txt").write_text("a stray text file\n")
    out = tmp_path / "out"
    result = cli("run", write_config(DICOM_TO_NIFTI), "-i", folder, "-o", out)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["ok"] == 2 and manifest["summary"]["failed"] == 0
    assert [c["status"] for c in manifest["cases"]] == ["ok", "ok"]
    assert sum(manifest["discovery"]["skipped_files"].values()) == 1
    assert manifest["discovery"]["skipped_files"].get("not DICOM") == 1
    written = {}
    for case in manifest["cases"]:
        image = nib.load(out / case["case_id"] / "image.nii.gz")
        written[image.shape] = image
    for source in (folder / "1", folder / "2"):
        expected = load([source])
        image = written[expected.array.shape[1:]]
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), expected.array[0])
        np.testing.assert_allclose(image.affine, expected.affine, atol=1e-4)
    text = (out / "manifest.json").read_text()
    assert "CompressedSamples" not in text and str(folder) not in text


# --------------------------------------------------------------------------- bugs found on real data (fixed; kept as regression tests)


def test_float_pixel_data_is_read_as_float(tmp_path):
    """MR_small with its pixels replaced by Float Pixel Data, as parametric maps store them."""
    ds = read(pydicom_file("MR_small.dcm"))
    values = pixels_of(ds).astype(np.float32) / 7.0
    del ds.PixelData
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation", "SmallestImagePixelValue", "LargestImagePixelValue"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()
    path = tmp_path / "float.dcm"
    ds.save_as(path)
    np.testing.assert_array_equal(pixels_of(read(path)), values)  # pydicom reads it back
    volume = load([path])
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array[0, :, :, 0], values.T, rtol=1e-6)

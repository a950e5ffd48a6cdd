"""DICOM series assembly on synthetic series with known ground truth, one rule per test.

The expected affine is computed here from first principles (not with VoxPipe code):
array axes are (column i, row j, slice k); i runs along the IOP row cosine with the column
spacing (PixelSpacing[1]), j along the column cosine with the row spacing (PixelSpacing[0]),
k along the stack from the lowest position on the normal; DICOM's LPS becomes RAS by
negating x and y.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pydicom
import pytest

from voxpipe_plugins.io_dicom.loader import DicomOptions, SeriesError, discover_series, load_volume
from voxpipe_plugins.io_dicom.series import Selection
from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, load_template, write_enhanced, write_series

warnings.simplefilter("ignore")
SHAPE = (10, 24, 20)  # slices, rows, columns


def ras_affine(row_dir, col_dir, pixel_spacing, step, origin):
    """The DICOM geometry maths, written out."""
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(row_dir, float) * pixel_spacing[1]
    affine[:3, 1] = np.asarray(col_dir, float) * pixel_spacing[0]
    affine[:3, 2] = np.asarray(step, float)
    affine[:3, 3] = origin
    affine[:2, :] *= -1
    return affine


def load_one(folder, options=None):
    [series] = discover_series(folder)
    return load_volume([h.path for h in series.headers], options or DicomOptions(), series.frames)


def as_ijk(volume_krc):
    return volume_krc.transpose(2, 1, 0)


@pytest.fixture
def volume():
    return ct_like_volume(SHAPE, seed=1)


def test_shuffled_names_and_reversed_instance_numbers(tmp_path, volume):
    spec = SeriesSpec(shuffle_names=True, reverse_instance_numbers=True)
    write_series(tmp_path, volume, spec)
    loaded = load_one(tmp_path)
    np.testing.assert_array_equal(loaded.array[0], as_ijk(volume))
    assert loaded.array.dtype == np.int16
    normal = np.cross(spec.row_dir, spec.col_dir)
    np.testing.assert_allclose(
        loaded.affine, ras_affine(spec.row_dir, spec.col_dir, spec.spacing[:2], normal * spec.spacing[2], spec.origin), atol=1e-5
    )


def test_matches_simpleitk(tmp_path, volume):
    import SimpleITK as sitk

    spec = SeriesSpec(row_dir=(0.0, 1.0, 0.0), col_dir=(0.0, 0.0, -1.0), spacing=(0.6, 0.9, 3.0))  # sagittal
    write_series(tmp_path, volume, spec)
    loaded = load_one(tmp_path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    np.testing.assert_array_equal(loaded.array[0], sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    np.testing.assert_allclose(loaded.affine, np.diag([-1, -1, 1, 1.0]) @ lps, atol=1e-4)


@pytest.mark.parametrize(
    "row_dir, col_dir, label",
    [
        ((1, 0, 0), (0, 1, 0), "axial"),
        ((1, 0, 0), (0, 0, -1), "coronal"),
        ((0, 1, 0), (0, 0, -1), "sagittal"),
        ((np.cos(0.5), np.sin(0.5), 0), (0, 0.6, -0.8), "oblique"),
    ],
)
def test_orientations_and_non_square_pixels(tmp_path, volume, row_dir, col_dir, label):
    row = np.asarray(row_dir, float) / np.linalg.norm(row_dir)
    col = np.asarray(col_dir, float)
    col = col - (col @ row) * row
    col /= np.linalg.norm(col)
    spec = SeriesSpec(row_dir=tuple(row), col_dir=tuple(col), spacing=(0.5, 0.8, 2.0), origin=(10.0, -20.0, 30.0))
    write_series(tmp_path, volume, spec)
    loaded = load_one(tmp_path)
    assert loaded.meta["orientation"] == label
    np.testing.assert_array_equal(loaded.array[0], as_ijk(volume))
    expected = ras_affine(row, col, (0.5, 0.8), np.cross(row, col) * 2.0, spec.origin)
    np.testing.assert_allclose(loaded.affine, expected, atol=1e-5)
    # non-square pixels: columns 0.8 mm apart along i, rows 0.5 mm apart along j
    np.testing.assert_allclose(np.linalg.norm(loaded.affine[:3, :3], axis=0), [0.8, 0.5, 2.0], atol=1e-5)


def test_slices_stacked_against_the_normal_are_ordered_by_position(tmp_path, volume):
    spec = SeriesSpec(slice_dir=tuple(-np.cross((1, 0, 0), (0, 1, 0))))  # each slice lower than the last
    write_series(tmp_path, volume, spec)
    loaded = load_one(tmp_path)
    np.testing.assert_array_equal(loaded.array[0], as_ijk(volume[::-1]))  # lowest position first
    np.testing.assert_allclose(loaded.affine[:3, 3], [-spec.origin[0], -spec.origin[1], spec.origin[2] - 2.5 * 9], atol=1e-4)


def test_per_slice_rescale_gives_float(tmp_path, volume):
    slopes = np.linspace(0.5, 2.0, SHAPE[0])
    intercepts = np.linspace(-1024, -1000, SHAPE[0])
    write_series(tmp_path, volume, SeriesSpec(slope=tuple(slopes), intercept=tuple(intercepts)))
    loaded = load_one(tmp_path)
    assert loaded.array.dtype == np.float32 and loaded.meta["rescale"] == "per-slice slope/intercept"
    np.testing.assert_allclose(loaded.array[0], as_ijk(volume), atol=slopes.max() / 2 + 1e-3)


def test_fractional_slope_gives_float_and_auto_keeps_integers(tmp_path, volume):
    write_series(tmp_path / "frac", volume, SeriesSpec(slope=0.5, intercept=-1024))
    assert load_one(tmp_path / "frac").array.dtype == np.float32
    write_series(tmp_path / "int", volume, SeriesSpec(slope=1, intercept=-1024))
    assert load_one(tmp_path / "int").array.dtype == np.int16
    assert load_one(tmp_path / "int", DicomOptions(dtype="float32")).array.dtype == np.float32


def test_signed_12_bit_with_unused_high_bits(tmp_path, volume):
    """Two's complement in 12 bits, the 4 high bits zero: readers must sign-extend."""
    spec = SeriesSpec(bits_stored=12, signed=True, intercept=0.0)
    small = np.clip(volume, -2000, 2000)
    paths = write_series(tmp_path, small, spec)
    for path in paths:  # clear the high bits the writer sign-extended
        ds = pydicom.dcmread(path)
        raw = np.frombuffer(ds.PixelData, dtype="<u2") & 0x0FFF
        ds.PixelData = raw.astype("<u2").tobytes()
        ds.save_as(path)
    loaded = load_one(tmp_path)
    np.testing.assert_array_equal(loaded.array[0], as_ijk(small))
    assert loaded.array.min() < 0


def test_unsigned_12_bit_masks_garbage_high_bits(tmp_path, volume):
    spec = SeriesSpec(bits_stored=12, signed=False, intercept=-1024.0)
    clean = np.clip(volume, -1024, 3000)
    paths = write_series(tmp_path, clean, spec)
    for path in paths:
        ds = pydicom.dcmread(path)
        raw = np.frombuffer(ds.PixelData, dtype="<u2") | 0xB000  # overlay bits left in the high nibble
        ds.PixelData = raw.astype("<u2").tobytes()
        ds.save_as(path)
    np.testing.assert_array_equal(load_one(tmp_path).array[0], as_ijk(clean))


def test_monochrome1_is_inverted_and_recorded(tmp_path, volume):
    spec = SeriesSpec(monochrome1=True, bits_stored=16, signed=False, intercept=-1024.0)
    volume = np.clip(volume, -1024, 3000)
    write_series(tmp_path, volume, spec)
    loaded = load_one(tmp_path)
    np.testing.assert_array_equal(loaded.array[0], as_ijk(volume))
    assert "MONOCHROME1" in loaded.meta["photometric"] and "MONOCHROME2" in loaded.meta["photometric"]


def test_duplicates_localizers_dicomdir_and_stray_files(tmp_path, volume):
    spec = SeriesSpec()
    paths = write_series(tmp_path / "study", volume, spec)
    shutil.copy(paths[0], tmp_path / "study" / "copy-of-a-slice.dcm")
    localizer = SeriesSpec(
        series_uid=spec.series_uid,
        study_uid=spec.study_uid,
        frame_uid=spec.frame_uid,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        row_dir=(0, 1, 0),
        col_dir=(0, 0, -1),
        shuffle_names=False,
    )
    write_series(tmp_path / "study" / "scout", volume[:1], localizer)
    from pydicom.data import get_testdata_file

    dicomdir = get_testdata_file("DICOMDIR", download=False)
    shutil.copy(dicomdir, tmp_path / "study" / "DICOMDIR")
    (tmp_path / "study" / "notes.txt").write_text("not an image")
    (tmp_path / "study" / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    from collections import Counter

    skipped = Counter()
    [series] = discover_series(tmp_path / "study", skipped=skipped)
    assert series.dropped == {"duplicate instance": 1, "localizer or scout image": 1}
    assert skipped["DICOMDIR (index file)"] == 1 and skipped["not DICOM"] == 2
    loaded = load_volume([h.path for h in series.headers], DicomOptions())
    np.testing.assert_array_equal(loaded.array[0], as_ijk(volume))


def test_two_series_and_two_echoes_become_separate_cases(tmp_path, volume):
    write_series(tmp_path / "one" / "a", volume, SeriesSpec(seed=1))
    write_series(tmp_path / "one" / "b", volume + 5, SeriesSpec(seed=2))
    assert len(discover_series(tmp_path / "one")) == 2
    echoes = tmp_path / "echoes"
    uid = pydicom.uid.generate_uid()
    write_series(echoes / "e1", volume, SeriesSpec(series_uid=uid, echo_number=1, modality="MR", seed=3))
    write_series(echoes / "e2", volume + 7, SeriesSpec(series_uid=uid, echo_number=2, modality="MR", seed=4))
    found = discover_series(echoes)
    assert len(found) == 2 and {s.first.get("EchoNumbers") for s in found} == {1, 2}
    for series in found:
        assert len(series.headers) == SHAPE[0]


def test_mixed_matrix_sizes_split(tmp_path, volume):
    spec = SeriesSpec()
    write_series(tmp_path / "a", volume, spec)
    write_series(tmp_path / "b", volume[:, :12, :10], SeriesSpec(series_uid=spec.series_uid, origin=(0, 0, 100)))
    found = discover_series(tmp_path)
    assert sorted(len(s.headers) for s in found) == [SHAPE[0], SHAPE[0]]


def test_missing_slice_refused_or_resampled(tmp_path, volume):
    write_series(tmp_path, volume, SeriesSpec(), skip=[4])
    with pytest.raises(SeriesError, match=r"1 missing slice\(s\).*irregular: resample"):
        load_one(tmp_path)
    loaded = load_one(tmp_path, DicomOptions(irregular="resample"))
    assert loaded.array.shape[-1] == SHAPE[0]
    filled = loaded.array[0][..., 4]
    np.testing.assert_allclose(filled, (as_ijk(volume)[..., 3] + as_ijk(volume)[..., 5]) / 2, atol=1e-3)
    assert loaded.warnings and "resampled" in loaded.warnings[0]


def test_uneven_spacing_refused_or_resampled(tmp_path):
    ramp = np.broadcast_to(np.arange(8, dtype=float)[:, None, None] * 10, (8, 16, 12)).copy()
    spec = SeriesSpec(spacing=(1, 1, 2.0), intercept=0.0)
    paths = write_series(tmp_path, ramp, spec)
    # move slice positions: 0, 2, 4, 7, 9, 11, 13, 16 mm (uneven); values follow position (10 per slice = 5 per mm)
    positions = [0, 2, 4, 7, 9, 11, 13, 16]
    for path in paths:
        ds = pydicom.dcmread(path)
        k = int(ds.InstanceNumber) - 1
        z = spec.origin[2] + positions[k]
        ds.ImagePositionPatient = [spec.origin[0], spec.origin[1], z]
        ds.PixelData = np.full((16, 12), round(positions[k] * 5), dtype="<i2").tobytes()
        ds.save_as(path)
    with pytest.raises(SeriesError, match="non-uniform slice spacing"):
        load_one(tmp_path)
    loaded = load_one(tmp_path, DicomOptions(irregular="resample"))
    spacing = loaded.affine[2, 2]
    z_values = loaded.array[0, 0, 0, :]
    expected = np.arange(len(z_values)) * spacing * 5  # linear in position
    np.testing.assert_allclose(z_values, expected, atol=0.6)


def test_gantry_tilt_refused_or_resampled_to_true_positions(tmp_path):
    tilt = np.radians(15)
    spec = SeriesSpec(spacing=(1.0, 1.0, 2.0), slice_dir=(0.0, np.sin(tilt), np.cos(tilt)), intercept=0.0, origin=(0, 0, 0))
    volume = np.zeros((12, 40, 20))
    volume[6, 20, 10] = 1000  # one bright voxel at a known place
    write_series(tmp_path, volume, spec)
    with pytest.raises(SeriesError, match="gantry tilt of 15.0"):
        load_one(tmp_path)
    loaded = load_one(tmp_path, DicomOptions(irregular="resample"))
    where = np.unravel_index(np.argmax(loaded.array[0]), loaded.array[0].shape)
    world = loaded.affine @ np.array([*where, 1.0])
    true_lps = (
        np.asarray(spec.origin) + 10 * np.asarray(spec.row_dir) + 20 * np.asarray(spec.col_dir) + spec.position(6) - np.asarray(spec.origin)
    )
    np.testing.assert_allclose(world[:3], [-true_lps[0], -true_lps[1], true_lps[2]], atol=1.5)
    np.testing.assert_allclose(loaded.affine[:3, 2], [0, 0, np.cos(tilt) * 2.0], atol=1e-4), "resampled grid is orthogonal"


def test_enhanced_multiframe_with_shuffled_frames(tmp_path, volume):
    spec = SeriesSpec(row_dir=(1, 0, 0), col_dir=(0, 0, -1), spacing=(0.7, 0.9, 1.5))
    order = np.random.default_rng(5).permutation(SHAPE[0])
    path = write_enhanced(tmp_path / "enhanced.dcm", volume, spec, frame_order=order)
    [series] = discover_series(tmp_path)
    loaded = load_volume([path], DicomOptions(), series.frames)
    np.testing.assert_array_equal(loaded.array[0], as_ijk(volume))
    normal = np.cross(spec.row_dir, spec.col_dir)
    np.testing.assert_allclose(loaded.affine, ras_affine(spec.row_dir, spec.col_dir, (0.7, 0.9), normal * 1.5, spec.origin), atol=1e-5)


@pytest.mark.parametrize(
    "syntax",
    [
        pydicom.uid.RLELossless,
        pydicom.uid.JPEGLSLossless,
        pydicom.uid.JPEG2000Lossless,
        pydicom.uid.DeflatedExplicitVRLittleEndian,
        pydicom.uid.ImplicitVRLittleEndian,
        pydicom.uid.ExplicitVRBigEndian,
    ],
)
def test_lossless_syntaxes_give_exact_values(tmp_path, syntax):
    volume = ct_like_volume((4, 64, 64), seed=2)  # JPEG 2000 needs tiles large enough for its resolutions
    reference = SeriesSpec()
    write_series(tmp_path / "plain", volume, reference)
    paths = write_series(tmp_path / "coded", volume, SeriesSpec(seed=9))
    for path in paths:
        ds = pydicom.dcmread(path)
        if syntax in (pydicom.uid.RLELossless, pydicom.uid.JPEGLSLossless, pydicom.uid.JPEG2000Lossless):
            ds.compress(syntax)
            ds.save_as(path, enforce_file_format=True)
            continue
        if syntax == pydicom.uid.ExplicitVRBigEndian:
            ds.PixelData = np.frombuffer(ds.PixelData, "<i2").astype(">i2").tobytes()
        ds.file_meta.TransferSyntaxUID = syntax
        implicit = syntax == pydicom.uid.ImplicitVRLittleEndian
        little = syntax != pydicom.uid.ExplicitVRBigEndian
        pydicom.dcmwrite(path, ds, implicit_vr=implicit, little_endian=little, force_encoding=True)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == syntax
    plain, coded = load_one(tmp_path / "plain"), load_one(tmp_path / "coded")
    np.testing.assert_array_equal(coded.array, plain.array)
    np.testing.assert_allclose(coded.affine, plain.affine)


@pytest.mark.parametrize(
    "selection, expected",
    [
        (Selection(modalities=("CT",)), {"CT"}),
        (Selection(modalities=("MR",)), {"MR"}),
        (Selection(description="(?i)^axial"), {"CT"}),
        (Selection(min_slices=SHAPE[0] + 1), {"MR"}),
        (Selection(orientations=("sagittal",)), {"MR"}),
    ],
)
def test_series_selection(tmp_path, volume, selection, expected):
    write_series(tmp_path / "ct", volume, SeriesSpec(modality="CT", series_description="Axial 2.5mm"))
    write_series(
        tmp_path / "mr",
        np.concatenate([volume, volume]),
        SeriesSpec(modality="MR", series_description="sag T2", row_dir=(0, 1, 0), col_dir=(0, 0, -1)),
    )
    from collections import Counter

    skipped = Counter()
    assert {s.modality for s in discover_series(tmp_path, selection, skipped)} == expected
    assert sum(skipped.values()) == 1 and all(reason.startswith("not selected") for reason in skipped)


def test_size_cap_refuses_before_allocating(tmp_path, volume):
    write_series(tmp_path, volume, SeriesSpec())
    with pytest.raises(Exception, match="exceeds the .* GiB cap"):
        load_one(tmp_path, DicomOptions(max_gib=1e-6))


# ----------------------------------------------------------------------------- through the runner

DICOM_CONFIG = """\
version: 1
name: dicom
stages:
  - use: load.dicom
  - use: write.nifti
"""


def test_run_over_a_study_with_bad_files(cli, tmp_path, volume):
    """A good series, a truncated one, one with short Pixel Data: the good one finishes, the others fail clearly."""
    write_series(tmp_path / "in" / "Doe^John" / "good", volume, SeriesSpec(seed=1))
    truncated = write_series(tmp_path / "in" / "Doe^John" / "trunc", volume, SeriesSpec(seed=2))
    data = truncated[3].read_bytes()
    truncated[3].write_bytes(data[: len(data) - 200])
    short = write_series(tmp_path / "in" / "Doe^John" / "short", volume, SeriesSpec(seed=3))
    ds = pydicom.dcmread(short[2])
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(short[2])
    config = tmp_path / "dicom.yaml"
    config.write_text(DICOM_CONFIG)
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    statuses = sorted(c["status"] for c in manifest["cases"])
    assert statuses == ["failed", "failed", "ok"]
    errors = " | ".join(c["error"] for c in manifest["cases"] if c["status"] == "failed")
    assert truncated[3].name in errors and "truncated" in errors
    assert short[2].name in errors and "Pixel Data holds 100 bytes" in errors
    assert "Doe" not in errors and "Doe" not in result.stderr, "folder names may name the patient"
    [ok] = [c for c in manifest["cases"] if c["status"] == "ok"]
    import nibabel as nib

    written = nib.load(tmp_path / "out" / ok["case_id"] / "image.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), as_ijk(volume))
    assert not any(p.name.startswith(".") for p in (tmp_path / "out").rglob("*") if p.is_file())


def test_irregular_series_warning_reaches_the_manifest(cli, tmp_path, volume):
    write_series(tmp_path / "in", volume, SeriesSpec(), skip=[3])
    config = tmp_path / "dicom.yaml"
    config.write_text(DICOM_CONFIG)
    refused = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert refused.exit_code == 1 and "missing slice" in refused.stderr
    resampled = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out2", "--set", "load.dicom.irregular=resample")
    assert resampled.exit_code == 0 and "warning: 1 missing slice" in resampled.stderr
    [case] = json.loads((tmp_path / "out2" / "manifest.json").read_text())["cases"]
    assert case["warnings"] and "resampled" in case["warnings"][0]


def test_empty_and_non_dicom_folders(cli, tmp_path):
    config = tmp_path / "dicom.yaml"
    config.write_text(DICOM_CONFIG)
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("hello")
    for folder in ("empty", "text"):
        result = cli("run", config, "-i", tmp_path / folder, "-o", tmp_path / "out")
        assert result.exit_code == 2 and len(result.error_lines) == 1 and "no cases found" in result.stderr
    assert "1 not DICOM" in cli("run", config, "-i", tmp_path / "text", "-o", tmp_path / "out").stderr


def test_load_auto_mixes_dicom_and_nifti(cli, tmp_path, volume):
    write_series(tmp_path / "in" / "series", volume, SeriesSpec())
    from tests.conftest import write_nifti

    write_nifti(tmp_path / "in" / "vol.nii.gz", np.zeros((4, 5, 6), np.float32))
    config = tmp_path / "auto.yaml"
    config.write_text("version: 1\nname: auto\nstages:\n  - use: load.auto\n  - use: write.nifti\n")
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0 and "2 cases: 2 ok" in result.stderr


def test_template_header_series_loads(tmp_path):
    """A full real header (CT_small's, private tags and sequences included) copied into each slice."""
    volume = ct_like_volume((6, 32, 32))
    write_series(tmp_path, volume, SeriesSpec(template=load_template()))
    np.testing.assert_array_equal(load_one(tmp_path).array[0], as_ijk(volume))


def test_corrupt_header_unreadable_file_and_huge_dimensions(cli, tmp_path, volume):
    write_series(tmp_path / "in" / "good", volume, SeriesSpec(seed=1))
    huge = write_series(tmp_path / "in" / "huge", volume[:3], SeriesSpec(seed=2))  # 3 x 60000^2 x 2 bytes > 16 GiB
    for path in huge:  # declares 60000 x 60000 pixels: must be refused before any allocation
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns = 60000, 60000
        ds.save_as(path)
    corrupt = tmp_path / "in" / "corrupt.dcm"
    corrupt.write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(1).bytes(3000))
    (tmp_path / "in" / "dangling.dcm").symlink_to(tmp_path / "nowhere.dcm")
    config = tmp_path / "dicom.yaml"
    config.write_text(DICOM_CONFIG)
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sorted(c["status"] for c in manifest["cases"]) == ["failed", "ok"]
    [failed] = [c for c in manifest["cases"] if c["status"] == "failed"]
    assert "GiB cap" in failed["error"]
    skipped = manifest["discovery"]["skipped_files"]
    assert sum(skipped.values()) == 2, skipped  # the corrupt file and the dangling link, counted with reasons
    assert "Traceback" not in result.stderr


def test_each_part_of_a_split_series_is_selectable(tmp_path, volume):
    """A SeriesInstanceUID split by matrix size names two series; each part's case id selects it alone."""
    from voxpipe.cases import case_id, id_key
    from voxpipe_plugins.io_dicom.loader import case_source, choose_one_hint, select_series

    spec = SeriesSpec()
    write_series(tmp_path / "a", volume, spec)
    write_series(tmp_path / "b", volume[:, :12, :10], SeriesSpec(series_uid=spec.series_uid, origin=(0, 0, 100)))
    found = discover_series(tmp_path)
    key = id_key()
    by_uid = select_series(found, spec.series_uid, key)
    assert len(by_uid) == 2
    hint = choose_one_hint(by_uid, key)
    ids = [case_id(case_source(s), key) for s in found]
    assert all(cid in hint for cid in ids) and "--series CASE_ID" in hint and spec.series_uid not in hint
    assert "20x24x10" in hint and "10x12x10" in hint
    for cid in ids:
        [chosen] = select_series(found, cid, key)
        assert case_id(case_source(chosen), key) == cid
    assert select_series(found, "case-000000000000", key) == []


def test_convert_selects_each_part_of_a_split_series(cli, tmp_path, volume):
    spec = SeriesSpec()
    write_series(tmp_path / "in" / "a", volume, spec)
    write_series(tmp_path / "in" / "b", volume[:, :12, :10], SeriesSpec(series_uid=spec.series_uid, origin=(0, 0, 100)))
    result = cli("convert", tmp_path / "in", tmp_path / "one.nii.gz", "--series", spec.series_uid)
    assert result.exit_code == 2 and len(result.error_lines) == 1
    ids = re.findall(r"case-[0-9a-f]{12}", result.stderr)
    assert len(set(ids)) == 2 and "--series CASE_ID" in result.stderr
    for n, cid in enumerate(sorted(set(ids))):
        result = cli("convert", tmp_path / "in", tmp_path / f"{n}.nii.gz", "--series", cid)
        assert result.exit_code == 0, result.stderr
        assert (tmp_path / f"{n}.nii.gz").exists()

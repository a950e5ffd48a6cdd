"""``voxpipe info`` describes every input VoxPipe reads (issue 16, deliverable 3).

NIfTI (.nii, .nii.gz, 4D, NIfTI-2, big-endian, scaled) and 2D images (PNG, JPEG, TIFF,
BMP; gray, 16-bit, RGB): size, spacing, orientation code, dtype and value range; DICOM as
before; mixed folders; -i or PATH; --json. Never PHI: NIfTI text fields and file names
are not shown unless --show-phi.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series

MARK = "PHIMKINFO"


def nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, cls=nib.Nifti1Image, slope: float | None = None) -> Path:
    image = cls(data, np.diag([0.8, 0.9, 2.5, 1.0]) if affine is None else affine)
    header = image.header
    header["descrip"] = f"{MARK} Doe^Jane".encode()
    header["aux_file"] = f"{MARK}aux".encode()
    if cls is nib.Nifti1Image:
        header["db_name"] = f"{MARK}db".encode()
    header["intent_name"] = f"{MARK}"[:15].encode()
    if slope is not None:
        header.set_slope_inter(slope, 10.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def describe(cli, *args) -> dict:
    result = cli("info", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def only_file(cli, path: Path) -> dict:
    summary = describe(cli, path)
    assert summary["series"] == [] and len(summary["files"]) == 1
    return summary["files"][0]


VOLUME = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 7


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".NII.GZ"])
@pytest.mark.parametrize("cls", [nib.Nifti1Image, nib.Nifti2Image])
def test_nifti_shape_spacing_orientation_dtype_range(cli, tmp_path, suffix, cls):
    row = only_file(cli, nifti(tmp_path / f"vol{suffix}", VOLUME, cls=cls))
    assert row["kind"] == "nifti" and row["case_id"].startswith("case-")
    assert row["size"] == "4x5x6" and row["spacing"] == "0.8x0.9x2.5" and row["orientation"] == "RAS"
    assert row["dtype"] == "int16" and row["range"] == [-7, 4 * 5 * 6 - 8]


@pytest.mark.parametrize(
    ("diagonal", "code"),
    [((1, 1, 1), "RAS"), ((-1, -1, 1), "LPS"), ((-1, 1, -1), "LAI"), ((1, -1, -1), "RPI")],
)
def test_orientation_code_follows_the_affine(cli, tmp_path, diagonal, code):
    affine = np.diag([*diagonal, 1.0])
    assert only_file(cli, nifti(tmp_path / "v.nii.gz", VOLUME, affine))["orientation"] == code


def test_4d_scaled_float_and_big_endian_nifti(cli, tmp_path):
    four = only_file(cli, nifti(tmp_path / "a" / "4d.nii.gz", np.zeros((3, 4, 5, 2), np.float32)))
    assert four["size"] == "3x4x5x2" and four["dtype"] == "float32" and four["range"] == [0, 0]
    scaled = only_file(cli, nifti(tmp_path / "b" / "s.nii", VOLUME, slope=0.5))
    assert scaled["range"] == [-7 * 0.5 + 10, (4 * 5 * 6 - 8) * 0.5 + 10] and "scaled" in scaled["dtype"]
    data = np.array([[[np.nan, 1.5], [np.inf, -2.25]]], np.float32)
    assert only_file(cli, nifti(tmp_path / "c" / "nan.nii.gz", data))["range"] == [-2.25, 1.5]
    big = tmp_path / "d" / "big.nii"
    image = nib.Nifti1Image(VOLUME.astype(">i2"), np.eye(4))
    big.parent.mkdir()
    nib.save(image, str(big))
    row = only_file(cli, big)
    assert row["dtype"] == "int16" and row["range"] == [-7, 4 * 5 * 6 - 8]


@pytest.mark.parametrize(
    ("name", "array", "mode", "size", "dtype", "value_range"),
    [
        ("g.png", np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) % 200 + 3, "L", "30x20", "uint8 (L)", [3, 202]),
        ("g16.tif", (np.arange(20 * 30).reshape(20, 30) * 50).astype(np.uint16), "I;16", "30x20", "uint16 (I;16)", [0, 29950]),
        ("rgb.png", np.full((8, 9, 3), (10, 20, 250), np.uint8), "RGB", "9x8x3ch", "uint8 (RGB)", [10, 250]),
        ("g.bmp", np.full((5, 7), 77, np.uint8), "L", "7x5", "uint8 (L)", [77, 77]),
        ("g.jpg", np.full((16, 16), 128, np.uint8), "L", "16x16", "uint8 (L)", None),
    ],
)
def test_2d_images(cli, tmp_path, name, array, mode, size, dtype, value_range):
    path = tmp_path / name
    Image.fromarray(array.astype(np.uint8) if mode in ("L", "RGB") else array, mode=mode if mode != "I;16" else None).save(path)
    row = only_file(cli, path)
    assert row["kind"] == "image" and row["size"] == size and row["dtype"] == dtype and row["orientation"] == "none (2D)"
    if value_range is not None:
        assert row["range"] == value_range


def test_a_mixed_folder_lists_dicom_series_volumes_images_and_what_was_passed_over(cli, tmp_path):
    root = tmp_path / "mixed"
    write_series(root / "dicom", ct_like_volume(shape=(4, 12, 12)), SeriesSpec())
    nifti(root / "vol.nii.gz", VOLUME)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "img.png")
    (root / "notes.txt").write_text("hello")
    summary = describe(cli, root)
    assert len(summary["series"]) == 1 and summary["series"][0]["size"] == "12x12x4"
    assert sorted(r["kind"] for r in summary["files"]) == ["image", "nifti"]
    assert summary["passed_over"] == {"not a supported file type (.txt)": 1}
    text = cli("info", root)
    assert text.exit_code == 0
    assert "CT" in text.stdout and "nifti" in text.stdout and "image" in text.stdout and "passed over: 1" in text.stdout
    assert text.stdout.count("--show-phi") == 1


def test_dicom_only_folder_keeps_its_table_and_json(cli, tmp_path):
    write_series(tmp_path / "in", ct_like_volume(shape=(4, 12, 12)), SeriesSpec())
    summary = describe(cli, tmp_path / "in")
    assert summary["files"] == [] and len(summary["series"]) == 1
    assert {"case_id", "modality", "orientation", "size", "spacing", "transfer_syntax"} <= set(summary["series"][0])


def test_case_ids_match_the_ones_run_gives(cli, tmp_path):
    from voxpipe.cases import case_id
    from voxpipe_plugins.io_auto.loader import discover

    root = tmp_path / "in"
    nifti(root / "a.nii.gz", VOLUME)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "b.png")
    expected = {case_id(source) for source in discover(root).cases}
    assert {r["case_id"] for r in describe(cli, root)["files"]} == expected


@pytest.mark.parametrize("as_json", [False, True])
def test_no_phi_from_nifti_text_fields_or_file_names(cli, tmp_path, as_json):
    root = tmp_path / f"Doe_Jane_{MARK}"
    nifti(root / f"{MARK}_Jane_Doe.nii.gz", VOLUME)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / f"{MARK}_photo.png")
    (root / f"{MARK}_broken.nii.gz").write_bytes(b"not a nifti")
    flags = ["--json"] if as_json else []
    result = cli("info", root, *flags)
    assert result.exit_code == 0, result.stderr
    assert MARK not in result.stdout + result.stderr
    assert "Doe" not in result.stdout + result.stderr
    assert ("cannot be read" in result.stdout) and "Traceback" not in result.stderr
    shown = cli("info", root, "--show-phi", *flags)
    assert f"{MARK}_Jane_Doe.nii.gz" in shown.stdout
    assert f"{MARK} Doe^Jane" not in shown.stdout  # header text is never shown: it is not what info is for


@pytest.mark.parametrize("content", [b"", b"not a nifti at all", b"\x1f\x8b\x08\x00broken gzip"])
def test_an_unreadable_single_file_is_one_line_and_exit_2(cli, tmp_path, content):
    path = tmp_path / f"{MARK}.nii.gz"
    path.write_bytes(content)
    result = cli("info", path)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "Traceback" not in result.stderr
    assert MARK not in result.stderr
    image = tmp_path / f"{MARK}.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    result = cli("info", image)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and MARK not in result.stderr


def test_input_as_option_or_argument(cli, tmp_path):
    path = nifti(tmp_path / "v.nii.gz", VOLUME)
    assert cli("info", path, "--json").stdout == cli("info", "-i", path, "--json").stdout == cli("info", "--input", path, "--json").stdout
    twice = cli("info", path, "-i", tmp_path / "other.nii.gz")
    assert twice.exit_code == 2 and len(twice.error_lines) == 1
    missing = cli("info")
    assert missing.exit_code == 2 and len(missing.error_lines) == 1
    gone = cli("info", tmp_path / "gone.nii.gz")
    assert gone.exit_code == 2 and len(gone.error_lines) == 1


def test_info_on_nifti_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    path = nifti(tmp_path / "v.nii.gz", VOLUME)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "i.png")
    code = (
        "import sys\nfrom voxpipe.cli import main\n"
        f"try:\n    main(['info', {str(tmp_path)!r}])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
    assert path.exists()

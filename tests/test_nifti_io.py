"""NIfTI and 2D image I/O details: qform/sform precedence, both written, 2D formats."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from voxpipe_plugins.io_image.reader import read_image2d
from voxpipe_plugins.io_nifti.reader import read_nifti
from voxpipe_plugins.io_nifti.writer import write_nifti

QFORM = np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -120], [0, 0, 2.0, -60], [0, 0, 0, 1]])
SFORM = np.array([[-1.1, 0.1, 0, 88], [0, 1.1, 0, -118], [0, 0, 2.2, -58], [0, 0, 0, 1]])


def nifti_with(tmp_path, qform_code, sform_code):
    image = nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), None)
    image.set_qform(QFORM, code=qform_code)
    image.set_sform(SFORM, code=sform_code)
    path = tmp_path / f"q{qform_code}s{sform_code}.nii.gz"
    nib.save(image, str(path))
    return path


@pytest.mark.parametrize("qcode, scode, expected", [(1, 0, QFORM), (1, 2, SFORM), (0, 1, SFORM), (2, 4, SFORM)])
def test_sform_wins_when_set_else_qform(tmp_path, qcode, scode, expected):
    image = read_nifti(nifti_with(tmp_path, qcode, scode))
    np.testing.assert_allclose(image.affine.numpy(), expected, atol=1e-5)


def test_written_files_carry_both_forms_and_codes(tmp_path):
    image = read_nifti(nifti_with(tmp_path, 1, 2))
    write_nifti(image, tmp_path / "out.nii.gz")
    written = nib.load(tmp_path / "out.nii.gz")
    assert int(written.header["sform_code"]) == 2 and int(written.header["qform_code"]) == 1
    np.testing.assert_allclose(written.get_sform(), SFORM, atol=1e-5)
    # the qform cannot hold shear; nibabel stores its closest rigid+zoom form
    np.testing.assert_allclose(np.linalg.norm(written.get_qform()[:3, :3], axis=0), np.linalg.norm(SFORM[:3, :3], axis=0), rtol=1e-3)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".bmp"])
def test_2d_formats(tmp_path, suffix):
    pixels = (np.add.outer(np.arange(30), np.arange(40)) * 3 % 256).astype(np.uint8)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(pixels).save(path, quality=100) if suffix == ".jpg" else Image.fromarray(pixels).save(path)
    image = read_image2d(path)
    assert image.shape == (1, 40, 30)
    tolerance = 3 if suffix == ".jpg" else 0
    np.testing.assert_allclose(image[0].numpy().T, pixels, atol=tolerance)


def test_16bit_tiff_keeps_values(tmp_path):
    pixels = np.arange(0, 60000, 50, dtype=np.uint16)[:1200].reshape(30, 40)
    Image.fromarray(pixels).save(tmp_path / "deep.tif")
    np.testing.assert_array_equal(read_image2d(tmp_path / "deep.tif")[0].numpy().T, pixels)


def test_convert_and_info_do_not_import_torch(tmp_path):
    from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series

    write_series(tmp_path / "in", ct_like_volume((4, 16, 16)), SeriesSpec())
    code = (
        "import sys\nfrom voxpipe.cli import main\n"
        f"for args in (['convert', {str(tmp_path / 'in')!r}, {str(tmp_path / 'o.nii')!r}], ['info', {str(tmp_path / 'in')!r}]):\n"
        "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
        "print('LOADED', sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**__import__("os").environ, "VOXPIPE_ID_KEY_FILE": str(tmp_path / "k")},
    )
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout
    assert nib.load(tmp_path / "o.nii").shape == (16, 16, 4)


def random_affine(rng, flip: bool, shear: bool):
    angles = rng.uniform(-np.pi, np.pi, 3)
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rotation = (
        np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    )
    linear = rotation * rng.uniform(0.3, 3.0, 3)
    if flip:
        linear[:, 0] *= -1
    if shear:
        linear[0, 1] += 0.2
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = linear, rng.uniform(-200, 200, 3)
    return affine


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("flip", [False, True])
def test_own_nifti_writer_matches_nibabel(tmp_path, seed, flip):
    """Our header writer against nibabel's reading: data, sform, qform, codes and zooms."""
    from voxpipe_plugins.io_nifti import header

    rng = np.random.default_rng(seed)
    affine = random_affine(rng, flip, shear=False)
    dtype = [np.int16, np.float32, np.uint8, np.float64, np.int32, np.uint16][seed]
    data = (rng.random((5, 6, 7, 2)[: 3 + seed % 2]) * 100).astype(dtype)
    path = tmp_path / ("x.nii.gz" if seed % 2 else "x.nii")
    header.write(path, data, affine, qform_code=1, sform_code=2)
    image = nib.load(path)
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), data)
    assert image.get_data_dtype() == np.dtype(dtype)
    np.testing.assert_allclose(image.get_sform(), affine, atol=1e-4)
    np.testing.assert_allclose(image.get_qform(), affine, atol=1e-4)
    assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 2
    np.testing.assert_allclose(image.header.get_zooms()[:3], np.linalg.norm(affine[:3, :3], axis=0), rtol=1e-5)
    reference = nib.Nifti1Image(data, affine)
    reference.set_qform(affine, code=1)
    np.testing.assert_allclose(image.header["pixdim"][:4], reference.header["pixdim"][:4], atol=1e-5)


def test_own_writer_with_shear_keeps_sform_exact(tmp_path):
    from voxpipe_plugins.io_nifti import header

    affine = random_affine(np.random.default_rng(9), flip=True, shear=True)
    header.write(tmp_path / "s.nii", np.zeros((3, 4, 5), np.float32), affine)
    image = nib.load(tmp_path / "s.nii")
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)  # the sform wins and holds the shear
    assert np.allclose(np.linalg.norm(image.get_qform()[:3, :3], axis=0), np.linalg.norm(affine[:3, :3], axis=0), rtol=0.05)


def test_write_nifti_records_label_volumes_for_the_report(cli, tmp_path, write_config):
    """A pipeline with a label but no picture writer still reports each label's volume (mL from the affine)."""
    import json

    from tests.conftest import write_nifti as save

    volume = np.zeros((20, 20, 10), np.float32)
    volume[5:15, 5:15, 2:8] = 100.0  # 600 voxels of 2 x 2 x 3 mm = 7.2 mL
    save(tmp_path / "in" / "box.nii.gz", volume, np.diag([2.0, 2.0, 3.0, 1.0]))
    config = write_config(
        "version: 1\nname: volumes\ndevice: cpu\nstages:\n  - use: load.nifti\n  - use: segment.otsu\n"
        "  - use: write.nifti\n    with: {keys: [label]}\n"
    )
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out", "--workers", "0")
    assert result.exit_code == 0, result.stderr
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("case-*/case.json")]
    metrics = {m["name"]: m for m in record["report"]["metrics"]}
    assert metrics["volumes_ml.foreground"]["value"] == pytest.approx(7.2) and metrics["volumes_ml.foreground"]["unit"] == "mL"

"""Rigid 3D registration: a known rotation + shift of a phantom is recovered in mm, and the
resampled moving image matches the fixed one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_nifti
from scipy import ndimage

from voxpipe_plugins.match import register as reg


def phantom(shape=(44, 44, 36), spacing=(1.5, 1.5, 2.0)):
    """Asymmetric blobs (so every rotation is visible) on a grid with an offset origin; RAS affine."""
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = [-30.0, -40.0, -35.0]
    index = np.indices(shape).reshape(3, -1).T
    world = np.c_[index, np.ones(len(index))] @ affine.T
    p = world[:, :3] - reg.centre_of(shape, affine)
    image = np.zeros(len(index))
    blobs = [((0, 0, 0), (24, 17, 21), 1.0), ((8, 5, 4), (7, 5, 6), 2.0), ((-10, -4, -6), (5, 8, 5), -0.6), ((3, -9, 8), (4, 4, 4), 1.5)]
    for centre, axes, value in blobs:
        image += value * ((((p - centre) / axes) ** 2).sum(1) <= 1)
    return ndimage.gaussian_filter(image.reshape(shape), 0.7).astype(np.float32), affine


TRUE_PARAMS = [5.0, -4.0, 9.0, 4.0, -3.0, 2.5]  # degrees about x, y, z; mm


def moved(fixed, affine, params=TRUE_PARAMS, noise=0.02):
    """The moving image: what a scanner sees when the object moved by ``params`` (fixed point x -> T x)."""
    truth = reg.rigid_matrix(params, reg.centre_of(fixed.shape, affine))
    moving = reg.resample(fixed, affine, np.linalg.inv(truth), fixed.shape, affine)
    moving += np.random.default_rng(0).normal(0, noise, moving.shape).astype(np.float32)
    return moving, truth


def point_error_mm(estimate, truth, fixed, affine):
    """Distance between where the two transforms put each voxel of the object (mm)."""
    index = np.argwhere(fixed > 0.5)
    world = np.c_[index, np.ones(len(index))] @ affine.T
    return np.linalg.norm((world @ estimate.T - world @ truth.T)[:, :3], axis=1)


@pytest.mark.parametrize("method", ["ncc", "mi"])
def test_rigid_registration_recovers_rotation_and_shift(method):
    fixed, affine = phantom()
    moving, truth = moved(fixed, affine)
    result = reg.register(fixed, affine, moving, affine, method)
    error = point_error_mm(result.matrix, truth, fixed, affine)
    assert error.max() < 0.75  # half the in-plane voxel
    assert result.angles_deg == pytest.approx(TRUE_PARAMS[:3], abs=0.6)
    resampled = reg.resample(moving, affine, result.matrix, fixed.shape, affine)
    assert reg.ncc(fixed, resampled) > 0.99
    unregistered = reg.ncc(fixed, moving)
    assert unregistered < 0.9  # the test would notice a no-op
    dice = 2 * ((resampled > 0.5) & (fixed > 0.5)).sum() / ((resampled > 0.5).sum() + (fixed > 0.5).sum())
    assert dice > 0.95
    assert result.metric_after > result.metric_before


def test_registration_across_grids_uses_world_coordinates():
    """Moving image on a coarser, shifted grid: the transform is still in mm, and resampling lands on the fixed grid."""
    fixed, affine = phantom()
    moving_fine, truth = moved(fixed, affine, [0.0, 0.0, 6.0, -5.0, 3.0, 0.0], noise=0.0)
    coarse = affine.copy()
    coarse[:3, :3] *= 1.25
    coarse[:3, 3] += [2.0, -1.0, 3.0]
    shape = tuple(int(n / 1.25) for n in fixed.shape)
    moving = reg.resample(moving_fine, affine, np.eye(4), shape, coarse)  # same object, other grid
    result = reg.register(fixed, affine, moving, coarse, "ncc")
    assert point_error_mm(result.matrix, truth, fixed, affine).max() < 1.0


def test_phase_correlation_recovers_a_shift():
    fixed, affine = phantom()
    moving, truth = moved(fixed, affine, [0, 0, 0, 4.5, -3.0, 6.0], noise=0.0)
    result = reg.register(fixed, affine, moving, affine, "phase")
    assert point_error_mm(result.matrix, truth, fixed, affine).max() < 0.3
    assert result.translation_mm == pytest.approx((4.5, -3.0, 6.0), abs=0.3)


def test_register_command_writes_transform_and_resampled_image(tmp_path, cli):
    import nibabel as nib

    fixed, affine = phantom()
    moving, truth = moved(fixed, affine)
    write_nifti(tmp_path / "fixed.nii.gz", fixed, affine)
    write_nifti(tmp_path / "moving.nii.gz", moving, affine)
    result = cli("register", tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz", "-o", tmp_path / "reg", "--method", "ncc")
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "reg" / "transform.json").read_text())
    estimate = np.array(data["fixed_to_moving"])
    assert point_error_mm(estimate, truth, fixed, affine).max() < 0.75
    np.testing.assert_allclose(np.array(data["moving_to_fixed"]) @ estimate, np.eye(4), atol=1e-6)
    out = nib.load(str(tmp_path / "reg" / "moving_resampled.nii.gz"))
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    assert reg.ncc(fixed, np.asarray(out.dataobj, dtype=np.float32)) > 0.99
    bad = cli("register", tmp_path / "fixed.nii.gz", tmp_path / "nope.png", "-o", tmp_path / "reg2")
    assert bad.exit_code == 2 and bad.error_lines[0].startswith("error: MOVING:") and "NIfTI" in bad.error_lines[0]
    assert "nope" not in bad.stderr  # file names may name patients: errors name the argument instead
    assert not (tmp_path / "reg2").exists()
    written = (tmp_path / "reg" / "transform.json").read_text()
    again = cli("register", tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz", "-o", tmp_path / "reg", "--method", "phase")
    assert again.exit_code == 2 and "--force" in again.error_lines[0]
    assert (tmp_path / "reg" / "transform.json").read_text() == written, "not overwritten without --force"
    forced = cli("register", tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz", "-o", tmp_path / "reg", "--method", "phase", "--force")
    assert forced.exit_code == 0 and (tmp_path / "reg" / "transform.json").read_text() != written


def test_mutual_information_registers_across_a_contrast_change():
    """Another 'modality': the moving image's intensities are remapped non-monotonically, (I - 1)^2.

    Correlation cannot align such images; mutual information only needs the joint histogram to be sharp.
    """
    fixed, affine = phantom(shape=(36, 36, 30))
    moving, truth = moved(fixed, affine, [0.0, 3.0, -6.0, -3.0, 2.0, 2.0], noise=0.0)
    remapped = (moving - 1.0) ** 2 + np.random.default_rng(1).normal(0, 0.02, moving.shape).astype(np.float32)
    result = reg.register(fixed, affine, remapped.astype(np.float32), affine, "mi")
    assert point_error_mm(result.matrix, truth, fixed, affine).max() < 1.0
    aligned = reg.resample(remapped.astype(np.float32), affine, result.matrix, fixed.shape, affine)
    assert reg.ncc(fixed, aligned) < 0  # even aligned, the two are anti-correlated: a correlation metric would be misled

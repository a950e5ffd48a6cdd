"""Rigid registration of two volumes in world (RAS, mm) coordinates.

The transform ``T`` maps a point of the fixed image to the same anatomical point of the
moving image, ``x_moving = T @ x_fixed`` (4x4, RAS mm, as the images' affines use), so the
moving image resampled onto the fixed grid is ``M(A_m^-1 T A_f v)`` for fixed voxel ``v``.
``T`` is a rotation about the fixed image's centre ``c`` plus a shift:
``x_m = R (x_f - c) + c + t``, with ``R = Rz Ry Rx`` from three angles in degrees.

Methods:

* ``mi``: maximises Mattes-style mutual information (a 32x32 joint histogram), the
  standard choice across modalities or contrasts;
* ``ncc``: maximises normalised cross-correlation, for the same modality;
* ``phase``: phase correlation (scikit-image), translation only, for two images on grids
  of the same shape, spacing and orientation (e.g. repeat scans); exact to 1/10 voxel.

``mi`` and ``ncc`` start from the shift that aligns the intensity centres of mass and
refine all six parameters with Powell's method on a pyramid (4, 2, 1 times coarser), each
level smoothed by a Gaussian, so large shifts are caught early and detail refines late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from voxpipe.errors import UsageError


@dataclass
class RigidResult:
    matrix: np.ndarray  # 4x4 fixed -> moving world
    angles_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]  # t in x_m = R (x_f - c) + c + t
    centre_mm: tuple[float, float, float]
    method: str
    metric_before: float
    metric_after: float
    evaluations: int

    def as_dict(self) -> dict:
        return {
            "convention": "x_moving = fixed_to_moving @ [x, y, z, 1] for a fixed-image point; RAS millimetres",
            "fixed_to_moving": np.round(self.matrix, 8).tolist(),
            "moving_to_fixed": np.round(np.linalg.inv(self.matrix), 8).tolist(),
            "rotation_deg_xyz": [round(a, 5) for a in self.angles_deg],
            "translation_mm": [round(t, 5) for t in self.translation_mm],  # the shift of the centre c
            "centre_mm": [round(c, 5) for c in self.centre_mm],
            "method": self.method,
            "similarity_before": round(self.metric_before, 6),
            "similarity_after": round(self.metric_after, 6),
            "evaluations": self.evaluations,
        }


def rotation(angles_deg) -> np.ndarray:
    ax, ay, az = (math.radians(a) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rigid_matrix(params, centre) -> np.ndarray:
    """4x4 world transform from (rx, ry, rz in degrees, tx, ty, tz in mm) about ``centre``."""
    r = rotation(params[:3])
    c = np.asarray(centre, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(params[3:6], dtype=np.float64)
    return m


def resample(
    moving: np.ndarray, moving_affine: np.ndarray, world: np.ndarray, shape, target_affine: np.ndarray, order: int = 1, cval: float = 0.0
) -> np.ndarray:
    """``moving`` sampled at ``world @ target_affine @ v`` for every voxel ``v`` of a grid of ``shape``."""
    from scipy import ndimage

    vox = np.linalg.inv(moving_affine) @ world @ target_affine
    return ndimage.affine_transform(
        moving, vox[:3, :3], offset=vox[:3, 3], output_shape=tuple(shape), order=order, cval=cval, mode="constant"
    )


def centre_of(shape, affine) -> np.ndarray:
    return (affine @ np.array([(n - 1) / 2 for n in shape] + [1.0]))[:3]


def centre_of_mass(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    weights = image - float(image.min())
    if weights.sum() <= 0:
        return centre_of(image.shape, affine)
    com = np.asarray(ndimage.center_of_mass(weights))
    return (affine @ np.append(com, 1.0))[:3]


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    p = joint / max(joint.sum(), 1.0)
    px, py = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())


def similarity(fixed: np.ndarray, sampled: np.ndarray, method: str) -> float:
    """Similarity over voxels where the resampled moving image is defined (not NaN)."""
    valid = np.isfinite(sampled)
    if valid.sum() < 64:
        return -1.0  # the images no longer overlap
    f, m = fixed[valid], sampled[valid]
    return mutual_information(f, m) if method == "mi" else ncc(f, m)


def _phase(fixed, f_affine, moving, m_affine) -> RigidResult:
    from skimage.registration import phase_cross_correlation

    if fixed.shape != moving.shape:
        raise UsageError(f"--method phase needs grids of one shape (fixed {fixed.shape}, moving {moving.shape}); use --method mi")
    shift, _, _ = phase_cross_correlation(fixed, moving, upsample_factor=10)
    vox = np.eye(4)
    vox[:3, 3] = -np.asarray(shift)  # fixed voxel v shows what the moving image has at v - shift
    world = m_affine @ vox @ np.linalg.inv(f_affine)
    before = ncc(fixed, resample(moving, m_affine, np.eye(4), fixed.shape, f_affine))
    after = ncc(fixed, resample(moving, m_affine, world, fixed.shape, f_affine))
    centre = centre_of(fixed.shape, f_affine)
    shift_of_centre = (world @ np.append(centre, 1.0))[:3] - centre
    return RigidResult(world, (0.0, 0.0, 0.0), tuple(float(t) for t in shift_of_centre), tuple(centre), "phase", before, after, 1)


def register(
    fixed: np.ndarray,
    f_affine: np.ndarray,
    moving: np.ndarray,
    m_affine: np.ndarray,
    method: str = "mi",
    levels: tuple[int, ...] = (4, 2, 1),
    max_voxels: int = 400_000,
) -> RigidResult:
    """Estimate the rigid fixed -> moving world transform; see the module docstring."""
    from scipy import ndimage, optimize

    if fixed.ndim != 3 or moving.ndim != 3:
        raise UsageError(f"registration needs two 3D volumes (got {fixed.ndim}D and {moving.ndim}D)")
    fixed = fixed.astype(np.float32)
    moving = moving.astype(np.float32)
    if method == "phase":
        return _phase(fixed, f_affine, moving, m_affine)
    if method not in ("mi", "ncc"):
        raise UsageError(f"unknown method {method!r}; use mi, ncc or phase")
    centre = centre_of(fixed.shape, f_affine)
    params = np.zeros(6)
    params[3:] = centre_of_mass(moving, m_affine) - centre_of_mass(fixed, f_affine)
    evaluations = 0
    f_spacing = np.linalg.norm(f_affine[:3, :3], axis=0)
    m_spacing = np.linalg.norm(m_affine[:3, :3], axis=0)
    for level in levels:
        # the finest level still subsamples very large volumes so a cost evaluation stays cheap
        stride = max(level, int(math.ceil((fixed.size / max_voxels) ** (1 / 3))))
        sigma_mm = 0.5 * level * float(f_spacing.max())
        f_level = ndimage.gaussian_filter(fixed, sigma_mm / f_spacing) if level > 1 else fixed
        m_level = ndimage.gaussian_filter(moving, sigma_mm / m_spacing) if level > 1 else moving
        sub = f_level[::stride, ::stride, ::stride]
        sub_affine = f_affine @ np.diag([stride, stride, stride, 1.0])

        def cost(p):
            nonlocal evaluations
            evaluations += 1
            # called only within this level's iteration, so the loop's current values are the right ones
            sampled = resample(m_level, m_affine, rigid_matrix(p, centre), sub.shape, sub_affine, cval=np.nan)  # noqa: B023
            return -similarity(sub, sampled, method)  # noqa: B023

        step = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0]) * level / levels[-1] / 2
        found = optimize.minimize(
            cost, params, method="Powell", options={"xtol": 1e-2, "ftol": 1e-6, "maxfev": 1500, "direc": np.diag(step)}
        )
        params = np.asarray(found.x)
    matrix = rigid_matrix(params, centre)
    before = similarity(sub, resample(moving, m_affine, np.eye(4), sub.shape, sub_affine, cval=np.nan), method)
    after = similarity(sub, resample(moving, m_affine, matrix, sub.shape, sub_affine, cval=np.nan), method)
    return RigidResult(
        matrix,
        tuple(float(a) for a in params[:3]),
        tuple(float(t) for t in params[3:]),
        tuple(float(c) for c in centre),
        method,
        before,
        after,
        evaluations,
    )

"""Slice-stack geometry: order by position, measure spacing, detect what would misplace slices.

Slices are ordered by the projection of ImagePositionPatient on the slice normal
(row cosine x column cosine) -- never by InstanceNumber or file name, which scanners and
PACS exports do not keep consistent. Spacing comes from those positions, not from
SliceThickness (which is the slab width and may overlap or leave gaps). The affine maps
array indices (column i, row j, slice k), the MONAI/ITK layout, to RAS millimetres:
DICOM patient coordinates are LPS, so the first two rows are negated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class StackGeometry:
    """Where every slice of a stack lies, and what is irregular about it."""

    order: np.ndarray  # indices of the input frames, sorted along the normal
    positions: np.ndarray  # (K, 3) ImagePositionPatient in sorted order (LPS)
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing)
    steps: np.ndarray  # distances between consecutive slices along the normal
    spacing: float  # the stack's slice spacing (median step)
    tilt_degrees: float = 0.0
    problems: list[str] = field(default_factory=list)  # missing slices, uneven spacing, tilt

    @property
    def regular(self) -> bool:
        return not self.problems

    def affine(self) -> np.ndarray:
        """RAS affine for the (i=column, j=row, k=slice) array; uses the real step when tilted."""
        lps = np.eye(4)
        lps[:3, 0] = self.row_dir * self.pixel_spacing[1]
        lps[:3, 1] = self.col_dir * self.pixel_spacing[0]
        if len(self.positions) > 1:
            lps[:3, 2] = (
                (self.positions[-1] - self.positions[0]) / (len(self.positions) - 1) if self.tilt_degrees else self.normal * self.spacing
            )
        else:
            lps[:3, 2] = self.normal * self.spacing
        lps[:3, 3] = self.positions[0]
        return LPS_TO_RAS @ lps


def orientation_vectors(iop) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row and column cosines and the normal from ImageOrientationPatient."""
    values = np.asarray(iop, dtype=np.float64)
    if values.shape != (6,):
        raise ValueError("ImageOrientationPatient must have 6 values")
    row, col = values[:3], values[3:]
    if np.linalg.norm(row) < 1e-6 or np.linalg.norm(col) < 1e-6:
        raise ValueError("ImageOrientationPatient has a zero direction")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 1e-3:
        raise ValueError("ImageOrientationPatient row and column directions are parallel")
    return row, col, normal / np.linalg.norm(normal)


def orientation_label(normal: np.ndarray) -> str:
    """axial, coronal or sagittal by the normal's dominant patient axis; oblique beyond ~25 degrees."""
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.9:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def stack_geometry(positions, iop, pixel_spacing, slice_spacing_hint: float | None = None, tolerance: float = 0.05) -> StackGeometry:
    """Order frames along the normal and describe the stack's regularity.

    Args:
        positions: ImagePositionPatient of each frame, in input order.
        iop: the (shared) ImageOrientationPatient.
        pixel_spacing: (row spacing, column spacing).
        slice_spacing_hint: spacing for single-slice stacks (SliceThickness or similar).
        tolerance: allowed relative deviation of a step from the median step.
    """
    row, col, normal = orientation_vectors(iop)
    points = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    distance = points @ normal
    order = np.argsort(distance, kind="stable")
    points, distance = points[order], distance[order]
    steps = np.diff(distance)
    problems: list[str] = []
    if len(points) < 2:
        spacing = float(slice_spacing_hint or 1.0)
        return StackGeometry(order, points, row, col, normal, tuple(pixel_spacing), steps, spacing)
    if np.any(steps < 1e-3):
        repeated = int(np.sum(steps < 1e-3))
        raise ValueError(
            f"{repeated} slice(s) share a position with another slice; the series may hold several volumes (4D) without distinguishing tags"
        )
    spacing = float(np.median(steps))
    deviation = np.abs(steps - spacing) / spacing
    if np.any(deviation > tolerance):
        ratios = steps / spacing
        gaps = np.rint(ratios)
        if np.all(np.abs(ratios - gaps) < tolerance) and np.all(gaps >= 1):
            missing = int(np.sum(gaps - 1))
            problems.append(
                f"{missing} missing slice(s): gaps of {', '.join(f'{s:.3g}' for s in steps[gaps > 1][:3])} mm where the spacing is {spacing:.4g} mm"
            )
        else:
            problems.append(f"non-uniform slice spacing: steps from {steps.min():.4g} to {steps.max():.4g} mm (median {spacing:.4g} mm)")
    # Gantry tilt: the slice origins drift in-plane as the stack advances. Below half a pixel
    # of drift over the whole stack, an orthogonal grid misplaces nothing measurably (real
    # scanners show a few hundredths of a millimetre of rounding); above it, slices would be.
    drift = points[-1] - points[0]
    in_plane = drift - (drift @ normal) * normal
    drift_pixels = float(np.linalg.norm(in_plane) / min(pixel_spacing))
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(in_plane), max(distance[-1] - distance[0], 1e-6))))
    tilted = drift_pixels > 0.5
    if tilted:
        problems.append(f"gantry tilt of {tilt:.2f} degrees: slice origins drift {drift_pixels:.1f} pixels in-plane across the stack")
    return StackGeometry(
        order,
        points,
        row,
        col,
        normal,
        (float(pixel_spacing[0]), float(pixel_spacing[1])),
        steps,
        spacing,
        tilt if tilted else 0.0,
        problems,
    )

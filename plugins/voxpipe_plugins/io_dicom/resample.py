"""Put an irregular stack (missing slices, uneven spacing, gantry tilt) on a uniform grid.

Only used when a config asks for it (``irregular: resample``); the default refuses such
series, because interpolated slices are not measured data. Each output slice lies at a
uniform distance along the normal; it is interpolated linearly between the two source
slices that bracket it, each shifted in-plane by its own offset from the first slice
(which is what a gantry tilt introduces). Works slice by slice, so memory stays at the
size of the output.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from voxpipe_plugins.io_dicom.geometry import LPS_TO_RAS, StackGeometry


def resample_uniform(volume: np.ndarray, geometry: StackGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``volume[k, r, c]`` in sorted order -> (uniform float32 volume, its RAS affine)."""
    normal, spacing = geometry.normal, geometry.spacing
    origin = geometry.positions[0]
    distance = (geometry.positions - origin) @ normal
    count = int(round(distance[-1] / spacing)) + 1
    targets = np.arange(count) * spacing
    fraction_index = np.interp(targets, distance, np.arange(len(distance)))
    offsets = geometry.positions - origin
    row_shift = offsets @ geometry.col_dir / geometry.pixel_spacing[0]  # along rows (axis 1)
    col_shift = offsets @ geometry.row_dir / geometry.pixel_spacing[1]  # along columns (axis 2)
    out = np.empty((count, *volume.shape[1:]), dtype=np.float32)
    for k, position in enumerate(fraction_index):
        lower = int(np.floor(position))
        upper = min(lower + 1, len(distance) - 1)
        weight = position - lower
        out[k] = (1 - weight) * _shifted(volume[lower], row_shift[lower], col_shift[lower])
        if weight > 1e-6:
            out[k] += weight * _shifted(volume[upper], row_shift[upper], col_shift[upper])
    lps = np.eye(4)
    lps[:3, 0] = geometry.row_dir * geometry.pixel_spacing[1]
    lps[:3, 1] = geometry.col_dir * geometry.pixel_spacing[0]
    lps[:3, 2] = normal * spacing
    lps[:3, 3] = origin
    return out, LPS_TO_RAS @ lps


def _shifted(plane: np.ndarray, rows: float, cols: float) -> np.ndarray:
    """Source slice sampled on the first slice's in-plane grid (its origin is offset by rows/cols)."""
    plane = plane.astype(np.float32, copy=False)
    if abs(rows) < 1e-3 and abs(cols) < 1e-3:
        return plane
    # Pixel (j, i) of the first slice's grid is pixel (j - rows, i - cols) of a slice whose
    # origin sits (rows, cols) pixels further on; ndimage.shift gives output[x] = input[x - shift].
    return ndimage.shift(plane, (rows, cols), order=1, mode="nearest")

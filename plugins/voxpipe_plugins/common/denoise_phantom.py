"""A 3D Shepp-Logan phantom for denoising tests and benchmarks (NumPy only, no downloads).

scikit-image ships the 2D Shepp-Logan phantom (``skimage.data.shepp_logan_phantom``) but
no 3D one. This is the usual 3D extension (Kak & Slaney's ten ellipsoids with the
"modified" contrasts of Toft, as in MATLAB's ``phantom3d``), sampled on a voxel grid that
spans [-1, 1] on every axis and scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np

# value, semi-axes (a, b, c), centre (x0, y0, z0), rotation phi (degrees, about z)
_ELLIPSOIDS = (
    (1.0, (0.6900, 0.920, 0.810), (0.0, 0.0, 0.0), 0.0),
    (-0.8, (0.6624, 0.874, 0.780), (0.0, -0.0184, 0.0), 0.0),
    (-0.2, (0.1100, 0.310, 0.220), (0.22, 0.0, 0.0), -18.0),
    (-0.2, (0.1600, 0.410, 0.280), (-0.22, 0.0, 0.0), 18.0),
    (0.1, (0.2100, 0.250, 0.410), (0.0, 0.35, -0.15), 0.0),
    (0.1, (0.0460, 0.046, 0.050), (0.0, 0.1, 0.25), 0.0),
    (0.1, (0.0460, 0.046, 0.050), (0.0, -0.1, 0.25), 0.0),
    (0.1, (0.0460, 0.023, 0.050), (-0.08, -0.605, 0.0), 0.0),
    (0.1, (0.0230, 0.023, 0.020), (0.0, -0.606, 0.0), 0.0),
    (0.1, (0.0230, 0.046, 0.020), (0.06, -0.605, 0.0), 0.0),
)


def shepp_logan_3d(shape: tuple[int, int, int] = (64, 128, 128)) -> np.ndarray:
    """The 3D modified Shepp-Logan phantom as float32 in [0, 1], axes ordered (z, y, x).

    Args:
        shape: voxels along (z, y, x); every axis spans [-1, 1], so a non-cubic shape
            gives anisotropic voxels (64 x 128 x 128: slices twice as thick as they are wide).
    """
    nz, ny, nx = shape
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, nz, dtype=np.float64),
        np.linspace(-1, 1, ny, dtype=np.float64),
        np.linspace(-1, 1, nx, dtype=np.float64),
        indexing="ij",
    )
    volume = np.zeros(shape, dtype=np.float64)
    for value, (a, b, c), (x0, y0, z0), phi in _ELLIPSOIDS:
        angle = np.deg2rad(phi)
        cos, sin = np.cos(angle), np.sin(angle)
        xr = cos * (x - x0) + sin * (y - y0)
        yr = -sin * (x - x0) + cos * (y - y0)
        inside = (xr / a) ** 2 + (yr / b) ** 2 + ((z - z0) / c) ** 2 <= 1.0
        volume[inside] += value
    low, high = volume.min(), volume.max()
    return ((volume - low) / (high - low)).astype(np.float32)

"""Demo inputs made from data that ships with the dependencies, or generated: no downloads.

- ``t1-brain.nii.gz``: the real T1-weighted MRI from nibabel's test data (``anatomical.nii``).
- ``phantom-3d.nii.gz``: a 3D ellipsoid phantom (1 x 1 x 2 mm voxels) with Gaussian noise,
  oblique-free, known geometry; bright objects on a darker body, like a CT.
- ``shepp-logan.png``: scikit-image's Shepp-Logan phantom with noise, as an 8-bit PNG.
- ``ct-series/``: a synthetic CT series (48 slices, 128x128, HU values, shuffled file names),
  one DICOM file per slice, as scanners export them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def ellipsoid_phantom(shape=(96, 96, 48), spacing=(1.0, 1.0, 2.0), noise=0.05, seed=0) -> np.ndarray:
    """A body ellipsoid (0.3) holding three brighter ellipsoids (0.7-1.0), plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[(np.arange(n) - n / 2 + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    x, y, z = grids
    volume = np.zeros(shape, dtype=np.float32)
    body = (x / 40) ** 2 + (y / 32) ** 2 + (z / 40) ** 2 <= 1
    volume[body] = 0.3
    for (cx, cy, cz), (rx, ry, rz), value in [((-15, 0, 0), (10, 12, 16), 1.0), ((15, 5, 5), (8, 8, 10), 0.8), ((0, -18, -10), (6, 5, 8), 0.7)]:
        volume[((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1] = value
    return (volume + rng.normal(0, noise, shape)).astype(np.float32)


def write_sample_data(directory: str | Path) -> list[Path]:
    import nibabel as nib
    from PIL import Image
    from skimage.data import shepp_logan_phantom

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    t1 = nib.load(str(Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"))
    target = out / "t1-brain.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(t1.dataobj), t1.affine, t1.header), str(target))
    written.append(target)

    spacing = (1.0, 1.0, 2.0)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-48.0, -48.0, -48.0]
    target = out / "phantom-3d.nii.gz"
    nib.save(nib.Nifti1Image(ellipsoid_phantom(spacing=spacing), affine), str(target))
    written.append(target)

    rng = np.random.default_rng(1)
    phantom = shepp_logan_phantom()
    noisy = np.clip(phantom + rng.normal(0, 0.05, phantom.shape), 0, 1)
    target = out / "shepp-logan.png"
    Image.fromarray((noisy * 255).astype(np.uint8)).save(target)
    written.append(target)

    from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series

    write_series(out / "ct-series", ct_like_volume((48, 128, 128), seed=7), SeriesSpec(spacing=(1.5, 1.5, 3.0), series_description="demo CT"))
    written.append(out / "ct-series")
    return written

"""Demo inputs made from data that ships with the dependencies, or generated: no downloads.

- ``t1-brain.nii.gz``: the real T1-weighted MRI from nibabel's test data (``anatomical.nii``).
- ``phantom-3d.nii.gz``: a 3D ellipsoid phantom (1 x 1 x 2 mm voxels) with Gaussian noise,
  oblique-free, known geometry; bright objects on a darker body, like a CT.
- ``shepp-logan.png``: scikit-image's Shepp-Logan phantom with noise, as an 8-bit PNG.
- ``ct-series/``: a synthetic thorax CT series (40 slices of 160x160, 2.2 x 2.2 x 5 mm, HU:
  body with a fat layer, two lungs, spine, sternum and ribs, a couch; shuffled file names),
  one DICOM file per slice, as scanners export them. ``ct_series=N`` writes N of them
  (``ct-series``, ``ct-series-2``, ...), each a different patient size and noise, so the
  demo runs a small batch.
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
    for (cx, cy, cz), (rx, ry, rz), value in [
        ((-15, 0, 0), (10, 12, 16), 1.0),
        ((15, 5, 5), (8, 8, 10), 0.8),
        ((0, -18, -10), (6, 5, 8), 0.7),
    ]:
        volume[((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1] = value
    return (volume + rng.normal(0, noise, shape)).astype(np.float32)


def thorax_ct(
    index: int = 0, shape: tuple[int, int, int] = (160, 160, 40), scale: float = 1.0
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A thorax phantom as DICOM slices ``volume[k, r, c]`` in HU, and (row, col, slice) spacing in mm.

    Each ``index`` is another "patient": a slightly different field of view (so body and lung
    volumes differ from case to case) and noise seed. ``shape`` and ``scale`` (voxel size
    multiplier) give smaller versions of the same anatomy for tests.
    """
    from voxpipe_plugins.segment.phantoms import ct_phantom

    in_plane = (2.2 + 0.15 * (index % 3)) * scale
    spacing = (in_plane, in_plane, 5.0 * scale)
    phantom = ct_phantom(shape=shape, spacing=(spacing[1], spacing[0], spacing[2]), noise_hu=25.0, seed=11 + index)
    # phantom axes are (x: patient left +, y: anterior +, z: superior +); DICOM rows run posterior +
    volume = np.transpose(phantom.image, (2, 1, 0))[:, ::-1, :]
    return np.rint(volume), spacing


def write_sample_data(directory: str | Path, ct_series: int = 1) -> list[Path]:
    """Write the demo inputs into ``directory`` and return what was written (files and series folders)."""
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

    from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, write_series

    for index in range(max(1, ct_series)):
        folder = out / ("ct-series" if index == 0 else f"ct-series-{index + 1}")
        volume, spacing = thorax_ct(index)
        origin = (-(volume.shape[2] - 1) / 2 * spacing[1], -(volume.shape[1] - 1) / 2 * spacing[0], -100.0)
        write_series(
            folder,
            volume,
            SeriesSpec(spacing=spacing, origin=origin, series_description="demo CT", patient_name=f"Demo^Patient{index + 1}", seed=index),
        )
        written.append(folder)
    return written

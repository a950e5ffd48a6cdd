"""A skull-stripped, T1-like brain phantom with partial volume, for ``segment.tissue``'s tests and docs.

Unlike :func:`voxpipe_plugins.segment.phantoms.brain_phantom` (a head with a scalp, sharp
class edges), this one looks like what ``segment.tissue`` is for: a brain with everything
outside it set to 0 (skull-stripped), a folded cortex (gyri and CSF-filled sulci), two
ventricles and deep grey nuclei, and *partial volume*: each voxel's intensity is the mix of
the classes in it, found on a grid ``supersample`` times finer. The truth is the class with
the largest fraction of each voxel, and the fractions themselves. Optional Gaussian noise
and a smooth multiplicative bias field (``bias`` = +/- fraction); fixed seeds, no downloads.
"""

from __future__ import annotations

import numpy as np

from voxpipe_plugins.segment.phantoms import Phantom

T1 = {1: 0.30, 2: 0.65, 3: 0.90}
"""Mean intensity of CSF, grey and white matter: roughly a T1's ratios (MNI152: 0.34, 0.66, 0.83 of its range)."""


def _classes(shape, spacing, ss):
    """Class map (0 outside, 1 CSF, 2 GM, 3 WM) on the grid ``ss`` times finer than ``shape``."""
    axes = [((np.arange(n * ss, dtype=np.float32) + 0.5) / ss - n / 2) * s for n, s in zip(shape, spacing)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    fov = [n * s for n, s in zip(shape, spacing)]
    rx, ry, rz = 0.40 * fov[0], 0.42 * fov[1], 0.38 * fov[2]
    r = np.sqrt((x / rx) ** 2 + (y / ry) ** 2 + (z / rz) ** 2)
    azimuth = np.arctan2(y / ry, x / rx)
    elevation = np.arcsin(np.clip((z / rz) / np.maximum(r, 1e-6), -1, 1))
    folds = np.sin(7 * azimuth) * np.cos(5 * elevation)
    wm_edge = 0.70 + 0.10 * folds  # gyri: white matter reaches out into the cortex
    classes = np.zeros(r.shape, dtype=np.uint8)
    brain = r <= 1.0
    classes[brain] = 1  # the outer CSF rim
    classes[r <= 0.93] = 2
    sulci = (np.abs(np.sin(7 * azimuth + 0.5 * np.pi)) < 0.12) & (r > wm_edge + 0.06) & (r <= 0.93)
    classes[sulci] = 1
    classes[r <= wm_edge] = 3
    for side in (-1, 1):  # ventricles (CSF) and deep grey nuclei beside them
        ventricle = ((x - side * 0.08 * fov[0]) / (0.05 * fov[0])) ** 2 + (y / (0.16 * fov[1])) ** 2 + (z / (0.08 * fov[2])) ** 2
        classes[ventricle <= 1] = 1
        nucleus = (
            ((x - side * 0.19 * fov[0]) / (0.06 * fov[0])) ** 2 + (y / (0.08 * fov[1])) ** 2 + ((z + 0.02 * fov[2]) / (0.06 * fov[2])) ** 2
        )
        classes[nucleus <= 1] = 2
    return classes


def tissue_phantom(
    shape=(48, 56, 48),
    spacing=(2.5, 2.5, 2.5),
    noise: float = 0.04,
    bias: float = 0.0,
    supersample: int = 3,
    seed: int = 0,
) -> Phantom:
    """Skull-stripped T1-like brain: 0 outside, CSF/GM/WM with partial volume, noise inside the brain.

    ``truth["classes"]``: 0 outside the brain, 1 CSF, 2 GM, 3 WM (the class with the largest
    fraction); ``truth["brain"]``: the voxels with any brain in them (the non-zero voxels);
    ``truth["fractions"]``: float32 CSF/GM/WM fractions, shape (3, *shape).
    """
    ss = int(supersample)
    fine = _classes(shape, spacing, ss)
    fractions = np.stack([(fine == c).reshape(shape[0], ss, shape[1], ss, shape[2], ss).mean(axis=(1, 3, 5)) for c in (1, 2, 3)])
    fractions = fractions.astype(np.float32)
    total = fractions.sum(axis=0)
    brain = total >= 0.5  # a voxel at least half inside the brain belongs to it (the skull-stripping mask)
    fractions[:, brain] /= total[brain]
    fractions[:, ~brain] = 0
    image = np.tensordot(np.array([T1[1], T1[2], T1[3]], dtype=np.float32), fractions, axes=1)
    rng = np.random.default_rng(seed)
    image += rng.normal(0.0, noise, shape).astype(np.float32) * brain
    if bias:
        axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
        x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
        field = np.sin(0.8 * x + 0.3) * np.cos(0.6 * y) + 0.5 * z
        field = field / np.abs(field).max()
        image *= 1.0 + bias * field
    image[~brain] = 0.0
    image[brain & (image == 0)] = 1e-3  # keep every brain voxel non-zero: "non-zero" is the mask
    classes = np.where(brain, fractions.argmax(axis=0) + 1, 0).astype(np.uint8)
    affine = np.diag([*spacing, 1.0]).astype(np.float64)
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing)]
    return Phantom(image.astype(np.float32), {"classes": classes, "brain": brain, "fractions": fractions}, affine)

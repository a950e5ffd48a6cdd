"""Synthetic phantoms with known regions, for the segmentation tests, docs and benchmarks.

:func:`ct_phantom` is a thorax-like CT in HU with its true body, lung and bone masks;
:func:`brain_phantom` a T1-like head with CSF, grey and white matter classes. Arrays are
laid out ``X×Y×Z`` (the affine is diagonal: RAS, spacing in mm), noise is Gaussian with a
fixed seed, and nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Phantom:
    image: np.ndarray  # X×Y×Z float32
    truth: dict[str, np.ndarray]  # name -> bool mask (or int class map for "classes")
    affine: np.ndarray


def _grid(shape, spacing):
    """Coordinates in mm, centred on the volume."""
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def ct_phantom(shape=(96, 80, 40), spacing=(2.0, 2.0, 4.0), noise_hu: float = 20.0, seed: int = 0, dtype=np.float32) -> Phantom:
    """Thorax-like CT: air -1000, body 40 HU with a fat layer, two lungs at -850, spine and
    sternum and a rib ring at 700 HU, a couch at 300 HU below the body (not touching it).

    The body spans every slice (cut at the volume's top and bottom like a real scan). Sizes
    scale with the field of view: the body is an ellipse of 80 % x 62 % of it.
    """
    x, y, z = _grid(shape, spacing)
    fov_x, fov_y, fov_z = (n * s for n, s in zip(shape, spacing))
    ax, ay = 0.40 * fov_x, 0.31 * fov_y
    body_r = (x / ax) ** 2 + ((y - 0.02 * fov_y) / ay) ** 2
    body = np.broadcast_to(body_r <= 1, shape)
    fat = np.broadcast_to(body_r > 0.85**2, shape) & body
    lung_rz = (z / (0.42 * fov_z)) ** 2
    lungs = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        lungs |= (((x - side * 0.18 * fov_x) / (0.13 * fov_x)) ** 2 + ((y - 0.04 * fov_y) / (0.19 * fov_y)) ** 2 + lung_rz) <= 1
    spine = np.broadcast_to(((x / (0.045 * fov_x)) ** 2 + ((y + 0.18 * fov_y) / (0.05 * fov_y)) ** 2) <= 1, shape)
    sternum = np.broadcast_to(((x / (0.03 * fov_x)) ** 2 + ((y - 0.27 * fov_y) / (0.02 * fov_y)) ** 2) <= 1, shape)
    rib_ring = (body_r <= 0.80**2) & (body_r > 0.74**2)
    ribs = np.broadcast_to(rib_ring & (np.abs(np.sin(np.arctan2(y, x) * 6)) > 0.5), shape) & (np.abs(z) < 0.45 * fov_z)
    bone = (spine | sternum | ribs) & body
    couch = np.broadcast_to((y < -0.40 * fov_y) & (y > -0.44 * fov_y) & (np.abs(x) < 0.45 * fov_x), shape)
    volume = np.full(shape, -1000.0, dtype=dtype)
    volume[couch] = 300.0
    volume[body] = 40.0
    volume[fat] = -100.0
    volume[lungs] = -850.0
    volume[bone] = 700.0
    rng = np.random.default_rng(seed)
    volume += rng.normal(0.0, noise_hu, shape).astype(dtype)
    affine = np.diag([*spacing, 1.0]).astype(np.float64)
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing)]
    return Phantom(volume, {"body": np.array(body), "lungs": lungs, "bone": np.array(bone)}, affine)


def brain_phantom(shape=(64, 76, 60), spacing=(2.0, 2.0, 2.0), noise: float = 0.04, seed: int = 0) -> Phantom:
    """T1-like head: background 0, CSF 0.25 (outer rim and two ventricles), grey matter 0.6
    (a cortical shell), white matter 1.0 (inside), a scalp ring 0.8 around a dark skull.

    ``truth["classes"]`` is 0 outside the brain, 1 CSF, 2 GM, 3 WM; ``truth["brain"]``
    the union (the true brain mask).
    """
    x, y, z = _grid(shape, spacing)
    fov = [n * s for n, s in zip(shape, spacing)]
    r = (x / (0.36 * fov[0])) ** 2 + (y / (0.36 * fov[1])) ** 2 + (z / (0.36 * fov[2])) ** 2
    brain = r <= 1
    gm = r <= 0.90**2
    wm = r <= 0.72**2
    classes = np.zeros(shape, dtype=np.uint8)
    classes[brain] = 1
    classes[gm] = 2
    classes[wm] = 3
    for side in (-1, 1):
        ventricle = ((x - side * 0.06 * fov[0]) / (0.04 * fov[0])) ** 2 + (y / (0.12 * fov[1])) ** 2 + (z / (0.08 * fov[2])) ** 2 <= 1
        classes[ventricle] = 1
    scalp = (r > 1.10**2) & (r <= 1.20**2)
    image = np.zeros(shape, dtype=np.float32)
    image[scalp] = 0.8
    image[classes == 1] = 0.25
    image[classes == 2] = 0.6
    image[classes == 3] = 1.0
    image += np.random.default_rng(seed).normal(0.0, noise, shape).astype(np.float32)
    affine = np.diag([*spacing, 1.0]).astype(np.float64)
    return Phantom(image, {"classes": classes, "brain": classes > 0}, affine)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total

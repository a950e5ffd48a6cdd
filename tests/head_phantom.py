"""A generated whole-head T1 phantom with a KNOWN brain mask and tissue map (issue 20).

The head is built from nested, surface-perturbed ellipsoids in mm, on an RAS grid (array axes
x: left -> right, y: posterior -> anterior, z: inferior -> superior), so any spacing gives the
same anatomy:

- brain: white matter, a folded grey-matter ribbon (3-8 mm), deep grey matter, two lateral
  ventricles (dark CSF) and sulcal CSF; the known ``brain`` mask is everything inside the pial
  envelope (grey + white matter + sulcal and ventricular CSF), the way brain-extraction
  references (BET, the MNI brain mask) draw it;
- a dark CSF rim, 1.5 to 4 mm, between the brain and the skull (what a brain extraction cuts
  through), crossed by ``bridges`` thin bright veins;
- the skull: dark inner and outer tables of cortical bone around brighter marrow (diploë);
- the scalp: bright subcutaneous fat (brighter than white matter on T1) and grey skin/muscle;
- the eyes (dark vitreous in bright orbital fat), the brainstem and spinal cord (white matter in a
  CSF sleeve) running from the brain through the skull base into the neck, and a neck of muscle that leaves the field of
  view inferiorly, joined to the scalp: the parts that make a whole-head T1 harder than a sphere;
- a smooth multiplicative bias field (± ``bias``) and Rician noise (σ ``noise``).

Intensities are on a T1 scale where white matter is 0.85: CSF 0.15, grey matter 0.55,
cortical bone 0.05, marrow 0.6, fat 1.0, muscle/skin 0.45, vitreous 0.1, air 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# tissue codes in HeadPhantom.tissue
AIR, CSF, GM, WM, BONE, MARROW, FAT, MUSCLE, VITREOUS = range(9)
T1 = np.array([0.0, 0.15, 0.55, 0.85, 0.05, 0.6, 1.0, 0.45, 0.1], dtype=np.float32)
BRAIN_SEMI_AXES_MM = (62.0, 78.0, 58.0)
BRAIN_CENTRE_MM = (0.0, 0.0, 12.0)


@dataclass
class HeadPhantom:
    image: np.ndarray  # float32 T1 with bias and noise, spatial axes only
    clean: np.ndarray  # float32 T1 without bias or noise
    brain: np.ndarray  # uint8 known brain mask (GM + WM + sulcal and ventricular CSF)
    tissue: np.ndarray  # uint8 tissue codes (AIR, CSF, GM, WM, ...)
    field: np.ndarray  # float32 multiplicative bias field
    affine: np.ndarray  # 4x4 RAS affine
    spacing: tuple[float, float, float]

    @property
    def brain_volume_ml(self) -> float:
        return float(self.brain.sum()) * float(np.prod(self.spacing)) / 1000.0


def _radius(x, y, z, semi, centre):
    return np.sqrt(((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2 + ((z - centre[2]) / semi[2]) ** 2)


def head_phantom(
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
    fov_mm: tuple[float, float, float] = (176.0, 216.0, 200.0),
    noise: float = 0.04,
    bias: float = 0.2,
    seed: int = 0,
    bridges: int = 12,
) -> HeadPhantom:
    """Build the phantom on a grid of ``spacing`` mm covering ``fov_mm`` (centred on the head)."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(round(f / s)) for f, s in zip(fov_mm, spacing))
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    cx, cy, cz = BRAIN_CENTRE_MM
    # direction cosines from the brain centre, for the folding pattern of the cortex
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) + 1e-6
    u, v, w = (x - cx) / d, (y - cy) / d, (z - cz) / d
    folds = 0.5 + 0.5 * np.sin(9 * u + 2) * np.sin(8 * v + 1) * np.sin(7 * w + 3)  # 0..1
    r_brain = _radius(x, y, z, BRAIN_SEMI_AXES_MM, BRAIN_CENTRE_MM)
    mean_semi = float(np.mean(BRAIN_SEMI_AXES_MM))

    def shell(mm: float):  # radius (in units of the brain ellipsoid) of a surface `mm` outside it
        return 1.0 + mm / mean_semi

    tissue = np.zeros(shape, dtype=np.uint8)
    # neck: a vertical elliptic cylinder of muscle under the head, leaving the field of view inferiorly
    neck = ((x / 45.0) ** 2 + ((y + 10.0) / 50.0) ** 2 <= 1) & (z < cz - 40.0)
    tissue[np.broadcast_to(neck, shape)] = MUSCLE
    # scalp: skin/muscle outside, fat inside it
    tissue[r_brain <= shell(17.0)] = MUSCLE
    tissue[r_brain <= shell(15.0)] = FAT
    tissue[r_brain <= shell(10.0)] = BONE  # outer table
    tissue[r_brain <= shell(8.5)] = MARROW
    tissue[r_brain <= shell(5.5)] = BONE  # inner table
    # the CSF rim between brain and skull: 1.5 mm where the brain nearly touches the skull, up to 4 mm
    rim_mm = 1.5 + 2.5 * (0.5 + 0.5 * np.sin(3 * u + 1) * np.cos(4 * v))
    tissue[r_brain <= 1.0 + rim_mm / mean_semi] = CSF
    # bridging veins: thin bright tubes across the rim into the skull (they defeat a plain threshold)
    for _ in range(bridges):
        theta, phi = rng.uniform(0.2, 2.6), rng.uniform(0, 2 * np.pi)
        direction = np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
        along = (x - cx) * direction[0] + (y - cy) * direction[1] + (z - cz) * direction[2]
        across2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 - along**2
        vein = (across2 <= 1.2**2) & (r_brain > 0.9) & (r_brain <= shell(7.0)) & (along > 0)
        tissue[vein] = MARROW
    # eyes: orbital fat around dark vitreous, in front of the brain, below its equator
    for side in (-1.0, 1.0):
        eye = _radius(x, y, z, (16.0, 14.0, 14.0), (side * 32.0, cy + 80.0, cz - 32.0))
        tissue[eye <= 1.0] = FAT
        tissue[eye <= 0.72] = VITREOUS
    # brainstem and spinal cord: white matter in a CSF sleeve through the skull base (foramen magnum) into
    # the neck; only the part inside the brain's ellipsoid counts as brain
    stem_r = np.sqrt((x / 11.0) ** 2 + ((y + 12.0) / 9.0) ** 2)
    below = z < cz - 20.0
    tissue[np.broadcast_to((stem_r <= 1.35) & below, shape)] = CSF
    tissue[np.broadcast_to((stem_r <= 1.0) & below, shape)] = WM
    # brain: a folded grey-matter ribbon (2.5-6 mm) over white matter, sulcal CSF in the deep folds
    brain = r_brain <= 1.0
    tissue[brain] = GM
    ribbon_mm = 3.0 + 5.0 * folds
    wm = r_brain <= 1.0 - ribbon_mm / mean_semi
    tissue[wm] = WM
    sulci = brain & (folds > 0.65) & (r_brain > 1.0 - 12.0 / mean_semi)
    tissue[sulci] = CSF
    ventricles = np.zeros(shape, dtype=bool)
    for side in (-1.0, 1.0):
        ventricles |= _radius(x, y, z, (8.0, 28.0, 12.0), (cx + side * 10.0, cy + 2.0, cz + 4.0)) <= 1.0
    for side in (-1.0, 1.0):  # deep grey matter (thalamus) beside the ventricles
        tissue[_radius(x, y, z, (9.0, 12.0, 9.0), (cx + side * 16.0, cy - 14.0, cz - 4.0)) <= 1.0] = GM
    tissue[ventricles] = CSF
    known = brain | ventricles  # inside the pial envelope, sulcal CSF included (as the MNI brain mask draws it)

    clean = T1[tissue]
    X, Y, Z = (np.broadcast_to(a, shape) for a in (x, y, z))
    field = (1.0 + bias * np.clip(0.6 * X / 90.0 - 0.5 * Y / 110.0 + 0.7 * (Z / 100.0) ** 2 - 0.3 * Z / 100.0, -1.0, 1.0)).astype(
        np.float32
    )
    signal = clean * field
    noisy = np.sqrt((signal + rng.normal(0.0, noise, shape)) ** 2 + rng.normal(0.0, noise, shape) ** 2)  # Rician
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [a[0] for a in axes]
    return HeadPhantom(
        image=noisy.astype(np.float32),
        clean=clean.astype(np.float32),
        brain=known.astype(np.uint8),
        tissue=tissue,
        field=field,
        affine=affine,
        spacing=tuple(float(s) for s in spacing),
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0

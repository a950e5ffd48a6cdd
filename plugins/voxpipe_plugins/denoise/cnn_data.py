"""Training images for the shipped denoise.cnn models: only data that ships with the dependencies, or generated.

``python -m voxpipe_plugins.denoise.cnn_data mr DIR`` writes the MR set: scikit-image's
grey-level photographs (DnCNN-style denoisers learn much of their prior from natural
images), generated brain-like magnitude slices (dark background, skin, skull, grey and white matter, CSF, a smooth
bias field) and generated 3D brain volumes (a folded cortical ribbon, sulci, ventricles; 1 mm). ``... ct DIR`` writes generated body CT slices in HU (air, fat, muscle and
organs with smooth texture, lungs with vessels, spine and ribs) and scikit-image's
Shepp-Logan phantom mapped to HU. Neither set includes the real images used for evaluation
(nibabel's ``anatomical.nii`` and its derivatives, pydicom's ``MR_small.dcm`` and
``CT_small.dcm``, nilearn's ICBM template); held-apart phantoms use seeds from
:data:`HELD_APART_SEED` on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PHOTOS = (
    "camera",
    "moon",
    "coins",
    "brick",
    "grass",
    "gravel",
    "text",
    "page",
    "cell",
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "retina",
    "immunohistochemistry",
    "hubble_deep_field",
    "clock",
)
HELD_APART_SEED = 10_000
"""Phantom seeds below this train the shipped models; evaluation phantoms use seeds from here on."""


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-12)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")


def _ellipse(y, x, cy, cx, ry, rx, angle=0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u, v = (y - cy) * c + (x - cx) * s, -(y - cy) * s + (x - cx) * c
    return (u / ry) ** 2 + (v / rx) ** 2 <= 1.0


def brain_slice(seed: int, size: int = 192) -> np.ndarray:
    """A T1-like magnitude slice in [0, ~1]: background 0, skin, dark skull, GM/WM with folded boundaries, CSF."""
    rng = np.random.default_rng(seed)
    y, x = _grid(size)
    ry, rx = rng.uniform(0.75, 0.9), rng.uniform(0.6, 0.75)
    r = np.sqrt((y / ry) ** 2 + (x / rx) ** 2)
    wobble = 0.03 * _smooth_field(rng, (size, size), size / 10)
    image = np.zeros((size, size))
    image[r + wobble <= 1.0] = rng.uniform(0.5, 0.8)  # skin / fat
    image[r + wobble <= 0.93] = rng.uniform(0.05, 0.15)  # skull
    brain = r + wobble <= 0.86
    folds = _smooth_field(rng, (size, size), rng.uniform(2.5, 5.0))
    depth = np.clip((0.86 - r) / 0.86, 0, 1)
    white = brain & (folds + 3.0 * (depth - 0.35) > 0)
    gm, wm = rng.uniform(0.45, 0.6), rng.uniform(0.7, 0.85)
    image[brain] = gm
    image[white] = wm
    csf = rng.uniform(0.1, 0.25)
    image[brain & (folds < -1.6) & (depth < 0.3)] = csf  # sulci
    for side in (-1, 1):  # lateral ventricles
        image[
            _ellipse(
                y, x, rng.uniform(-0.15, 0.05), side * rng.uniform(0.08, 0.16), rng.uniform(0.15, 0.3), rng.uniform(0.04, 0.08), side * 0.2
            )
        ] = csf
    texture = 1.0 + 0.03 * _smooth_field(rng, (size, size), 1.0)
    bias = 1.0 + 0.12 * _smooth_field(rng, (size, size), size / 3)
    from scipy.ndimage import gaussian_filter

    return (gaussian_filter(image, 0.7) * texture * bias).clip(0, None).astype(np.float32)


def _smooth_field3(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-12)


def brain_volume(seed: int, shape: tuple[int, int, int] = (112, 128, 64)) -> np.ndarray:
    """A T1-like 1 mm magnitude volume in [0, ~1], the 3D analogue of :func:`brain_slice`: a folded
    cortical ribbon (grey matter within a few voxels of the surface and of the sulci), white matter,
    CSF in sulci and curved ventricles, deep nuclei, fine texture, a bias field; with or without skin
    and skull (skull-stripped images are common).

    3D, so that a hybrid model is trained on the 3D NLM estimate it gets at inference on volumes, and
    on slices cut along every axis."""
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n) * n / max(shape) for n in shape]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    radii = rng.uniform(0.8, 0.95), rng.uniform(0.85, 0.98), rng.uniform(0.75, 0.9)
    centre = rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), rng.uniform(-0.2, 0.4)
    r = np.sqrt(((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2)
    r = r + 0.03 * _smooth_field3(rng, shape, max(shape) / 10)
    image = np.zeros(shape, dtype=np.float32)
    if rng.random() < 0.5:  # skin / fat and skull; else skull-stripped
        image[r <= 1.0] = rng.uniform(0.5, 0.85)
        image[r <= 0.93] = rng.uniform(0.03, 0.15)
    brain = r <= 0.87
    folds = _smooth_field3(rng, shape, rng.uniform(3.0, 5.0))
    sulci = brain & (np.abs(folds) < rng.uniform(0.08, 0.16)) & (r > rng.uniform(0.35, 0.55))
    csf_space = ~brain | sulci
    ventricles = np.zeros(shape, dtype=bool)
    for side in (-1, 1):  # lateral ventricles: curved tubes
        cz, cy = rng.uniform(-0.15, 0.05), side * rng.uniform(0.06, 0.14)
        bend = 0.6 * (x - centre[2]) ** 2
        ventricles |= ((z - cz + bend) / rng.uniform(0.05, 0.1)) ** 2 + ((y - cy) / rng.uniform(0.03, 0.07)) ** 2 + (
            (x - centre[2] - rng.uniform(-0.1, 0.1)) / rng.uniform(0.3, 0.45)
        ) ** 2 <= 1.0
    distance = distance_transform_edt(~csf_space)
    ribbon = rng.uniform(2.0, 4.0)
    gm, wm, csf = rng.uniform(0.45, 0.62), rng.uniform(0.72, 0.9), rng.uniform(0.08, 0.25)
    tissue = np.where(distance < ribbon, gm, wm).astype(np.float32)
    tissue += (wm - gm) * 0.15 * _smooth_field3(rng, shape, rng.uniform(3.0, 8.0))  # smooth intensity variation
    image[brain] = tissue[brain]
    image[sulci] = csf
    for _ in range(int(rng.integers(2, 7))):  # deep grey nuclei / lesions
        c = [rng.uniform(-0.3, 0.3) for _ in range(3)]
        blob = ((z - c[0]) ** 2 + ((y - c[1]) / rng.uniform(0.6, 1.4)) ** 2 + (x - c[2]) ** 2) <= rng.uniform(0.04, 0.12) ** 2
        image[blob & brain & ~sulci] = rng.uniform(0.3, 0.9) * wm
    image[ventricles & brain] = csf
    texture = 1.0 + rng.uniform(0.005, 0.03) * _smooth_field3(rng, shape, rng.uniform(0.7, 1.5))
    bias = 1.0 + rng.uniform(0.0, 0.12) * _smooth_field3(rng, shape, max(shape) / 3)
    return (gaussian_filter(image, rng.uniform(0.6, 1.0)) * texture * bias).clip(0, None).astype(np.float32)


def ct_slice(seed: int, size: int = 256) -> np.ndarray:
    """A body CT slice in HU: air, skin/fat, muscle, organs with texture, lungs with vessels, spine and ribs."""
    rng = np.random.default_rng(seed)
    y, x = _grid(size)
    image = np.full((size, size), -1000.0)
    by, bx = rng.uniform(0.55, 0.75), rng.uniform(0.8, 0.95)
    wobble = 0.02 * _smooth_field(rng, (size, size), size / 8)
    body = ((y / by) ** 2 + (x / bx) ** 2) + wobble <= 1.0
    inner = ((y / (by - 0.07)) ** 2 + (x / (bx - 0.07)) ** 2) + wobble <= 1.0
    image[body] = rng.uniform(-120, -80)  # subcutaneous fat
    image[inner] = 40 + 10 * _smooth_field(rng, (size, size), 3.0)[inner]  # muscle / soft tissue
    thorax = rng.random() < 0.6
    if thorax:
        for side in (-1, 1):
            lung = (
                _ellipse(y, x, rng.uniform(-0.15, 0.0), side * rng.uniform(0.35, 0.45), rng.uniform(0.35, 0.45), rng.uniform(0.22, 0.3))
                & inner
            )
            image[lung] = -850 + 40 * _smooth_field(rng, (size, size), 2.0)[lung]
            vessels = lung & (_smooth_field(rng, (size, size), 1.2) > 2.0)
            image[vessels] = rng.uniform(-100, 40)
        image[_ellipse(y, x, 0.05, rng.uniform(-0.1, 0.1), 0.25, 0.2) & inner] = 45  # heart / mediastinum
    else:
        organs = [(60, 0.3), (30, 0.12), (35, 0.1), (-5, 0.12)]  # liver, kidneys/spleen, bowel-ish
        for value, radius in organs:
            cy, cx = rng.uniform(-0.3, 0.2), rng.uniform(-0.5, 0.5)
            mask = _ellipse(y, x, cy, cx, radius * rng.uniform(0.8, 1.3), radius * rng.uniform(0.8, 1.3), rng.uniform(0, np.pi)) & inner
            image[mask] = value + 8 * _smooth_field(rng, (size, size), 2.0)[mask]
        gas = inner & (_smooth_field(rng, (size, size), 3.0) > 2.2)
        image[gas] = -950
    vy = by - rng.uniform(0.2, 0.28)
    image[_ellipse(y, x, vy, 0, 0.12, 0.1)] = rng.uniform(250, 450)  # vertebral body
    image[_ellipse(y, x, vy, 0, 0.12, 0.1) & ~_ellipse(y, x, vy, 0, 0.1, 0.08)] = rng.uniform(700, 1100)  # cortex
    image[_ellipse(y, x, vy - 0.2, 0, 0.05, 0.05)] = 60  # aorta
    if thorax:  # ribs just inside the body wall
        for k in range(10):
            theta = 2 * np.pi * (k + rng.uniform(-0.2, 0.2)) / 10
            cy, cx = (by - 0.1) * np.sin(theta), (bx - 0.1) * np.cos(theta)
            image[_ellipse(y, x, cy, cx, 0.035, 0.03)] = rng.uniform(500, 900)
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image, 0.6).astype(np.float32)


def shepp_logan_hu(size: int = 256) -> np.ndarray:
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    phantom = resize(np.pad(shepp_logan_phantom(), 40), (size, size), anti_aliasing=True)
    return (phantom * 1000.0 - 1000.0).astype(np.float32)


def _write_nifti(array: np.ndarray, path: Path, spacing: float) -> None:
    import nibabel as nib

    affine = np.diag([spacing, spacing, spacing, 1.0])
    nib.save(nib.Nifti1Image(array[..., None].astype(np.float32), affine), str(path))


def _write_volume(array: np.ndarray, path: Path) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), str(path))


VAL_SEEDS = range(900, 903)
"""Validation phantoms (written to ``val/``): apart from training, and from the evaluation seeds too."""


MR_VOLUMES = 8
"""Generated 3D brain volumes in the MR set (:func:`brain_volume`, seeds 0-7), for the hybrid model's 3D guide."""


def write_mr(root: Path, phantoms: int = 24, volumes: int = MR_VOLUMES) -> int:
    import skimage.data as data
    from skimage.color import rgb2gray
    from skimage.io import imsave

    folder, val = root / "train", root / "val"
    folder.mkdir(parents=True, exist_ok=True)
    val.mkdir(parents=True, exist_ok=True)
    for seed in VAL_SEEDS:
        _write_nifti(brain_slice(seed, 128), val / f"brain-phantom-{seed:03d}.nii.gz", 1.0)
    if volumes:
        _write_volume(brain_volume(VAL_SEEDS[0], (80, 96, 40)), val / f"brain-volume-{VAL_SEEDS[0]:03d}.nii.gz")
    count = 0
    for name in PHOTOS:
        image = getattr(data, name)()
        grey = rgb2gray(image[..., :3]) if image.ndim == 3 else image / (255.0 if image.dtype == np.uint8 else 1.0)
        imsave(str(folder / f"photo-{name}.png"), (np.clip(grey, 0, 1) * 65535).astype(np.uint16), check_contrast=False)
        count += 1
    for seed in range(phantoms):
        _write_nifti(brain_slice(seed), folder / f"brain-phantom-{seed:03d}.nii.gz", 1.0)
        count += 1
    for seed in range(volumes):
        _write_volume(brain_volume(seed), folder / f"brain-volume-{seed:03d}.nii.gz")
        count += 1
    return count


def write_ct(root: Path, phantoms: int = 24) -> int:
    folder, val = root / "train", root / "val"
    folder.mkdir(parents=True, exist_ok=True)
    val.mkdir(parents=True, exist_ok=True)
    for seed in VAL_SEEDS:
        _write_nifti(ct_slice(seed, 160), val / f"ct-phantom-{seed:03d}.nii.gz", 0.8)
    _write_nifti(shepp_logan_hu(), folder / "shepp-logan-hu.nii.gz", 0.8)
    for seed in range(phantoms):
        _write_nifti(ct_slice(seed), folder / f"ct-phantom-{seed:03d}.nii.gz", 0.8)
    return phantoms + 1


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("mr", "ct"):
        print("usage: python -m voxpipe_plugins.denoise.cnn_data {mr|ct} FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[1])
    if folder.exists() and any(folder.iterdir()):
        print(f"{folder}: not empty; give a new folder", file=sys.stderr)
        return 2
    count = write_mr(folder) if argv[0] == "mr" else write_ct(folder)
    print(
        f"wrote {count} {argv[0].upper()} training images to {folder / 'train'} and {sum(1 for _ in (folder / 'val').iterdir())} validation images to {folder / 'val'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""A synthetic 3D segmentation dataset: ellipsoid "organs" of different intensities in noise.

Used by the tests, the docs' worked example and the benchmarks; nothing is downloaded.

    python -m voxpipe_plugins.deep.synthetic build/organs --count 12
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ORGANS = ("liver", "kidney", "spleen")
INTENSITY = (0.35, 0.6, 0.85)  # background is about 0.1


def make_case(rng: np.random.Generator, size: int = 48, organs: int = 3, noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8), both ``size``³: ``organs`` ellipsoids at random places, sizes and intensities."""
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1).astype(np.float32)
    label = np.zeros((size,) * 3, np.uint8)
    for k in range(organs):
        radii = rng.uniform(0.12, 0.25, 3) * size
        centre = rng.uniform(0.3, 0.7, 3) * size
        inside = (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
        label[inside] = k + 1
    image = np.full(label.shape, 0.1, np.float32)
    for k in range(organs):
        image[label == k + 1] = INTENSITY[k] + rng.uniform(-0.04, 0.04)
    image += rng.normal(0, noise, image.shape).astype(np.float32)
    return image, label


def write_dataset(folder: Path, count: int, size: int = 48, organs: int = 3, seed: int = 0, spacing: float = 1.5) -> Path:
    """``folder/images/case_NNN.nii.gz`` and ``folder/labels/case_NNN.nii.gz`` (same names), 1.5 mm voxels."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, label = make_case(rng, size, organs)
        nib.save(nib.Nifti1Image(image, affine), str(folder / "images" / f"case_{i:03d}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(folder / "labels" / f"case_{i:03d}.nii.gz"))
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=12, help="number of cases (default 12)")
    parser.add_argument("--size", type=int, default=48, help="edge of each cubic volume in voxels (default 48)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_dataset(args.folder, args.count, args.size, seed=args.seed))


if __name__ == "__main__":
    main()

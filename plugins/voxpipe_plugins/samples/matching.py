"""Inputs for the matching tour (docs/matching.md): labelled lesions, a moved follow-up scan, a rotated slice pair.

- ``shapes/cubeNN.nii.gz``, ``shapes/sphereNN.nii.gz``: a bright lesion in noise (28^3 voxels
  of 1 mm), a smooth sphere or a textured cube of 10-16 mm, alternating; ``labels.csv``
  (``input,label``) names each file's class, as a user would label their own scans.
- ``baseline.nii.gz`` / ``followup.nii.gz``: nibabel's real T1 and the same voxels with the
  patient moved by a known rigid motion (``followup-motion.json``, RAS mm), for ``register``.
- ``slice-a.png`` / ``slice-b.png``: a real CT slice (pydicom's ``CT_small.dcm``, 2x upsampled)
  and a rotated, shifted copy, for ``keypoints``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

FOLLOWUP_DEGREES = 6.0
FOLLOWUP_SHIFT_MM = (4.0, -3.0, 2.0)
SLICE_DEGREES, SLICE_SHIFT_PX = 12.0, (9.0, -6.0)


def lesion_volume(kind: str, size_mm: float, seed: int) -> np.ndarray:
    """A bright lesion in noise, 28^3 voxels of 1 mm: a smooth sphere, or a cube with a coarse texture."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    n = 28
    grid = np.indices((n, n, n)) - (n - 1) / 2 + rng.uniform(-1.5, 1.5, size=(3, 1, 1, 1))
    if kind == "sphere":
        inside = (grid**2).sum(0) <= (size_mm / 2) ** 2
        texture = 0.0
    else:
        inside = np.all(np.abs(grid) <= size_mm / 2, axis=0)
        texture = 40 * ndimage.gaussian_filter(rng.normal(0, 1, inside.shape), 1.0) / 0.18
    return (np.where(inside, 200.0 + texture, 20.0) + rng.normal(0, 8, inside.shape)).astype(np.float32)


def rigid_motion(degrees: float, shift_mm) -> np.ndarray:
    """4x4 RAS rotation about the superior axis, then a shift."""
    a = np.deg2rad(degrees)
    motion = np.eye(4)
    motion[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    motion[:3, 3] = shift_mm
    return motion


def write_matching_data(directory: Path, count: int = 12) -> list[Path]:
    """Write the tour's inputs under ``directory`` and return what was written."""
    import nibabel as nib
    from PIL import Image
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from skimage import transform

    from voxpipe.atomic import atomic_path

    directory.mkdir(parents=True, exist_ok=True)
    shapes = directory / "shapes"
    shapes.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        kind = "sphere" if i % 2 else "cube"
        name = f"{kind}{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(lesion_volume(kind, rng.uniform(10, 16), i), np.eye(4)), str(shapes / name))
        rows.append({"input": name, "label": kind})
    with atomic_path(directory / "labels.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["input", "label"])
        writer.writeheader()
        writer.writerows(rows)

    t1 = nib.load(str(Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"))
    voxels = np.asanyarray(t1.dataobj)
    nib.save(nib.Nifti1Image(voxels, t1.affine), str(directory / "baseline.nii.gz"))
    motion = rigid_motion(FOLLOWUP_DEGREES, FOLLOWUP_SHIFT_MM)
    nib.save(nib.Nifti1Image(voxels, motion @ t1.affine), str(directory / "followup.nii.gz"))
    with atomic_path(directory / "followup-motion.json") as tmp:
        tmp.write_text(json.dumps({"baseline_to_followup_ras_mm": motion.round(6).tolist()}, indent=2) + "\n")

    ct = dcmread(get_testdata_file("CT_small.dcm", download=False)).pixel_array.astype(np.float64)
    ct = transform.rescale(ct, 2, order=3)
    ct = np.clip((ct - ct.min()) / (np.ptp(ct) or 1.0), 0, 1)
    moved = transform.warp(
        ct, (transform.EuclideanTransform(rotation=np.deg2rad(SLICE_DEGREES), translation=SLICE_SHIFT_PX)).inverse, preserve_range=True
    )
    Image.fromarray((ct * 255).astype(np.uint8)).save(directory / "slice-a.png")
    Image.fromarray((moved * 255).astype(np.uint8)).save(directory / "slice-b.png")
    return [
        shapes,
        directory / "labels.csv",
        directory / "baseline.nii.gz",
        directory / "followup.nii.gz",
        directory / "slice-a.png",
        directory / "slice-b.png",
    ]

"""A slice of a volume as a picture, labels overlaid in colour: the preview writers' renderer, and the
report's thumbnail for a case whose stages recorded no picture.

Core API (NumPy arrays and an affine in, a PIL image out), so the report draws its fallback
thumbnail without importing any plugin and the preview plugin draws with the same code.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation
from PIL import Image

PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ],
    dtype=np.float32,
)


def ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder/flip a 3D array to RAS axes; returns the array and its voxel spacing."""
    ornt = io_orientation(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    ras_spacing = np.empty(3)
    for axis, (target, _) in enumerate(ornt):
        ras_spacing[int(target)] = spacing[axis]
    return apply_orientation(array, ornt), ras_spacing


def planes(array: np.ndarray, affine: np.ndarray | None, lab: np.ndarray | None, slice_choice: str = "largest_label"):
    """(grey 2D or RGB 3D array, label 2D array or None, (row_mm, col_mm)) of a channel-first array.

    A 2D image (C, W, H) is shown as stored; a volume (C, X, Y, Z) is reoriented to RAS and cut
    axially in radiological view at the slice with most label voxels (or the middle one).
    """
    array = array.astype(np.float32)
    if array.ndim == 3:  # (C, W, H): a 2D image
        grey = array[0].T if array.shape[0] != 3 else np.transpose(array, (2, 1, 0))
        return grey, (lab.T if lab is not None else None), (1.0, 1.0)
    volume, spacing = ras(array.mean(axis=0) if array.shape[0] > 1 else array[0], affine)
    labels = ras(lab, affine)[0] if lab is not None else None
    z = volume.shape[2] // 2
    if labels is not None and slice_choice == "largest_label" and labels.any():
        z = int(np.argmax((labels > 0).sum(axis=(0, 1))))
    grey = volume[::-1, ::-1, z].T  # rows: anterior->posterior, cols: patient right->left
    plane = labels[::-1, ::-1, z].T if labels is not None else None
    return grey, plane, (float(spacing[1]), float(spacing[0]))


def render(grey: np.ndarray, plane: np.ndarray | None, pixel_mm: tuple[float, float], alpha: float, min_size: int) -> Image.Image:
    """Window the grey image, scale it to physical proportions, and blend the labels in colour."""
    height_mm, width_mm = grey.shape[0] * pixel_mm[0], grey.shape[1] * pixel_mm[1]
    factor = max(min_size / min(height_mm, width_mm), 1.0 / min(pixel_mm))
    size = (max(1, round(width_mm * factor)), max(1, round(height_mm * factor)))
    low, high = np.percentile(grey, [1, 99]) if grey.size else (0, 1)
    scaled = np.clip((grey - low) / (high - low), 0, 1) if high > low else np.zeros_like(grey)
    channels = [scaled[..., c] for c in range(3)] if scaled.ndim == 3 else [scaled]
    resized = [np.asarray(Image.fromarray(c.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR)) for c in channels]
    rgb = np.stack(resized * (3 if len(resized) == 1 else 1), axis=-1).clip(0, 1) * 255
    if plane is not None:
        labels = np.asarray(Image.fromarray(plane.astype(np.int32), "I").resize(size, Image.Resampling.NEAREST))
        for value in np.unique(labels[labels > 0]).astype(int):
            mask = labels == value
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * PALETTE[(value - 1) % len(PALETTE)]
    return Image.fromarray(rgb.astype(np.uint8), "RGB")

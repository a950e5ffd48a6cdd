"""A slice of a volume as a picture a radiologist can check at a glance: the preview writers'
renderer, and the report's thumbnail for a case whose stages recorded no picture.

Labels are drawn as coloured contours (a fill hides the anatomy under it), volumes carry
orientation letters (R/L/A/P/S/I, from the affine after reorienting to RAS) and a scale bar
in mm, and the slice shown is the one where the *smallest* label is largest: the body or a
big organ is easy to find on any slice, the small structure is what needs checking.

Core API (NumPy arrays and an affine in, a PIL image out), so the report draws its fallback
thumbnail without importing any plugin and the preview plugin draws with the same code.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation
from PIL import Image, ImageDraw, ImageFont

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

# (top, bottom, left, right) letters of each plane in radiological view (see ``planes``).
AXIAL = ("A", "P", "R", "L")
CORONAL = ("S", "I", "R", "L")
SAGITTAL = ("S", "I", "A", "P")


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
    axially in radiological view at :func:`best_slice` (or the middle one).
    """
    array = array.astype(np.float32)
    if array.ndim == 3:  # (C, W, H): a 2D image
        grey = array[0].T if array.shape[0] != 3 else np.transpose(array, (2, 1, 0))
        return grey, (lab.T if lab is not None else None), (1.0, 1.0)
    volume, spacing = ras(array.mean(axis=0) if array.shape[0] > 1 else array[0], affine)
    labels = ras(lab, affine)[0] if lab is not None else None
    z = volume.shape[2] // 2
    if labels is not None and slice_choice == "largest_label" and labels.any():
        z = best_slice(labels, axis=2)
    grey = volume[::-1, ::-1, z].T  # rows: anterior->posterior, cols: patient right->left
    plane = labels[::-1, ::-1, z].T if labels is not None else None
    return grey, plane, (float(spacing[1]), float(spacing[0]))


def best_slice(labels: np.ndarray, axis: int = 2) -> int:
    """The slice along ``axis`` where the smallest label (fewest voxels) has its largest area.

    Ties between labels of equal size go to the lowest value; a map with no label gives the middle.
    """
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    if values.size == 0:
        return labels.shape[axis] // 2
    smallest = values[int(np.argmin(counts))]
    other = tuple(a for a in range(labels.ndim) if a != axis)
    return int(np.argmax((labels == smallest).sum(axis=other)))


def contours(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """The label value on each label's boundary pixels (``width`` px inside the edge), 0 elsewhere."""
    edge = np.zeros(labels.shape, dtype=bool)
    padded = np.pad(labels, 1, mode="edge")
    core = padded[1:-1, 1:-1]
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        edge |= core != padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
    edge &= labels > 0
    for _ in range(width - 1):  # thicken inwards, staying on the same label
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown & (labels > 0)
    return np.where(edge, labels, 0)


def scale_length(width_mm: float) -> float:
    """A round bar length (1, 2 or 5 x 10^k mm) about a fifth of the picture's width."""
    target = max(width_mm / 5.0, 1e-3)
    power = 10.0 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1, 2, 5) if m * power <= target))


MIN_ANNOTATED_PX = 96
"""Smaller pictures get no letters or scale bar: 11-pixel text would cover the anatomy."""


def annotate(picture: Image.Image, letters: tuple[str, str, str, str] | None, px_per_mm: float | None) -> Image.Image:
    """Draw orientation letters at the edges' midpoints and a mm scale bar at the bottom left."""
    w, h = picture.size
    if min(w, h) < MIN_ANNOTATED_PX:
        return picture
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()

    def text(xy, value):
        for ox, oy in ((-1, 0), (1, 0), (0, -1), (0, 1)):  # dark outline: readable on any grey
            draw.text((xy[0] + ox, xy[1] + oy), value, fill=(0, 0, 0), font=font)
        draw.text(xy, value, fill=(255, 255, 0), font=font)

    if letters:
        top, bottom, left, right = letters
        text((w // 2 - 3, 3), top)
        text((w // 2 - 3, h - 14), bottom)
        text((4, h // 2 - 6), left)
        text((w - 11, h // 2 - 6), right)
    if px_per_mm:
        length = scale_length(w / px_per_mm)
        bar = max(1, round(length * px_per_mm))
        x0, y0 = 8, h - 10
        draw.rectangle([x0 - 1, y0 - 1, x0 + bar + 1, y0 + 4], fill=(0, 0, 0))
        draw.rectangle([x0, y0, x0 + bar, y0 + 3], fill=(255, 255, 255))
        text((x0, y0 - 14), f"{length:g} mm")
    return picture


def render(
    grey: np.ndarray,
    plane: np.ndarray | None,
    pixel_mm: tuple[float, float],
    alpha: float,
    min_size: int,
    letters: tuple[str, str, str, str] | None = None,
    scale_bar: bool = False,
) -> Image.Image:
    """Window the grey image, scale it to physical proportions, and draw the labels' contours.

    ``alpha`` is the opacity of a tint inside each contour (0: contours only); the contours
    themselves are opaque. ``letters`` (top, bottom, left, right) and ``scale_bar`` are for
    volumes, whose pixels have a size in mm.
    """
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
        edges = contours(labels)
        for value in np.unique(labels[labels > 0]).astype(int):
            colour = PALETTE[(value - 1) % len(PALETTE)]
            if alpha > 0:
                mask = labels == value
                rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
            rgb[edges == value] = colour
    picture = Image.fromarray(rgb.astype(np.uint8), "RGB")
    return annotate(picture, letters, factor if scale_bar else None) if (letters or scale_bar) else picture

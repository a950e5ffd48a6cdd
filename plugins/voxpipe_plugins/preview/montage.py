"""A PNG montage per case: axial, coronal and sagittal slices through the structure, with a legend.

Volumes are reoriented to RAS (``render._ras``) and shown in radiological convention
(patient's right on the left of the axial and coronal panels, superior at the top of the
coronal and sagittal ones, anterior on the left of the sagittal one), each panel with its
physical pixel aspect, label contours, orientation letters and a mm scale bar. The three
planes cross where the smallest label is largest (the volume's centre without labels). 2D images give one panel. Grey levels,
scaling and the overlay colours come from :mod:`voxpipe_plugins.preview.render`, so a
label has the same colour in the preview and the montage; the legend names each label
value present with its colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from voxpipe.atomic import atomic_path
from voxpipe.label_counts import label_values
from voxpipe.report_items import report_picture
from voxpipe.stage import record
from voxpipe.thumbnail import AXIAL, CORONAL, SAGITTAL, best_slice
from voxpipe_plugins.common.tensors import affine_of, to_numpy
from voxpipe_plugins.label.volumes import report_label_volumes
from voxpipe_plugins.preview.render import PALETTE, _ras, display_planes, render

BACKGROUND = (16, 16, 16)
TEXT = (235, 235, 235)


def colour_of(value: int) -> tuple[int, int, int]:
    """The overlay colour of a label value (the preview's palette)."""
    return tuple(int(c) for c in PALETTE[(int(value) - 1) % len(PALETTE)])


def centre_of(labels: np.ndarray | None, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per axis, the slice where the smallest label is largest (:func:`voxpipe.thumbnail.best_slice`).

    The small structure is what needs checking (the body shows on any slice), so the three
    planes cross through it; the volume's centre without labels.
    """
    if labels is None or not labels.any():
        return tuple(n // 2 for n in shape)
    return tuple(best_slice(labels, axis) for axis in range(labels.ndim))


def volume_panels(image, label=None):
    """[(title, grey 2D, label 2D or None, (row_mm, col_mm))] for the three planes of a volume."""
    array = to_numpy(image).astype(np.float32, copy=False)
    affine = affine_of(image)
    volume, sp = _ras(array.mean(axis=0) if array.shape[0] > 1 else array[0], affine)
    labels = _ras(to_numpy(label)[0], affine)[0] if label is not None else None
    x, y, z = centre_of(labels, volume.shape)

    def cut(array3, plane):
        if array3 is None:
            return None
        if plane == "axial":  # rows anterior -> posterior, columns right -> left
            return array3[::-1, ::-1, z].T
        if plane == "coronal":  # rows superior -> inferior, columns right -> left
            return array3[::-1, y, ::-1].T
        return array3[x, ::-1, ::-1].T  # sagittal: rows superior -> inferior, columns anterior -> posterior

    panels = [
        ("axial", cut(volume, "axial"), cut(labels, "axial"), (float(sp[1]), float(sp[0]))),
        ("coronal", cut(volume, "coronal"), cut(labels, "coronal"), (float(sp[2]), float(sp[0]))),
        ("sagittal", cut(volume, "sagittal"), cut(labels, "sagittal"), (float(sp[2]), float(sp[1]))),
    ]
    # A plane only one voxel thick in the other direction (a single-slice "volume") shows nothing useful.
    kept = [p for p in panels if min(p[1].shape) > 1]
    return kept or panels[:1]


def legend_entries(label, present: list[int]) -> list[tuple[int, str]]:
    names = (getattr(label, "meta", {}) or {}).get("label_names") or {}
    names = {int(k): str(v) for k, v in names.items()}
    return [(v, names.get(v, f"label {v}")) for v in present]


def compose(panels: list[Image.Image], titles: list[str], legend: list[tuple[int, str]], gap: int = 8) -> Image.Image:
    """Panels side by side (titles above), the legend below: a swatch and a name per label."""
    font = ImageFont.load_default()
    title_h = 16
    swatch = 14
    legend_h = (swatch + 8) * max(1, len(legend)) + 8 if legend else 0
    width = sum(p.width for p in panels) + gap * (len(panels) + 1)
    height = max(p.height for p in panels) + title_h + 2 * gap + legend_h
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = gap
    for panel, title in zip(panels, titles):
        if title:
            draw.text((x, gap // 2), title, fill=TEXT, font=font)
        canvas.paste(panel, (x, gap + title_h))
        x += panel.width + gap
    y = gap + title_h + max(p.height for p in panels) + gap
    for value, name in legend:
        draw.rectangle([gap, y, gap + swatch, y + swatch], fill=colour_of(value))
        draw.text((gap + swatch + 8, y + 1), f"{value}: {name}", fill=TEXT, font=font)
        y += swatch + 8
    return canvas


class MontageWriter:
    def __init__(
        self,
        image_key: str = "image",
        label_key: str | None = "label",
        filename: str = "montage.png",
        alpha: float = 0.15,
        panel_size: int = 256,
    ) -> None:
        self.image_key, self.label_key, self.filename = image_key, label_key, filename
        self.alpha, self.panel_size = alpha, panel_size

    def __call__(self, case: dict) -> dict:
        image = case[self.image_key]
        label = case.get(self.label_key) if self.label_key else None
        if np.ndim(to_numpy(image)) == 4:
            panels = volume_panels(image, label)
        else:
            grey, plane, pixel_mm = display_planes(image, label)
            panels = [("", grey, plane, pixel_mm)]
        pictures = []
        letters = {"axial": AXIAL, "coronal": CORONAL, "sagittal": SAGITTAL}
        for title, grey, plane, pixel_mm in panels:
            # render() scales the *shorter* side to its min_size; scale the longer one to panel_size instead,
            # so thin slabs do not become very wide strips.
            extent = (grey.shape[0] * pixel_mm[0], grey.shape[1] * pixel_mm[1])
            shorter = max(self.panel_size * min(extent) / max(extent), 1.0)
            pictures.append(render(grey, plane, pixel_mm, self.alpha, shorter, letters.get(title), title in letters))
        present = label_values(to_numpy(label)) if label is not None else []
        legend = legend_entries(label, present) if label is not None else []
        picture = compose(pictures, [title for title, *_ in panels], legend)
        target = Path(case["output_dir"]) / self.filename
        with atomic_path(target) as tmp:
            picture.save(tmp, format="PNG")
        record(case, "write.montage", file=self.filename, size=list(picture.size), panels=len(panels), legend=[name for _, name in legend])
        report_picture(case, self.filename)
        if self.label_key:
            report_label_volumes(case, self.label_key, source="write.montage")
        return case

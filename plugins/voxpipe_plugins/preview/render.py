"""The ``write.preview`` stage: an axial slice with the labels' contours, orientation letters and a
scale bar, as a PNG in the case folder.

The drawing is core API (:mod:`voxpipe.thumbnail`), so the report's fallback thumbnail
looks like these previews without importing this plugin.
"""

from __future__ import annotations

from pathlib import Path

from voxpipe.atomic import atomic_path
from voxpipe.report_items import report_picture
from voxpipe.stage import record
from voxpipe.thumbnail import AXIAL, PALETTE, planes, render
from voxpipe.thumbnail import ras as _ras
from voxpipe_plugins.common.tensors import affine_of, to_numpy
from voxpipe_plugins.label.volumes import report_label_volumes

__all__ = ["PALETTE", "PreviewWriter", "_ras", "display_planes", "render"]


def display_planes(image, label=None, slice_choice: str = "largest_label"):
    """Return (grey 2D or RGB 3D array, label 2D array or None, (row_mm, col_mm))."""
    array = to_numpy(image)
    lab = to_numpy(label)[0] if label is not None else None
    affine = affine_of(image) if array.ndim == 4 else None
    return planes(array, affine, lab, slice_choice)


class PreviewWriter:
    def __init__(
        self, image_key="image", label_key="label", filename="preview.png", slice="largest_label", alpha=0.15, min_size=256
    ) -> None:
        self.image_key, self.label_key, self.filename = image_key, label_key, filename
        self.slice, self.alpha, self.min_size = slice, alpha, min_size

    def __call__(self, case: dict) -> dict:
        label = case.get(self.label_key) if self.label_key else None
        grey, plane, pixel_mm = display_planes(case[self.image_key], label, self.slice)
        volume = to_numpy(case[self.image_key]).ndim == 4  # a 2D image has no mm nor patient axes to show
        picture = render(grey, plane, pixel_mm, self.alpha, self.min_size, AXIAL if volume else None, volume)
        target = Path(case["output_dir"]) / self.filename
        with atomic_path(target) as tmp:
            picture.save(tmp, format="PNG")
        record(case, "write.preview", file=self.filename, size=list(picture.size))
        report_picture(case, self.filename)
        if self.label_key:
            report_label_volumes(case, self.label_key, source="write.preview")
        return case

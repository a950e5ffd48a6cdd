"""Registers `write.preview` and `write.montage`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import CaseKey, FileName, StageParams


class PreviewParams(StageParams):
    image_key: CaseKey = Field("image", description="Case key of the image shown in grey.")
    label_key: CaseKey | None = Field("label", description="Case key of the label map overlaid in colour; null for none.")
    filename: FileName = Field(
        "preview.png", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$", description="PNG file name inside the case folder."
    )
    slice: Literal["largest_label", "middle"] = Field(
        "largest_label", description="Which axial slice of a volume to show: where the smallest label is largest, or the middle one."
    )
    alpha: float = Field(0.15, ge=0, le=1, description="Opacity of the tint inside the label contours (0: contours only).")
    min_size: int = Field(256, ge=32, le=4096, description="Upscale so the shorter side has at least this many pixels.")


class MontageParams(StageParams):
    image_key: CaseKey = Field("image", description="Case key of the image shown in grey.")
    label_key: CaseKey | None = Field("label", description="Case key of the label map overlaid in colour; null for none.")
    filename: FileName = Field(
        "montage.png", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$", description="PNG file name inside the case folder."
    )
    alpha: float = Field(0.15, ge=0, le=1, description="Opacity of the tint inside the label contours (0: contours only).")
    panel_size: int = Field(256, ge=32, le=4096, description="Upscale each panel so its shorter side has at least this many pixels.")


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="write.preview",
            kind=StageKind.WRITER,
            summary="Write a PNG preview: an axial slice (radiological view) with label contours, orientation letters and a mm scale bar.",
            description=(
                "Volumes are reoriented to RAS and shown axially in radiological convention (patient's "
                "right on the left, anterior at the top), with the physical pixel aspect ratio. 2D images "
                "are shown as stored. Grey levels are windowed to the 1st-99th percentile. Labels are drawn as contours; "
                "the slice shown is the one where the smallest label is largest."
            ),
            params=PreviewParams,
            factory="voxpipe_plugins.preview.render:PreviewWriter",
            reads=("{image_key}", "{label_key}"),
        )
    )
    register(
        StageSpec(
            id="write.montage",
            kind=StageKind.WRITER,
            summary="Write a PNG montage: axial, coronal and sagittal slices through the labels, label contours, orientation letters, scale bar, legend of label names.",
            description=(
                "The planes cross where the smallest label is largest, on each axis (the volume's centre when the label map is "
                "empty or absent). Volumes are shown in RAS, radiological convention, with physical aspect ratios; 2D images give "
                "one panel. The legend lists every label value present with its name from the label table and its overlay colour."
            ),
            params=MontageParams,
            factory="voxpipe_plugins.preview.montage:MontageWriter",
            reads=("{image_key}", "{label_key}"),
        )
    )

"""Registers `example.invert` and `example.histogram`.

This module is imported whenever VoxPipe loads its registry (``voxpipe plugins``,
``voxpipe validate``, ``voxpipe run``), so it imports only pydantic and VoxPipe's public
API (:mod:`voxpipe.plugin`, the author's kit) -- never torch or MONAI. The implementation is named by a ``"module:attribute"``
string and imported only when a pipeline builds the stage.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from voxpipe.plugin import StageKind, StageSpec, hookimpl


class InvertParams(BaseModel):
    """Parameters of `example.invert`; unknown fields are config errors (``extra="forbid"``)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        "image",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Case key of the image to invert (replaced in place).",
    )
    low: float | None = Field(
        None,
        description="Lower bound of the range to invert within; unset: the image's own minimum. Set both `low` and `high`, or neither.",
    )
    high: float | None = Field(None, description="Upper bound of the range to invert within; unset: the image's own maximum.")

    @model_validator(mode="after")
    def _bounds(self) -> InvertParams:
        if (self.low is None) != (self.high is None):
            raise ValueError("set both `low` and `high`, or neither (then the image's own min and max are used)")
        if self.low is not None and not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class HistogramParams(BaseModel):
    """Parameters of `example.histogram`."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field("image", min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Case key of the image.")
    filename: str = Field(
        "histogram.png", max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$", description="PNG file name inside the case folder."
    )
    bins: int = Field(64, ge=4, le=256, description="Number of histogram bins.")


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="example.invert",
            kind=StageKind.TRANSFORM,
            summary="Invert intensities: out = max + min - image (the image's own range, or low/high when set).",
            description=(
                "Maps the darkest voxel to the brightest and back, keeping the value range: "
                "out = high + low - image, where low/high are the image's own minimum and maximum "
                "unless both are given. Geometry (affine) and metadata are kept. "
                "Example plugin: the template for writing your own (docs/writing-plugins.md)."
            ),
            params=InvertParams,
            factory="voxpipe_example_invert.invert:Invert",
            reads=("{key}",),
            writes=("{key}",),
        )
    )
    register(
        StageSpec(
            id="example.histogram",
            kind=StageKind.WRITER,
            summary="Write a PNG of the image's intensity histogram and show it, with the image's mean, in the run report.",
            description=(
                "Shows what a stage contributes to report.html: a picture (report_picture) and a metric (report_metric), "
                "both also listed in case.json under `report`."
            ),
            params=HistogramParams,
            factory="voxpipe_example_invert.histogram:Histogram",
            reads=("{key}",),
        )
    )

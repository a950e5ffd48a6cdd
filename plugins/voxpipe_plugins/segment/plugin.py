"""Registers `segment.otsu`."""

from __future__ import annotations

from pydantic import Field

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import CaseKey, ImageKeyParams


class OtsuParams(ImageKeyParams):
    output_key: CaseKey = Field("label", description="Case key for the label map (1 = foreground).")
    nbins: int = Field(256, ge=8, le=65536, description="Histogram bins for Otsu's method.")
    invert: bool = Field(False, description="Foreground is *below* the threshold (dark objects).")


@hookimpl
def voxpipe_register_stages(register):
    register(StageSpec(
        id="segment.otsu",
        kind=StageKind.SEGMENTER,
        summary="Two-class segmentation with Otsu's threshold (scikit-image); writes a 0/1 label map.",
        description="The threshold maximises the between-class variance of the intensity histogram. "
        "The label map keeps the image's affine and carries a label table {0: background, 1: foreground}.",
        params=OtsuParams,
        factory="voxpipe_plugins.segment.otsu:OtsuSegmenter",
        reads=("{key}",),
        writes=("{output_key}",),
    ))

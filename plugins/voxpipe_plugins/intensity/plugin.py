"""Registers `intensity.scale`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import ImageKeyParams


class ScaleParams(ImageKeyParams):
    mode: Literal["percentile", "range", "minmax"] = Field(
        "percentile",
        description="`percentile`: lower/upper are percentiles of the image; `range`: lower/upper are "
        "intensities (e.g. HU); `minmax`: the image's own minimum and maximum.",
    )
    lower: float = Field(0.5, description="Lower percentile (0-100) or intensity, mapped to out_min.")
    upper: float = Field(99.5, description="Upper percentile (0-100) or intensity, mapped to out_max.")
    out_min: float = Field(0.0, description="Output value for `lower`.")
    out_max: float = Field(1.0, description="Output value for `upper`.")
    clip: bool = Field(True, description="Clip the output to [out_min, out_max].")

    @model_validator(mode="after")
    def _ordered(self):
        if self.mode != "minmax" and not self.lower < self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        if self.mode == "percentile" and not (0 <= self.lower and self.upper <= 100):
            raise ValueError("percentiles must lie in [0, 100]")
        return self


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="intensity.scale",
            kind=StageKind.ENHANCER,
            summary="Rescale intensities linearly from percentiles, a fixed range or min-max to [out_min, out_max] (MONAI).",
            params=ScaleParams,
            factory="voxpipe_plugins.intensity.scale:IntensityScale",
            reads=("{key}",),
            writes=("{key}",),
        )
    )

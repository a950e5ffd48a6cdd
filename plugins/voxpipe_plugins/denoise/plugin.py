"""Registers `denoise.gaussian`."""

from __future__ import annotations

from pydantic import Field

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import ImageKeyParams


class GaussianParams(ImageKeyParams):
    sigma_mm: float = Field(1.0, gt=0, le=50, description="Standard deviation in millimetres (pixels for 2D photos), converted per axis using the voxel spacing.")
    truncated: float = Field(4.0, gt=0, le=10, description="Kernel half-width in standard deviations.")


@hookimpl
def voxpipe_register_stages(register):
    register(StageSpec(
        id="denoise.gaussian",
        kind=StageKind.DENOISER,
        summary="Gaussian smoothing with sigma in mm, respecting anisotropic spacing (MONAI GaussianSmooth, runs on the GPU when there is one).",
        params=GaussianParams,
        factory="voxpipe_plugins.denoise.gaussian:GaussianDenoise",
        reads=("{key}",),
        writes=("{key}",),
    ))

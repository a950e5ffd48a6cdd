"""Registers `load.image2d`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import CaseKey, StageParams


class Image2DLoadParams(StageParams):
    key: CaseKey = Field("image", description="Case key the loaded image is stored under.")
    mode: Literal["keep", "gray", "rgb"] = Field(
        "keep", description="`gray` converts colour images to one channel (ITU-R 601 luma), `rgb` to three; `keep` keeps what the file has."
    )
    max_gib: float | None = Field(
        None,
        gt=0,
        le=1024,
        description="Refuse images whose float32 array (width x height x "
        "channels x 4 bytes) would exceed this many GiB, from the header, before decoding; unset: "
        "`$VOXPIPE_MAX_GIB`, else 16.",
    )


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="load.image2d",
            kind=StageKind.LOADER,
            summary="Load 2D images (PNG, JPEG, TIFF, BMP) with Pillow as channel-first float32.",
            description=(
                "Each image file is one case. Axes follow MONAI's PIL reader: the array is "
                "channels x width x height, so spatial axis 0 runs along image columns, with an "
                "identity affine (1 unit per pixel). Values keep the file's range (0-255 for 8-bit)."
            ),
            params=Image2DLoadParams,
            factory="voxpipe_plugins.io_image.reader:Image2DLoader",
            writes=("{key}",),
            discover="voxpipe_plugins.io_image.reader:discover",
        )
    )

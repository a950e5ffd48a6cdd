"""Registers ``voxpipe bundle`` (import, info) and the `bundle.working_copy` stage, like any third party's."""

from __future__ import annotations

from pydantic import Field

from voxpipe.hookspecs import hookimpl
from voxpipe.plugin import CaseKey, CommandSpec, StageKind, StageParams, StageSpec


class WorkingCopyParams(StageParams):
    key: CaseKey = Field("image", description="Case key of the image to copy.")
    output_key: CaseKey = Field("net_input", description="Case key of the copy the bundle's preprocessing works on.")


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="bundle.working_copy",
            kind=StageKind.TRANSFORM,
            summary="Copy the image to a working key, so a bundle's preprocessing can change the copy while `image` keeps the input grid.",
            description="An imported bundle's orientation, spacing and intensity transforms run on the copy; segment.deep "
            "inverts its output onto `image`'s grid (`invert_to`), as MONAI's Invertd does.",
            params=WorkingCopyParams,
            factory="voxpipe_plugins.bundle.stages:WorkingCopy",
            reads=("{key}",),
            writes=("{output_key}",),
        )
    )


@hookimpl
def voxpipe_register_commands(register):
    register(
        CommandSpec(
            name="bundle",
            summary="MONAI Model Zoo bundles read as data: `bundle import` writes a VoxPipe config, `bundle info` describes one.",
            factory="voxpipe_plugins.bundle.commands:bundle_group",
        )
    )

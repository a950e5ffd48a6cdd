"""Registers ``voxpipe sample-data`` (demo inputs, nothing downloaded); registered like any third party's command."""

from __future__ import annotations

from voxpipe.commands_spec import CommandSpec
from voxpipe.hookspecs import hookimpl


@hookimpl
def voxpipe_register_commands(register):
    register(
        CommandSpec(
            name="sample-data",
            summary="Write small demo inputs: a real T1 MRI, a 3D phantom, a 2D PNG and synthetic CT series.",
            factory="voxpipe_plugins.samples.commands:sample_data",
        )
    )

"""Registers the pacs family's contributions (input sources, ``write.stow``, ``voxpipe listen``), like any third party's."""

from __future__ import annotations

from voxpipe.hookspecs import hookimpl
from voxpipe_plugins.pacs.listen_spec import register_listen_command
from voxpipe_plugins.pacs.sources_spec import register_input_sources
from voxpipe_plugins.pacs.stow_spec import register_stow_stage


@hookimpl
def voxpipe_register_stages(register):
    register_stow_stage(register)


@hookimpl
def voxpipe_register_commands(register):
    register_listen_command(register)


@hookimpl
def voxpipe_register_input_sources(register):
    register_input_sources(register)

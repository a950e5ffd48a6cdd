"""Registers ``voxpipe bundle`` (filled in by issue 18's work), like any third party's command."""

from __future__ import annotations

from voxpipe.hookspecs import hookimpl


@hookimpl
def voxpipe_register_commands(register):
    """``voxpipe bundle import`` / ``bundle info`` are registered here once they exist."""

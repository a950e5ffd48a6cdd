"""Registers the pacs family's contributions, like any third party's (filled in by issue 17's work)."""

from __future__ import annotations

from voxpipe.hookspecs import hookimpl


@hookimpl
def voxpipe_register_commands(register):
    """``voxpipe listen`` is registered here once it exists."""

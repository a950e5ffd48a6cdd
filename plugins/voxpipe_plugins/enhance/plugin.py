"""Registers the `enhance.*` stages."""

from __future__ import annotations

from voxpipe.hookspecs import hookimpl


@hookimpl
def voxpipe_register_stages(register):
    """No stages yet (issue 4 adds them)."""

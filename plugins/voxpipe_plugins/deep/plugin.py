"""Registers the `deep.*` stages."""

from __future__ import annotations

from voxpipe.hookspecs import hookimpl


@hookimpl
def voxpipe_register_stages(register):
    """Stages are added by issue 5."""

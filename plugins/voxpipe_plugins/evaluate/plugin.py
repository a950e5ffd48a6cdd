"""Registers ``voxpipe evaluate`` (segmentation scores; retrieval scores of a feature store).

The evaluate family has no stages: it is a command, registered through the commands hook
like any plugin's, with its own entry point (blocking ``evaluate`` removes the command).
"""

from __future__ import annotations

from voxpipe.commands_spec import CommandSpec
from voxpipe.hookspecs import hookimpl


@hookimpl
def voxpipe_register_commands(register):
    register(
        CommandSpec(
            name="evaluate",
            summary="Score predicted label maps against references (Dice, IoU, HD95, ASSD), or a feature store's retrieval.",
            factory="voxpipe_plugins.evaluate.commands:evaluate",
        )
    )

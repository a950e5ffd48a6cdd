"""The ``voxpipe listen`` command spec (a DICOM C-STORE SCP that runs a pipeline per received series)."""

from __future__ import annotations

from voxpipe.commands_spec import CommandSpec


def register_listen_command(register) -> None:
    """Register ``voxpipe listen``."""
    register(
        CommandSpec(
            name="listen",
            summary="Receive DICOM (C-STORE SCP) and run a pipeline on each series once it has stopped arriving.",
            factory="voxpipe_plugins.pacs.listen:listen_command",
        )
    )

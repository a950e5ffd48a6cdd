"""The ``voxpipe listen`` command spec (a DICOM C-STORE SCP that runs a pipeline per received series)."""

from __future__ import annotations


def register_listen_command(register) -> None:
    """Register ``voxpipe listen``."""

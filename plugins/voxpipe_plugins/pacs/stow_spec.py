"""The ``write.stow`` writer stage spec (STOW-RS to a DICOMweb server)."""

from __future__ import annotations


def register_stow_stage(register) -> None:
    """Register ``write.stow``."""

"""The ``segment.brain_mask`` stage spec and its parameters (registered by the segment family's plugin)."""

from __future__ import annotations


def register_brain_mask(register) -> None:
    """Register ``segment.brain_mask`` (brain extraction for whole-head T1)."""

"""Parameter-model building blocks: now core API in :mod:`voxpipe.params` (kept here for the built-ins' imports)."""

from voxpipe.params import CaseKey, FileName, ImageKeyParams, StageParams

__all__ = ["CaseKey", "FileName", "ImageKeyParams", "StageParams"]

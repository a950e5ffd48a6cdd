"""Input checks for image stages: now core API in :mod:`voxpipe.image_checks` (kept here for the built-ins' imports)."""

from voxpipe.image_checks import StageInputError, float_image, is_constant, spatial_dims

__all__ = ["StageInputError", "float_image", "is_constant", "spatial_dims"]

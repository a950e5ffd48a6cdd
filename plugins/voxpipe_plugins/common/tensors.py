"""MetaTensor helpers: now core API in :mod:`voxpipe.metatensors` (kept here for the built-ins' imports)."""

from voxpipe.metatensors import affine_of, like, make_metatensor, spacing_of, to_numpy

__all__ = ["affine_of", "like", "make_metatensor", "spacing_of", "to_numpy"]

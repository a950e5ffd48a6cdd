"""Helpers shared by the built-in stages (tensor/affine conversions, key handling)."""

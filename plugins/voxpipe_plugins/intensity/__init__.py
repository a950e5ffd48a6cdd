"""Intensity scaling stages."""

"""Denoising stages."""

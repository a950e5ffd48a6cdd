"""Segmentation stages."""

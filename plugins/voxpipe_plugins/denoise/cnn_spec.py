"""The ``denoise.cnn`` stage spec and the ``denoise`` training task (registered by the denoise family's plugin)."""

from __future__ import annotations


def register_cnn_stage(register) -> None:
    """Register ``denoise.cnn`` (a learned residual CNN denoiser)."""


def register_cnn_trainer(register) -> None:
    """Register the ``denoise`` task of ``voxpipe train``."""

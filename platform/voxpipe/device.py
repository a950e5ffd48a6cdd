"""Choosing where tensors live: ``auto`` means CUDA when there is one."""

from __future__ import annotations

from voxpipe.errors import UsageError


def resolve_device(requested: str) -> str:
    """Turn ``auto|cpu|cuda|cuda:N`` into a concrete torch device string, or fail clearly."""
    if requested == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise UsageError(f"device `{requested}` requested but no CUDA device is available; use --device cpu or auto")
    if ":" in requested:
        index = int(requested.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise UsageError(f"device `{requested}`: only {torch.cuda.device_count()} CUDA device(s) present")
    return requested

"""Local VGG checkpoints in: torchvision layout, weights-only, inflated for 3D, one clear line when they do not fit."""

from __future__ import annotations

from pathlib import Path

import torch

from voxpipe_plugins.deep.weights import WeightsError, mismatches, read_state_dict
from voxpipe_plugins.features.architectures import guess_architecture
from voxpipe_plugins.features.vgg import VGG, inflate_state_dict


def read_vgg_state(path: Path) -> dict[str, torch.Tensor]:
    """Read a local checkpoint (.pth/.pt with ``weights_only``, or .safetensors); nothing is ever downloaded."""
    if not path.is_file():
        raise WeightsError(
            f"VGG weights file not found: {path}; weights are never downloaded: copy a local torchvision VGG checkpoint "
            "(e.g. vgg16-397923af.pth) there, or a checkpoint from `voxpipe train`, or unset `weights` for a randomly "
            "initialised network (paths are relative to the config file)"
        )
    return read_state_dict(path)


def fit_vgg(model: VGG, state: dict[str, torch.Tensor], source: str, need_classifier: bool = False, inflate: str = "mean") -> list[str]:
    """Load ``state`` into ``model``; returns notes (inflated, classifier skipped) for the case history.

    Every ``features.*`` tensor must be there with the right shape; ``classifier.*`` tensors are
    loaded when the network has a classifier and required only when fc6/fc7 are extracted. A 2D
    checkpoint given to a 3D network is inflated (``inflate``). A mismatch is one line that says
    what differs and, when the file's shapes match another VGG, which one it is.
    """
    notes: list[str] = []
    if model.spatial_dims == 3 and any(k.startswith("features.") and v.ndim == 4 for k, v in state.items()):
        state = inflate_state_dict(state, inflate)
        notes.append(f"2D weights inflated to 3D ({inflate})")
    expected = model.state_dict()
    has_classifier = any(k.startswith("classifier.") for k in state)
    if not model.has_classifier and has_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        notes.append("classifier weights not used")
    required = [k for k in expected if k.startswith("features.") or (need_classifier and k.startswith("classifier."))]
    optional = [k for k in expected if k not in required]
    parts = mismatches(state, expected, required)
    if parts:
        guess = guess_architecture({k: tuple(v.shape) for k, v in state.items()})
        hint = (
            f"; the file looks like a full-width {guess} checkpoint: set `arch`, `width` and `in_channels` to match"
            if guess
            else "; check `arch`, `width` and `in_channels` against the checkpoint"
        )
        what = f"{model.arch} ({model.spatial_dims}D, width {model.width:g})"
        raise WeightsError(f"weights file {source} does not fit {what}: {'; '.join(parts)}{hint}")
    if model.has_classifier and not any(k in state for k in optional):
        notes.append("no classifier weights in the file")
    model.load_state_dict(state, strict=False)
    return notes

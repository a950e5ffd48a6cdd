"""denoise.cnn weights in and out: shipped models, local files, JSON cards.

Weights are read by the deep family's reader (safetensors, or torch files with
``weights_only=True``; pickles that need more are refused). The architecture is read from
the tensors' shapes (three input channels: a hybrid model with an NLM guide, :mod:`.cnn_guide`),
so a bare state dict works without its card; the card (the ``.json``
beside the weights) adds the noise model the weights were trained for and how.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from voxpipe.atomic import atomic_path
from voxpipe_plugins.deep.weights import WeightsError, read_sidecar, read_state_dict
from voxpipe_plugins.denoise.cnn_net import Architecture, ResidualDenoiser

WEIGHTS_DIR = Path(__file__).parent / "weights"
MAX_FEATURES, MAX_DEPTH = 256, 30
"""The training task's bounds: a file claiming a bigger network is refused before one is built."""


def shipped_path(model: str) -> Path:
    path = WEIGHTS_DIR / f"{model}.safetensors"
    if not path.is_file():
        raise WeightsError(f"shipped model `{model}` is missing from this installation ({path.name}); reinstall voxpipe")
    return path


def architecture_of(state: dict[str, torch.Tensor], source: str) -> Architecture:
    """Rebuild the architecture from the tensors: ``body.<i>.conv.weight`` of shape (F, C, 3, 3[, 3])."""
    convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("body.") and k.endswith(".conv.weight"))
    if len(convs) < 2 or convs != list(range(len(convs))):
        raise WeightsError(
            f"weights file {source} is not a denoise.cnn model (no body.<i>.conv.weight layers); train one with `voxpipe train`"
        )
    first = state["body.0.conv.weight"]
    if first.ndim not in (4, 5) or first.shape[1] not in (2, 3):
        raise WeightsError(
            f"weights file {source}: first layer {tuple(first.shape)} is not a denoise.cnn input layer "
            "(image + noise map, or image + NLM estimate + noise map)"
        )
    if any(k != 3 for k in first.shape[2:]) or not 1 <= first.shape[0] <= MAX_FEATURES or len(convs) > MAX_DEPTH:
        raise WeightsError(
            f"weights file {source}: {len(convs)} layers of {int(first.shape[0])} channels with {tuple(first.shape[2:])} kernels; "
            f"denoise.cnn models have 3-wide kernels, at most {MAX_FEATURES} channels and {MAX_DEPTH} layers"
        )
    guide = "nlm" if first.shape[1] == 3 else "none"
    return Architecture(spatial_dims=first.ndim - 2, features=int(first.shape[0]), depth=len(convs), guide=guide)


def load_model(path: Path) -> tuple[ResidualDenoiser, dict[str, Any]]:
    """The network with its weights (eval mode, CPU) and its card (``{}`` when there is none)."""
    state = read_state_dict(path)
    arch = architecture_of(state, path.name)
    model = ResidualDenoiser(arch)
    expected = model.state_dict()
    bad = [k for k in expected if k not in state or tuple(state[k].shape) != tuple(expected[k].shape)]
    extra = [k for k in state if k not in expected]
    if bad or extra:
        raise WeightsError(
            f"weights file {path.name} does not fit a denoise.cnn {arch.spatial_dims}D network: "
            f"{len(bad)} missing or misshapen tensors, {len(extra)} unexpected ones"
        )
    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise WeightsError(f"weights file {path.name} holds NaN or infinite values; retrain or restore it")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    model.eval()
    card = read_sidecar(path) if path.suffix.lower() == ".safetensors" else {}
    return model, card


def save_model(model: torch.nn.Module, path: Path, card: dict[str, Any]) -> None:
    """Weights as safetensors (architecture and noise model in its metadata) plus the JSON card, both atomic."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "architecture": json.dumps(card.get("architecture", {})), "noise": str(card.get("noise", ""))}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(card, indent=2, default=str) + "\n")

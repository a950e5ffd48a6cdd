"""Head checkpoints: safetensors weights + a JSON sidecar with the architecture, classes and target scale.

Written with :func:`voxpipe_plugins.deep.weights.save_checkpoint` (atomic) and read back with
its weights-only reader, so the rules for weights files are the same everywhere. The sidecar
is validated (:mod:`.sidecar`) and compared with the stage before a network is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from voxpipe_plugins.deep.weights import WeightsError, fit_weights, read_state_dict, save_checkpoint
from voxpipe_plugins.heads.models import HeadArchitecture, build_model
from voxpipe_plugins.heads.sidecar import read_head_sidecar

ARCH_FIELDS = ("arch", "width", "in_channels", "task", "hidden")


def save(model: torch.nn.Module, path: Path, info: dict[str, Any]) -> None:
    save_checkpoint(model, path, {"network": "voxpipe.heads", "args": model.spec.as_dict(), **info})


def stage_architecture(stage_id: str, params) -> dict[str, Any]:
    """The architecture a head stage's parameters ask for (compared with a checkpoint's)."""
    wanted = {name: getattr(params, name) for name in ARCH_FIELDS}
    wanted["rnn"] = getattr(params, "cell", None) if stage_id == "head.vgg_rnn" else None
    if wanted["rnn"]:
        wanted.update(rnn_hidden=params.rnn_hidden, rnn_layers=params.rnn_layers, bidirectional=params.bidirectional)
    return wanted


def load(path: Path, stage_id: str | None = None, params=None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model a checkpoint was trained as and load it; refuse one made for another architecture."""
    if not path.is_file():
        raise WeightsError(
            f"head checkpoint not found: {path}; train one with `voxpipe train CONFIG -o DIR` (it writes "
            "DIR/best.safetensors) and point `weights` / --checkpoint at it"
        )
    sidecar = read_head_sidecar(path)  # bounded like the stage's parameters, before anything is built
    if sidecar is None:
        raise WeightsError(
            f"{path.name}: no sidecar {path.with_suffix('.json').name} with the head's architecture; use a "
            "checkpoint written by `voxpipe train` (task heads), with its .json beside it"
        )
    info = sidecar.model_dump()
    spec = HeadArchitecture(**info["architecture"])
    if params is not None and stage_id is not None:
        wanted = stage_architecture(stage_id, params)
        have = {k: getattr(spec, k) for k in wanted}
        diff = [f"{k} {have[k]!r} (stage: {wanted[k]!r})" for k in wanted if have[k] != wanted[k]]
        if diff:
            raise WeightsError(
                f"{path.name} was trained as a different head: {', '.join(diff)}; use the config it was trained with or retrain"
            )
    model = build_model(spec)
    fit_weights(model, read_state_dict(path), f"{spec.arch} head ({spec.task})", path.name)
    return model.eval(), info

"""The work behind `voxpipe test`: rebuild the split, load the checkpoint, predict and score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxpipe.config import load_config
from voxpipe.errors import UsageError
from voxpipe.stage import StageContext


def test_checkpoint(
    registry, config_path: Path, checkpoint_path: Path, split_name: str = "test", overrides: tuple[str, ...] = (), device: str | None = None
) -> tuple[dict[str, Any], str]:
    """Metrics of ``checkpoint_path`` on one part of the config's split, and their printed form."""
    validated = load_config(config_path, registry, overrides=overrides, device=device)
    if validated.trainer is None or validated.trainer.task != "heads":
        raise UsageError(f"{config_path}: `voxpipe test` needs a `training:` section with `task: heads` (it names the table and split)")
    from voxpipe.device import resolve_device
    from voxpipe_plugins.deep.infer import resolve
    from voxpipe_plugins.heads import checkpoint
    from voxpipe_plugins.heads.dataset import HeadSetup
    from voxpipe_plugins.heads.metrics import render
    from voxpipe_plugins.heads.train import predict, score

    context = StageContext(device=resolve_device(validated.config.device), config_dir=validated.config_dir, stage_id="test.heads")
    setup = HeadSetup(validated, validated.training, context)
    from voxpipe_plugins.deep.weights import WeightsError

    try:
        model, info = checkpoint.load(checkpoint_path, setup.planned.spec.id, setup.stage)
    except WeightsError as exc:
        raise UsageError(str(exc)) from None
    _, names, split = setup.table()
    if setup.classifies and info.get("classes") and info["classes"] != names:
        raise UsageError(f"{checkpoint_path.name} was trained on classes {info['classes']}, the table has {names}")
    names = info.get("classes") or names
    data = setup.load(split.part(split_name), names, bool((info.get("input") or {}).get("normalise")), f"{split_name} image")
    dev = resolve(None, context.device)
    model.to(dev)
    amp = bool(validated.training.amp and dev.type == "cuda")
    pred = predict(
        model,
        data.x,
        validated.training.batch_size,
        dev,
        amp,
        info.get("classification_loss", "ce"),
        (float(info["target_mean"]), float(info["target_std"])),
    )
    metrics = {"split": split_name, "checkpoint": checkpoint_path.name, "epoch": info.get("epoch"), **score(pred, data, names)}
    return metrics, render(metrics)

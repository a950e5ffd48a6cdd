"""The `heads` trainer behind `voxpipe train`: trains the config's head.vgg / head.vgg_rnn stage.

As with the segmentation trainer, the config that trains a model is the config that runs
it: its loader and the stages before the head are the preprocessing of every training image,
and the head stage names the architecture and the file the weights go to.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxpipe.progress import epochs_eta
from voxpipe.stage import StageContext
from voxpipe_plugins.common.run_files import run_files
from voxpipe_plugins.deep.infer import resolve
from voxpipe_plugins.deep.weights import fit_weights, load_torch_file, read_sidecar, read_state_dict
from voxpipe_plugins.heads import checkpoint, curves
from voxpipe_plugins.heads.dataset import HeadSetup, Loaded
from voxpipe_plugins.heads.losses import MultiTaskLoss, probabilities
from voxpipe_plugins.heads.metrics import classification_metrics, regression_metrics, render
from voxpipe_plugins.heads.models import HeadArchitecture, build_model
from voxpipe_plugins.heads.table import TableError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(name: str, parameters, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, weight_decay=weight_decay, momentum=momentum)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


def autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda" else contextlib.nullcontext()


def train_step(model, optimizer, loss_fn, scaler, x, labels, targets, device, amp: bool) -> float:
    """One optimisation step on one batch; returns the loss. The benchmark times exactly this."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        out = model(x)
    loss = loss_fn(out, labels, targets)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def fit_epoch(
    model,
    optimizer,
    loss_fn,
    scaler,
    data: Loaded,
    target_scale: tuple[float, float],
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    amp: bool,
    flip: bool = False,
) -> float:
    """One pass over ``data`` in a seeded random order; mean batch loss."""
    model.train()
    order = torch.randperm(len(data.x), generator=generator)
    mean, std = target_scale
    losses = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2 and len(order) > 1:  # a batch of one breaks batch norm statistics
            continue
        x = data.x[idx].to(device, non_blocking=True)
        if flip:
            mask = torch.rand(len(idx), generator=generator) < 0.5
            x[mask.to(x.device)] = x[mask.to(x.device)].flip(-1)
        labels = data.labels[idx].to(device) if data.labels is not None else None
        targets = ((data.targets[idx] - mean) / std).to(device) if data.targets is not None else None
        losses.append(train_step(model, optimizer, loss_fn, scaler, x, labels, targets, device, amp))
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def recalibrate_batch_norm(model, data: Loaded, batch_size: int, device: torch.device, amp: bool) -> bool:
    """Precise BN (Wu & Johnson 2021): replace the running statistics by their average over the training set.

    Running averages lag behind weights that change quickly (small data, a high learning
    rate), and then the network in eval mode -- validation, test, `voxpipe run` -- sees other
    statistics than it was trained with. One forward pass over the training data in train mode
    with a cumulative average fixes that. Returns False when the model has no batch norm.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
    model.train()
    for start in range(0, len(data.x), batch_size):
        if len(data.x) - start < 2 and start:
            break
        with autocast(device, amp):
            model(data.x[start : start + batch_size].to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return True


@torch.inference_mode()
def predict(
    model, x: torch.Tensor, batch_size: int, device: torch.device, amp: bool, classification_loss: str, target_scale: tuple[float, float]
) -> dict[str, np.ndarray]:
    """Class probabilities (N, K) and regression values in the table's units for every input."""
    model.eval()
    proba, values = [], []
    for start in range(0, len(x), batch_size):
        with autocast(device, amp):
            out = model(x[start : start + batch_size].to(device))
        if "logits" in out:
            proba.append(probabilities(out["logits"], classification_loss).cpu())
        if "regression" in out:
            values.append(out["regression"].float().cpu() * target_scale[1] + target_scale[0])
    result = {}
    if proba:
        result["probabilities"] = torch.cat(proba).numpy()
    if values:
        result["regression"] = torch.cat(values).numpy()
    return result


def score(pred: dict[str, np.ndarray], data: Loaded, names: list[str]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    if "probabilities" in pred and data.labels is not None:
        metrics["classification"] = classification_metrics(data.labels.numpy(), pred["probabilities"], names)
    if "regression" in pred and data.targets is not None:
        metrics["regression"] = regression_metrics(data.targets.numpy().astype(np.float64), pred["regression"].astype(np.float64))
    return metrics


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class HeadsTrainer:
    """``voxpipe train`` for task ``heads``."""

    def __init__(self, params, config, context: StageContext) -> None:
        self.params, self.config, self.context = params, config, context
        self.setup = HeadSetup(config, params, context)
        self.device = resolve(None, context.device)
        self.amp = bool(params.amp and self.device.type == "cuda")

    def architecture(self, names: list[str]) -> HeadArchitecture:
        s = self.setup.stage
        rnn = self.setup.rnn
        return HeadArchitecture(
            arch=s.arch,
            width=s.width,
            in_channels=s.in_channels,
            task=s.task,
            logits=(1 if self.params.classification_loss == "bce" else len(names)) if self.setup.classifies else 0,
            hidden=s.hidden,
            dropout=s.dropout,
            rnn=s.cell if rnn else None,
            rnn_hidden=s.rnn_hidden if rnn else 128,
            rnn_layers=s.rnn_layers if rnn else 1,
            bidirectional=s.bidirectional if rnn else False,
        )

    def loss(self) -> MultiTaskLoss:
        p = self.params
        return MultiTaskLoss(
            p.classification_loss, p.regression_loss, p.classification_weight, p.regression_weight, p.focal_gamma, p.huber_delta
        )

    def run(self, output_dir: Path, resume: bool = False) -> dict[str, Any]:
        from voxpipe.errors import UsageError
        from voxpipe_plugins.deep.weights import WeightsError

        try:
            return self._run(Path(output_dir), resume)
        except WeightsError as exc:
            raise UsageError(str(exc)) from None
        finally:
            for leftover in (Path(output_dir) / ".voxpipe", Path(output_dir)):
                try:
                    leftover.rmdir()  # the CLI's writability probe, and the folder itself when nothing was written
                except OSError:
                    pass

    def _run(self, output_dir: Path, resume: bool) -> dict[str, Any]:
        started = time.perf_counter()
        p, setup = self.params, self.setup
        last_path, best_path, state_path = run_files(output_dir, resume, TableError)
        _, names, split = setup.table()
        if p.classification_loss == "bce" and setup.classifies and len(names) != 2:
            raise TableError(f"classification_loss bce needs exactly two classes, the table has {len(names)}; use ce or focal")
        if p.threads:
            torch.set_num_threads(p.threads)
        normalise = setup.stage.backbone_weights is not None and setup.stage.in_channels == 3  # ImageNet statistics
        train, val, test = (setup.load(split.part(n), names, normalise, f"{n} image") for n in ("train", "val", "test"))
        # everything is checked: from here on files are written
        output_dir.mkdir(parents=True, exist_ok=True)
        targets = train.targets
        scale = (float(targets.mean()), float(targets.std()) or 1.0) if targets is not None and len(targets) > 1 else (0.0, 1.0)
        seed_everything(p.seed)
        spec = self.architecture(names)
        model = build_model(spec)
        notes = []
        if setup.stage.backbone_weights and not resume:
            from voxpipe_plugins.features.weights import fit_vgg, read_vgg_state

            path = self.context.resolve_path(setup.stage.backbone_weights)
            notes += fit_vgg(model.backbone, read_vgg_state(path), path.name)
        model.to(self.device)
        if setup.stage.channels_last:
            model.to(memory_format=torch.channels_last)
        if setup.stage.freeze_backbone:
            for param in model.backbone.parameters():
                param.requires_grad_(False)
        optimizer = make_optimizer(p.optimizer, [q for q in model.parameters() if q.requires_grad], p.lr, p.weight_decay, p.momentum)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        loss_fn = self.loss()
        history: list[dict] = []
        start_epoch, best, best_epoch = 1, float("inf"), 0
        if resume:
            info = read_sidecar(last_path)
            if info.get("architecture") != spec.as_dict():
                raise TableError(
                    f"{last_path} was trained as {info.get('architecture')}, the config asks for {spec.as_dict()}; use another -o"
                )
            fit_weights(model, read_state_dict(last_path), f"{spec.arch} head", last_path.name)
            state = load_torch_file(state_path)
            optimizer.load_state_dict(state["optimizer"])
            history = json.loads(state["history"])
            try:
                start_epoch, best, best_epoch = int(info["epoch"]) + 1, float(info["best_val_loss"]), int(info["best_epoch"])
                scale = (float(info["target_mean"]), float(info["target_std"]))
            except (KeyError, TypeError, ValueError):
                raise TableError(
                    f"{last_path.name}: its sidecar lacks the training state (epoch, best score); "
                    "resume only from a folder `voxpipe train` wrote, or use another -o"
                ) from None
            _log(f"resuming after epoch {start_epoch - 1} (best validation loss {best:.4f} at epoch {best_epoch})")

        def info(epoch: int) -> dict[str, Any]:
            return {
                "architecture": spec.as_dict(),
                "stage": setup.planned.spec.id,
                "classes": names,
                "target_mean": scale[0],
                "target_std": scale[1],
                "target_name": setup.stage.target_name,
                "classification_loss": p.classification_loss,
                "input": setup.input_options(normalise),
                "epoch": epoch,
                "best_val_loss": best,
                "best_epoch": best_epoch,
                "seed": p.seed,
                "split": {"train": len(train.x), "val": len(val.x), "test": len(test.x)},
                "config": Path(self.config.source).name,
                "task": "heads",
                "notes": notes,
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }

        epoch = start_epoch - 1
        stopped = "epochs"
        seconds_at_start = history[-1]["seconds"] if history else 0.0
        for epoch in range(start_epoch, p.epochs + 1):
            epoch_start = time.perf_counter()
            seed_everything(p.seed + epoch)  # an epoch's randomness depends on (seed, epoch) only: a resume repeats it
            generator = torch.Generator().manual_seed(p.seed + epoch)
            train_loss = fit_epoch(model, optimizer, loss_fn, scaler, train, scale, p.batch_size, generator, self.device, self.amp, p.flip)
            if p.precise_bn:
                recalibrate_batch_norm(model, train, p.batch_size, self.device, self.amp)
            val_loss, val_metrics = self.validate(model, val, names, scale, loss_fn)
            entry = {
                "epoch": epoch,
                "loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": (val_metrics.get("classification") or {}).get("accuracy"),
                "val_r2": (val_metrics.get("regression") or {}).get("r2"),
            }
            improved = val_loss < best
            if improved:
                best, best_epoch = val_loss, epoch
                checkpoint.save(model, best_path, info(epoch))
            entry["seconds"] = round(seconds_at_start + time.perf_counter() - started, 3)
            entry["epoch_seconds"] = round(time.perf_counter() - epoch_start, 3)
            history.append(entry)
            checkpoint.save(model, last_path, info(epoch))
            torch.save({"optimizer": optimizer.state_dict(), "history": json.dumps(history)}, state_path)
            with (output_dir / "log.jsonl").open("a") as log:
                log.write(json.dumps(entry) + "\n")
            curves.plot(history, output_dir / "learning_curve.png")
            scores = "".join(
                f"  {label} {entry[k]:.3f}" for k, label in (("val_accuracy", "val acc"), ("val_r2", "val R²")) if entry[k] is not None
            )
            _log(
                f"epoch {epoch}/{p.epochs}  loss {train_loss:.4f}  val loss {val_loss:.4f}{scores}  "
                f"best {best:.4f} (epoch {best_epoch})  {entry['epoch_seconds']:.1f} s{epochs_eta(history, p.epochs)}"
            )
            if p.patience and epoch - best_epoch >= p.patience:
                stopped = f"early stop: no better validation loss for {p.patience} epochs"
                _log(stopped)
                break
            if p.max_minutes is not None and (time.perf_counter() - started) / 60 > p.max_minutes:
                stopped = f"max_minutes ({p.max_minutes}) reached"
                _log(stopped)
                break
        final, info_best = checkpoint.load(best_path)
        final.to(self.device)
        pred = predict(
            final, test.x, p.batch_size, self.device, self.amp, p.classification_loss, (info_best["target_mean"], info_best["target_std"])
        )
        metrics = {"split": "test", "checkpoint": best_path.name, "epoch": info_best["epoch"], **score(pred, test, names)}
        from voxpipe.atomic import write_json

        write_json(output_dir / "metrics.json", metrics)
        _log(render(metrics))
        summary = {
            "checkpoint": str(best_path),
            "best_epoch": best_epoch,
            "best_val_loss": round(best, 5),
            "epochs": epoch,
            "stopped": stopped,
            "train_images": len(train.x),
            "val_images": len(val.x),
            "test_images": len(test.x),
            "metrics": str(output_dir / "metrics.json"),
            "learning_curve": str(output_dir / "learning_curve.png"),
            "seconds": round(time.perf_counter() - started, 1),
        }
        if "classification" in metrics:
            summary["test_accuracy"] = round(metrics["classification"]["accuracy"], 4)
        if "regression" in metrics and metrics["regression"]["r2"] is not None:
            summary["test_r2"] = round(metrics["regression"]["r2"], 4)
        return summary

    def validate(self, model, val: Loaded, names: list[str], scale, loss_fn) -> tuple[float, dict]:
        """Validation loss (same weighted loss as training, on standardised targets) and metrics."""
        model.eval()
        losses, weights = [], []
        with torch.inference_mode():
            for start in range(0, len(val.x), self.params.batch_size):
                sl = slice(start, start + self.params.batch_size)
                with autocast(self.device, self.amp):
                    out = model(val.x[sl].to(self.device))
                labels = val.labels[sl].to(self.device) if val.labels is not None else None
                targets = ((val.targets[sl] - scale[0]) / scale[1]).to(self.device) if val.targets is not None else None
                losses.append(float(loss_fn(out, labels, targets)))
                weights.append(len(val.x[sl]))
        pred = predict(model, val.x, self.params.batch_size, self.device, self.amp, self.params.classification_loss, scale)
        return float(np.average(losses, weights=weights)), score(pred, val, names)

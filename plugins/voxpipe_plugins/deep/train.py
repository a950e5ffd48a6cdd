"""The `segmentation` trainer behind `voxpipe train`: trains the config's `segment.deep` network.

The config that trains a model is the config that runs it: the stages between the loader
and `segment.deep` are the preprocessing applied to every training case, and the
`segment.deep` stage names the network, its arguments, the roi and the file the weights go to.
"""

from __future__ import annotations

import csv
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxpipe.errors import ConfigError, VoxpipeError
from voxpipe.progress import epochs_eta
from voxpipe.stage import StageContext, build_stage
from voxpipe_plugins.common.learning_curve import plot_learning_curve
from voxpipe_plugins.common.run_files import run_files
from voxpipe_plugins.deep.infer import default_label_names, resolve
from voxpipe_plugins.deep.weights import (
    bound_args,
    describe,
    fit_weights,
    load_torch_file,
    make_network,
    read_sidecar,
    read_state_dict,
    save_checkpoint,
)

NIFTI = (".nii.gz", ".nii")
DICOM = (".dcm",)


class TrainingDataError(VoxpipeError):
    """Training data that cannot be used as it is; the message names the file and what to do."""


@dataclass
class Pair:
    name: str
    image: Path
    label: Path


# ---------------------------------------------------------------- data


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI + DICOM:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name if path.is_dir() else path.stem


def _entries(folder: Path) -> dict[str, Path]:
    return {_stem(p): p for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def find_pairs(path: Path) -> list[Pair]:
    """Image/label pairs from a folder (images/ + labels/, matched by name) or a CSV (image,label columns)."""
    if path.is_file() and path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"image", "label"} <= set(reader.fieldnames):
                raise TrainingDataError(f"{path}: a training CSV needs `image` and `label` columns (got {reader.fieldnames})")
            pairs = []
            for row_number, row in enumerate(reader, start=2):
                image, label = (path.parent / row["image"].strip()), (path.parent / row["label"].strip())
                for p in (image, label):
                    if not p.exists():
                        raise TrainingDataError(f"{path}:{row_number}: {p} does not exist")
                pairs.append(Pair(_stem(image), image, label))
    elif path.is_dir():
        images, labels = path / "images", path / "labels"
        for folder in (images, labels):
            if not folder.is_dir():
                raise TrainingDataError(
                    f"{path}: expected the folders images/ and labels/ (matched by file name), {folder.name}/ is missing"
                )
        image_entries, label_entries = _entries(images), _entries(labels)
        unmatched = sorted(set(image_entries) - set(label_entries))
        if unmatched:
            raise TrainingDataError(
                f"{images}: {len(unmatched)} images have no label of the same name in labels/ ({', '.join(unmatched[:3])})"
            )
        pairs = [Pair(name, image_entries[name], label_entries[name]) for name in sorted(image_entries)]
    else:
        raise TrainingDataError(
            f"training data {path} not found: give a folder with images/ and labels/, or a CSV with image,label columns"
        )
    if not pairs:
        raise TrainingDataError(f"{path}: no image/label pairs found")
    return pairs


def read_volume(path: Path, name: str):
    """One NIfTI file or DICOM series (a folder or a .dcm file) as a channel-first MetaTensor, via the loaders' code."""
    lower = path.name.lower()
    if path.is_file() and lower.endswith(NIFTI):
        from voxpipe_plugins.io_nifti.reader import read_nifti

        return read_nifti(path, "float32", case_id=name)
    if path.is_dir() or lower.endswith(DICOM):
        from voxpipe_plugins.io_dicom.loader import DicomOptions, case_source, discover_series, load_into_case

        series = discover_series(path if path.is_dir() else [path])
        if len(series) != 1:
            raise TrainingDataError(f"{path}: expected one DICOM series, found {len(series)}")
        case = load_into_case({"source": case_source(series[0]), "case_id": name}, "image", DicomOptions(dtype="float32"), "load.dicom")
        return case["image"]
    raise TrainingDataError(f"{path}: not a NIfTI file or a DICOM series")


GRID_TOLERANCE_MM = 0.01


def grid_offset_mm(image, label) -> float:
    """Largest distance (mm) between the world positions of the same corner voxels of two same-shape grids.

    Equal shapes are not enough: a label saved with flipped or shifted axes (a DICOM image
    next to a NIfTI label, say) would otherwise train the network on misplaced voxels.
    """
    shape = np.asarray(image.shape[1:], dtype=np.float64)
    corners = np.array(np.meshgrid(*[[0.0, n - 1.0] for n in shape], indexing="ij")).reshape(len(shape), -1)
    corners = np.vstack([corners, np.zeros((3 - len(shape), corners.shape[1])), np.ones((1, corners.shape[1]))])

    def world(t) -> np.ndarray:
        affine = np.asarray(t.affine, dtype=np.float64) if getattr(t, "affine", None) is not None else np.eye(4)
        return (affine @ corners)[:3]

    return float(np.abs(world(image) - world(label)).max())


def check_label(label, path: Path, allowed: int) -> None:
    """Label values must be the integers 0..allowed-1; anything else names the file."""
    values = torch.unique(label.as_tensor() if hasattr(label, "as_tensor") else torch.as_tensor(label))
    bad = [v for v in values.tolist() if v != int(v) or not 0 <= v < allowed]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise TrainingDataError(
            f"{path}: label values {shown} are outside 0..{allowed - 1} (the network has {allowed} classes); "
            "remap the labels or change out_channels"
        )


# ---------------------------------------------------------------- plot


def plot_curve(history: list[dict], path: Path) -> None:
    """Training loss and validation Dice (0..1) against epoch."""
    plot_learning_curve(history, path, "val_dice", "validation Dice (right axis)", "training loss (DiceCE, left axis)", (0.0, 1.0))


# ---------------------------------------------------------------- trainer


class SegmentationTrainer:
    """Built by `voxpipe train` with the `training:` parameters, the validated config and the run context."""

    def __init__(self, params, config, context: StageContext) -> None:
        self.params, self.config, self.context = params, config, context
        deep = [s for s in config.stages if s.spec.id == "segment.deep" and (params.stage is None or s.label == params.stage)]
        if not deep:
            which = f"labelled `{params.stage}`" if params.stage else ""
            raise ConfigError(
                [f"{config.source}: training: no segment.deep stage {which}in the config; the trainer trains that stage's network"]
            )
        self.planned = deep[0]
        self.stage = self.planned.params
        self.preprocess_planned = [s for s in config.stages if 1 < s.index < self.planned.index]
        arguments = bound_args(self.stage.network, self.stage.args)
        self.out_channels = int(arguments.get("out_channels", 1))
        self.in_channels = int(arguments.get("in_channels", 1))
        if self.stage.output == "threshold" and self.out_channels != 1:
            raise ConfigError(
                [f"{config.source}: training: output `threshold` is trained with out_channels 1 (binary); use argmax for several classes"]
            )
        self.classes = self.out_channels if self.stage.output == "argmax" else 2
        self.label_names = dict(self.stage.label_names or default_label_names(self.out_channels, self.stage.output))
        self.crop = tuple(params.crop_size or self.stage.roi_size)
        if len(self.crop) != len(self.stage.roi_size):
            raise ConfigError(
                [f"{config.source}: training: crop_size {list(self.crop)} must have {len(self.stage.roi_size)} values like roi_size"]
            )
        self.device = resolve(None, context.device)

    # -- data
    def _preprocessors(self):
        built = []
        for planned in self.preprocess_planned:
            ctx = StageContext(device=self.context.device, config_dir=self.context.config_dir, stage_id=planned.spec.id)
            built.append((planned, build_stage(planned.spec, planned.params, ctx)))
        return built

    def _load(self, pairs: list[Pair], stages, what: str) -> list[dict]:
        items = []
        for n, pair in enumerate(pairs, start=1):
            image = read_volume(pair.image, pair.name)
            label = read_volume(pair.label, pair.name)
            check_label(label, pair.label, self.classes)
            if tuple(label.shape[1:]) != tuple(image.shape[1:]) or label.shape[0] != 1:
                raise TrainingDataError(
                    f"{pair.label}: label grid {tuple(label.shape)} does not match its image {tuple(image.shape)} "
                    f"({pair.image.name}); resample the label onto the image"
                )
            offset = grid_offset_mm(image, label)
            if offset > GRID_TOLERANCE_MM:
                raise TrainingDataError(
                    f"{pair.label}: label grid is placed differently from its image ({pair.image.name}): "
                    f"voxel centres differ by up to {offset:.2f} mm (flipped or shifted axes?); "
                    "resample the label onto the image"
                )
            if image.shape[0] != self.in_channels:
                raise TrainingDataError(f"{pair.image}: {image.shape[0]} channels but the network has in_channels={self.in_channels}")
            case: dict[str, Any] = {"image": image, "label": label, "case_id": pair.name, "history": []}
            for planned, stage in stages:
                try:
                    case = stage(case)
                except Exception as exc:  # noqa: BLE001 - name the file and the stage
                    text = " ".join(str(exc).split())
                    raise TrainingDataError(f"{pair.image}: stage {planned.index} ({planned.label}): {text}") from None
            if tuple(case["label"].shape[1:]) != tuple(case["image"].shape[1:]):
                raise TrainingDataError(
                    f"{pair.image}: after preprocessing the image is {tuple(case['image'].shape)} but its label "
                    f"{tuple(case['label'].shape)}; a preprocessing stage changes the grid of the image only"
                )
            items.append(
                {
                    "image": torch.as_tensor(case["image"]).float().contiguous(),
                    "label": torch.as_tensor(case["label"]).float().contiguous(),
                    "name": pair.name,
                }
            )
            _log(f"loaded {what} {n}/{len(pairs)}")
        return items

    def _split(self) -> tuple[list[Pair], list[Pair]]:
        pairs = find_pairs(self.context.resolve_path(self.params.data))
        if self.params.val_data:
            return pairs, find_pairs(self.context.resolve_path(self.params.val_data))
        if len(pairs) < 2:
            raise TrainingDataError(f"{self.params.data}: at least 2 image/label pairs are needed to hold one out for validation")
        order = list(range(len(pairs)))
        random.Random(self.params.seed).shuffle(order)
        n_val = min(len(pairs) - 1, max(1, round(self.params.val_fraction * len(pairs))))
        val = sorted(order[:n_val])
        return [pairs[i] for i in sorted(order[n_val:])], [pairs[i] for i in val]

    def _transforms(self):
        from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd, RandShiftIntensityd, RandSpatialCropSamplesd, SpatialPadd

        p = self.params
        keys = ["image", "label"]
        chain: list = [SpatialPadd(keys, spatial_size=self.crop)]
        if p.crop == "pos_neg":
            chain.append(
                RandCropByPosNegLabeld(
                    keys,
                    label_key="label",
                    spatial_size=self.crop,
                    pos=p.pos_fraction,
                    neg=1 - p.pos_fraction,
                    num_samples=p.samples_per_volume,
                    allow_smaller=True,
                )
            )
        else:
            chain.append(RandSpatialCropSamplesd(keys, roi_size=self.crop, num_samples=p.samples_per_volume, random_size=False))
        if p.flip_prob > 0:
            chain += [RandFlipd(keys, prob=p.flip_prob, spatial_axis=axis) for axis in range(len(self.crop))]
        if p.intensity_shift > 0:
            chain.append(RandShiftIntensityd(["image"], offsets=p.intensity_shift, prob=0.5))
        return Compose(chain)

    # -- checkpoints
    def _info(self, epoch: int, best: float, best_epoch: int, dice: float | None) -> dict[str, Any]:
        return {
            "network": self.stage.network,
            "args": self.stage.args,
            "epoch": epoch,
            "best_dice": best,
            "best_epoch": best_epoch,
            "val_dice": dice,
            "label_names": {str(k): v for k, v in self.label_names.items()},
            "roi_size": list(self.stage.roi_size),
            "output": self.stage.output,
            "config": self.config.source,
            "task": "segmentation",
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    # -- the loop
    def run(self, output_dir: Path, resume: bool = False) -> dict[str, Any]:
        from monai.data import CacheDataset, DataLoader, list_data_collate
        from monai.inferers import sliding_window_inference
        from monai.losses import DiceCELoss
        from monai.metrics import DiceMetric
        from monai.networks.utils import one_hot
        from monai.utils import set_determinism

        started = time.perf_counter()
        p = self.params
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        last_path, best_path, state_path = run_files(output_dir, resume, TrainingDataError)
        if p.threads:
            torch.set_num_threads(p.threads)
        set_determinism(seed=p.seed)

        train_pairs, val_pairs = self._split()
        stages = self._preprocessors()
        train_items = self._load(train_pairs, stages, "training case")
        val_items = self._load(val_pairs, stages, "validation case")

        model = make_network(self.stage.network, self.stage.args).to(self.device)
        opt_cls = torch.optim.AdamW if p.optimizer == "adamw" else torch.optim.Adam
        optimizer = opt_cls(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        amp = bool(p.amp and self.device.type == "cuda")
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        history: list[dict] = []
        start_epoch, best, best_epoch = 1, -1.0, 0
        if resume:
            info = read_sidecar(last_path)
            if (info.get("network"), info.get("args")) != (self.stage.network, self.stage.args):
                raise TrainingDataError(
                    f"{last_path} was trained as {describe(info.get('network', '?'), info.get('args') or {})}, "
                    f"the config asks for {describe(self.stage.network, self.stage.args)}; use another -o"
                )
            fit_weights(model, read_state_dict(last_path), describe(self.stage.network, self.stage.args), last_path.name)
            state = load_torch_file(state_path)
            optimizer.load_state_dict(state["optimizer"])
            if amp and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            history = json.loads(state["history"])
            try:
                start_epoch, best, best_epoch = int(info["epoch"]) + 1, float(info["best_dice"]), int(info["best_epoch"])
            except (KeyError, TypeError, ValueError):
                raise TrainingDataError(
                    f"{last_path.name}: its sidecar lacks the training state (epoch, best score); "
                    "resume only from a folder `voxpipe train` wrote, or use another -o"
                ) from None
            _log(f"resuming after epoch {start_epoch - 1} (best Dice {best:.4f} at epoch {best_epoch})")

        if self.stage.output == "argmax":
            loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=p.lambda_dice, lambda_ce=p.lambda_ce)
        else:
            loss_fn = DiceCELoss(sigmoid=True, lambda_dice=p.lambda_dice, lambda_ce=p.lambda_ce)
        transforms = self._transforms()
        dataset = CacheDataset(train_items, transform=transforms, cache_rate=p.cache_rate, num_workers=0, progress=False)
        metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=True)

        def predict(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cuda", dtype=torch.float16) if amp else _null():
                return sliding_window_inference(
                    x,
                    self.stage.roi_size,
                    self.stage.sw_batch_size,
                    model,
                    overlap=self.stage.overlap,
                    mode=self.stage.mode,
                    sigma_scale=self.stage.sigma_scale,
                ).float()

        def validate() -> float:
            model.eval()
            metric.reset()
            with torch.inference_mode():
                for item in val_items:
                    logits = predict(item["image"][None].to(self.device))
                    y = item["label"][None].to(self.device)
                    if self.stage.output == "argmax":
                        pred = one_hot(logits.argmax(1, keepdim=True), self.out_channels)
                        ref = one_hot(y.long(), self.out_channels)
                        metric(pred, ref)
                    else:
                        metric(torch.cat([1 - (logits > 0).float(), (logits > 0).float()], 1), one_hot(y.long(), 2))
            value = metric.aggregate().item()
            return 0.0 if math.isnan(value) else float(value)

        epoch = start_epoch - 1
        seconds_at_start = history[-1]["seconds"] if history else 0.0
        for epoch in range(start_epoch, p.epochs + 1):
            epoch_start = time.perf_counter()
            set_determinism(seed=p.seed + epoch)  # every epoch's randomness depends on (seed, epoch) only: resume repeats it
            transforms.set_random_state(seed=p.seed + epoch)
            loader = DataLoader(
                dataset,
                batch_size=p.batch_size,
                shuffle=True,
                num_workers=p.num_workers,
                collate_fn=list_data_collate,
                generator=torch.Generator().manual_seed(p.seed + epoch),
            )
            model.train()
            losses = []
            for batch in _progress(loader, f"epoch {epoch}/{p.epochs}"):
                x, y = batch["image"].to(self.device), batch["label"].to(self.device)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.float16) if amp else _null():
                    out = model(x)
                    if out.ndim == x.ndim + 1:  # deep supervision: train the full-resolution head
                        out = out[:, 0]
                    loss = loss_fn(out.float(), y)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
            entry: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None, "val_dice": None}
            out_of_time = p.max_minutes is not None and (time.perf_counter() - started) / 60 > p.max_minutes
            if epoch % p.val_every == 0 or epoch == p.epochs or out_of_time:
                dice = validate()
                entry["val_dice"] = dice
                if dice > best:
                    best, best_epoch = dice, epoch
                    save_checkpoint(model, best_path, self._info(epoch, best, best_epoch, dice))
            entry["seconds"] = round(seconds_at_start + time.perf_counter() - started, 3)
            entry["epoch_seconds"] = round(time.perf_counter() - epoch_start, 3)
            history.append(entry)
            save_checkpoint(model, last_path, self._info(epoch, best, best_epoch, entry["val_dice"]))
            torch.save(
                {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if amp else {}, "history": json.dumps(history)},
                state_path,
            )
            with (output_dir / "log.jsonl").open("a") as log:
                log.write(json.dumps(entry) + "\n")
            plot_curve(history, output_dir / "learning_curve.png")
            dice_text = f"  val Dice {entry['val_dice']:.4f}" if entry["val_dice"] is not None else ""
            _log(
                f"epoch {epoch}/{p.epochs}  loss {entry['loss']:.4f}{dice_text}  best {max(best, 0):.4f} (epoch {best_epoch})  "
                f"{entry['epoch_seconds']:.1f} s{epochs_eta(history, p.epochs)}"
            )
            if out_of_time:
                _log(f"stopping: max_minutes ({p.max_minutes}) reached")
                break
        try:
            (output_dir / ".voxpipe").rmdir()  # the CLI's writability probe folder, empty
        except OSError:
            pass
        return {
            "best_dice": round(max(best, 0.0), 4),
            "best_epoch": best_epoch,
            "epochs": epoch,
            "checkpoint": str(best_path if best_path.exists() else last_path),
            "last": str(last_path),
            "learning_curve": str(output_dir / "learning_curve.png"),
            "train_cases": len(train_items),
            "val_cases": len(val_items),
            "seconds": round(time.perf_counter() - started, 1),
        }


def _null():
    from contextlib import nullcontext

    return nullcontext()


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _progress(iterable, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, leave=False, file=sys.stderr)

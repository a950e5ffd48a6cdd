#!/usr/bin/env python
"""VGG16 extraction and training-step overhead: VoxPipe against bare torch, in the same process.

1. Extraction. A batch of 224x224 grey planes (a 1x224x224xN "volume", so the stage batches
   them as it batches slices) goes through ``features.vgg`` (vgg16, pool5, global average,
   weights from a local file so ImageNet normalisation runs, ``batch_size`` = N) and, bare,
   through ``model.features(x).mean((2, 3))`` under ``torch.inference_mode`` on the same
   batch, already 3-channel and normalised, in torch's default memory format -- what a user
   would write. The stage's time includes everything it does: min-max scaling, channel
   repetition, normalisation, pooling, the numpy copy. Goal (issue 6): >= 0.95x the bare
   throughput. Also shown: the same N images as N separate 2D cases (batch 1 each).
2. Training step. The heads trainer's ``train_step`` (the seed's VGG16_bn + classification
   and regression heads, Adam, CE + MSE) against a plain torch loop -- zero_grad, forward,
   the two losses summed, backward, step -- on identical models and batches (64x64, batch
   16, as in configs/vgg16-multitask.yaml). Goal: <= 1.05x the plain step time.

Rounds alternate the implementations (the order flips each round) after a warm-up, and the
tables give medians. The 1-minute load average is recorded before and after: the machine
may be shared.

    python benchmarks/vgg_extract.py [--images 16] [--repeat 5] [--steps 8] [--write]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchlib

BEGIN, END = "<!-- vgg:begin -->", "<!-- vgg:end -->"


def load() -> float:
    return os.getloadavg()[0]


def timed(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def summary(samples: list[tuple[float, float]]) -> dict:
    walls, cpus = [w for w, _ in samples], [c for _, c in samples]
    return {"wall": statistics.median(walls), "min": min(walls), "cpu": statistics.median(cpus)}


def extraction(images: int, repeat: int) -> dict:
    import numpy as np
    import torch
    from monai.data import MetaTensor

    from voxpipe_plugins.features.extract import VGGExtractor
    from voxpipe_plugins.features.inputs import imagenet_normalise
    from voxpipe_plugins.features.vgg import VGG

    torch.manual_seed(0)
    bare = VGG("vgg16", classifier=False).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vgg16.pth"
        torch.save(bare.state_dict(), path)
        stage = VGGExtractor(arch="vgg16", weights=str(path), layers=["pool5"], pooling="avg", batch_size=images)
        single = VGGExtractor(arch="vgg16", weights=str(path), layers=["pool5"], pooling="avg", batch_size=1)
    rng = np.random.default_rng(0)
    planes = rng.uniform(0, 1, (images, 224, 224)).astype(np.float32)
    volume = MetaTensor(torch.from_numpy(np.ascontiguousarray(planes.transpose(2, 1, 0)[None])))  # (1, X, Y, Z): slices = planes
    cases2d = [MetaTensor(torch.from_numpy(np.ascontiguousarray(p.T[None]))) for p in planes]
    x = imagenet_normalise(torch.from_numpy(planes)[:, None].expand(-1, 3, -1, -1).contiguous())

    def run_bare():
        with torch.inference_mode():
            return bare.features(x).mean((2, 3)).numpy()

    def run_stage():
        return stage({"image": volume})["features"]["vgg16"]

    def run_single():
        return [single({"image": c})["features"]["vgg16"] for c in cases2d]

    reference = run_bare().mean(0)
    np.testing.assert_allclose(run_stage(), reference, rtol=1e-3, atol=1e-4)  # the same work: the same numbers
    times = {"bare": [], "stage": [], "single": []}
    functions = {"bare": run_bare, "stage": run_stage, "single": run_single}
    for r in range(repeat):
        order = ["bare", "stage", "single"] if r % 2 == 0 else ["single", "stage", "bare"]
        for name in order:
            times[name].append(timed(functions[name]))
    return {name: summary(values) for name, values in times.items()}


def training(steps: int) -> dict:
    import copy

    import torch
    import torch.nn.functional as F

    from voxpipe_plugins.heads.losses import MultiTaskLoss
    from voxpipe_plugins.heads.models import HeadArchitecture, build_model
    from voxpipe_plugins.heads.train import train_step

    torch.manual_seed(0)
    spec = HeadArchitecture(arch="vgg16_bn", in_channels=1, task="multitask", logits=2)
    ours = build_model(spec).train()
    plain = copy.deepcopy(ours).train()
    x = torch.rand(16, 1, 64, 64)
    labels = torch.randint(0, 2, (16,))
    targets = torch.randn(16)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-4)
    opt_plain = torch.optim.Adam(plain.parameters(), lr=1e-4)
    loss_fn = MultiTaskLoss("ce", "mse")
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    device = torch.device("cpu")

    def step_ours():
        train_step(ours, opt_ours, loss_fn, scaler, x, labels, targets, device, False)

    def step_plain():
        opt_plain.zero_grad()
        out = plain(x)
        loss = F.cross_entropy(out["logits"], labels) + F.mse_loss(out["regression"], targets)
        loss.backward()
        opt_plain.step()

    step_ours(), step_plain()  # warm-up (allocator, Adam state)
    times = {"ours": [], "plain": []}
    for r in range(steps):
        for name in ("ours", "plain") if r % 2 == 0 else ("plain", "ours"):
            times[name].append(timed(step_ours if name == "ours" else step_plain))
    return {name: summary(v) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    import torch

    before = load()
    ext = extraction(args.images, args.repeat)
    tr = training(args.steps)
    after = load()
    n = args.images

    def rate(entry: dict, key: str) -> float:
        return n / entry[key]

    rows = [
        (f"bare torch: `model.features(x).mean((2, 3))`, inference_mode, batch {n}", ext["bare"]),
        (f"`features.vgg`, the {n} planes as one case (slices, batch {n})", ext["stage"]),
        (f"`features.vgg`, {n} separate 2D cases (batch 1 each)", ext["single"]),
    ]
    ext_lines = [
        f"| {label} | {rate(e, 'wall'):.2f} | {rate(e, 'min'):.2f} | {rate(e, 'cpu'):.2f} | "
        f"{rate(e, 'wall') / rate(ext['bare'], 'wall'):.2f}× | {rate(e, 'cpu') / rate(ext['bare'], 'cpu'):.2f}× |"
        for label, e in rows
    ]
    tr_lines = [
        f"| {label} | {e['wall']:.3f} | {e['min']:.3f} | {e['cpu']:.3f} | {e['wall'] / tr['plain']['wall']:.2f}× | "
        f"{e['cpu'] / tr['plain']['cpu']:.2f}× |"
        for label, e in (("plain torch loop", tr["plain"]), ("heads trainer `train_step`", tr["ours"]))
    ]
    text = "\n".join(
        [
            BEGIN,
            f"Measured {_dt.date.today().isoformat()} on {benchlib.machine(f'torch {torch.__version__}, {torch.get_num_threads()} threads')}; "
            f"1-minute load average {before:.1f} before, {after:.1f} after (the machine was shared; medians of alternating "
            "rounds; CPU time is this process's, all threads, and is less sensitive to other load than wall time).",
            "",
            f"**Extraction, VGG16 conv stack, {n} images of 224×224** ({args.repeat} rounds; identical vectors, checked):",
            "",
            "| implementation | images/s (median wall) | images/s (best) | images/s (median CPU) | vs bare (wall) | vs bare (CPU) |",
            "|---|---:|---:|---:|---:|---:|",
            *ext_lines,
            "",
            f"**Training step, VGG16_bn + classification and regression heads, batch 16 of 64×64, Adam, CE + MSE** "
            f"({args.steps} steps each after a warm-up):",
            "",
            "| implementation | step s (median wall) | step s (best) | step s (median CPU) | vs plain (wall) | vs plain (CPU) |",
            "|---|---:|---:|---:|---:|---:|",
            *tr_lines,
            END,
        ]
    )
    print(text)
    if args.write:
        benchlib.write_section(BEGIN, END, text)


if __name__ == "__main__":
    sys.exit(main())

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
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    return {name: images / statistics.median(values) for name, values in times.items()} | {"times": times}


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
        for name in (("ours", "plain") if r % 2 == 0 else ("plain", "ours")):
            start = time.perf_counter()
            (step_ours if name == "ours" else step_plain)()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()} | {"times": times}


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
    ratio = ext["stage"] / ext["bare"]
    step_ratio = tr["ours"] / tr["plain"]
    text = "\n".join([
        BEGIN,
        f"Measured {_dt.date.today().isoformat()} on {benchlib.machine(f'torch {torch.__version__}, {torch.get_num_threads()} threads')}; "
        f"1-minute load average {before:.1f} before, {after:.1f} after (the machine was shared; medians of alternating rounds).",
        "",
        f"**Extraction, VGG16 conv stack, {args.images} images of 224×224** ({args.repeat} rounds; identical vectors, checked):",
        "",
        "| implementation | images/s (median) | vs bare |",
        "|---|---:|---:|",
        f"| bare torch: `model.features(x).mean((2, 3))`, inference_mode, batch {args.images} | {ext['bare']:.2f} | 1.00× |",
        f"| `features.vgg`, the {args.images} planes as one case (slices, batch {args.images}) | {ext['stage']:.2f} | {ratio:.2f}× |",
        f"| `features.vgg`, {args.images} separate 2D cases (batch 1 each) | {ext['single']:.2f} | {ext['single'] / ext['bare']:.2f}× |",
        "",
        f"**Training step, VGG16_bn + classification and regression heads, batch 16 of 64×64, Adam, CE + MSE** "
        f"({args.steps} steps each after a warm-up):",
        "",
        "| implementation | step (s, median) | vs plain |",
        "|---|---:|---:|",
        f"| plain torch loop | {tr['plain']:.3f} | 1.00× |",
        f"| heads trainer `train_step` | {tr['ours']:.3f} | {step_ratio:.2f}× |",
        END,
    ])
    print(text)
    if args.write:
        benchlib.write_section(BEGIN, END, text)


if __name__ == "__main__":
    sys.exit(main())

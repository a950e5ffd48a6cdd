#!/usr/bin/env python
"""3D non-local means: VoxPipe's torch NLM against scikit-image's fast mode, in one run.

The volume is the 3D Shepp-Logan phantom (voxpipe_plugins.common.denoise_phantom),
64 x 128 x 128 voxels scaled to [0, 1], plus Gaussian noise of σ = 0.08 (fixed seed):
PSNR 21.9 dB. Every method runs ``--repeat`` times, interleaved round by round after
``--warmup`` unrecorded rounds, in this one process; the table reports the median and
best wall time, PSNR and SSIM, and the time relative to scikit-image's reference setting.

Methods:
- scikit-image ``denoise_nl_means(fast_mode=True)``, patch_size 5, patch_distance 3,
  h = 0.8 σ, sigma = σ: the reference of issue 4 (34.9 dB); single-threaded Cython.
- the same with patch_size 3 (same search window as VoxPipe's default).
- VoxPipe ``denoise.nlm`` with its defaults, as a stage: σ estimated from the image,
  5³ patches, 3³ search window (chosen on real anatomy in issue 19, see
  benchmarks/denoise_real.py), h = 0.8 σ̂, patch-wise aggregation, torch on all cores;
  and with the phantom window (3³ patches, 7³ search: the defaults before issue 19).
- VoxPipe's kernel with the reference's sizes (5³ patches, 7³ window, σ given), patch-wise
  and pixel-wise aggregation; with the default sizes, pixel-wise; and with the default
  sizes on torch's intra-op threads instead of worker threads (``threads=1``: faster on an
  idle machine, much slower on a busy one; see denoise/kernels.py).
- with CUDA: the ``denoise.nlm`` stage on the GPU (synchronised timing).

    python benchmarks/denoise_nlm.py                 # print the table
    python benchmarks/denoise_nlm.py --write         # also update docs/benchmarks.md
    python benchmarks/denoise_nlm.py --repeat 7 --warmup 1

Goal (issue 4): PSNR at least scikit-image's reference in <= 0.5x its time on the CPU,
and >= 20x faster than it on a GPU. This script only reports; it never fails on a goal.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import benchlib  # benchmarks/benchlib.py: machine description, doc-section writer
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- denoise:begin -->", "<!-- denoise:end -->"
SHAPE = (64, 128, 128)
SIGMA = 0.08
CPU_GOAL = 0.5
GPU_GOAL = 20.0


@dataclass
class Method:
    label: str
    run: Callable[[], np.ndarray]
    settings: str
    reference: bool = False
    device: str = "cpu"
    times: list[float] = field(default_factory=list)
    psnr: float = float("nan")
    ssim: float = float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)


machine = benchlib.machine


def build_methods(noisy: np.ndarray, cuda: bool) -> list[Method]:
    import torch
    from skimage.restoration import denoise_nl_means

    from voxpipe_plugins.common.tensors import make_metatensor
    from voxpipe_plugins.denoise.kernels import nlm
    from voxpipe_plugins.denoise.nlm import NLMDenoise

    image = make_metatensor(noisy[None], np.eye(4))
    tensor = torch.from_numpy(noisy)
    h = 0.8 * SIGMA

    def skimage_nlm(patch_size: int) -> Callable[[], np.ndarray]:
        return lambda: denoise_nl_means(noisy, patch_size=patch_size, patch_distance=3, h=h, sigma=SIGMA, fast_mode=True)

    def stage(device: str, **params) -> Callable[[], np.ndarray]:
        fn = NLMDenoise(device=device, **params)

        def run() -> np.ndarray:
            out = fn({"image": image, "history": []})["image"]
            if device != "cpu":
                torch.cuda.synchronize()
            return out[0].numpy()

        return run

    def kernel(patchwise: bool, patch: int = 2, threads: int | None = None) -> Callable[[], np.ndarray]:
        return lambda: nlm(tensor, SIGMA, h, (patch,) * 3, (3, 3, 3), patchwise=patchwise, threads=threads).numpy()

    threads = torch.get_num_threads()
    methods = [
        Method("scikit-image fast NLM (reference)", skimage_nlm(5), "patch 5³, distance 3 (7³), h 0.8σ, σ given; 1 thread", reference=True),
        Method("scikit-image fast NLM, patch 3", skimage_nlm(3), "patch 3³, distance 3 (7³), h 0.8σ, σ given; 1 thread"),
        Method(
            "VoxPipe `denoise.nlm` defaults (stage)",
            stage("cpu"),
            f"patch 5³, search 3³, h 0.8σ̂, σ estimated, patch-wise; torch, {threads} threads",
        ),
        Method(
            "VoxPipe `denoise.nlm`, phantom window (stage)",
            stage("cpu", patch_radius_mm=1.0, search_radius_mm=3.0),
            f"patch 3³, search 7³ (the pre-issue-19 defaults), h 0.8σ̂, σ estimated, patch-wise; torch, {threads} threads",
        ),
        Method(
            "VoxPipe kernel, reference sizes", kernel(True), f"patch 5³, search 7³, h 0.8σ, σ given, patch-wise; torch, {threads} threads"
        ),
        Method(
            "VoxPipe kernel, reference sizes, pixel-wise",
            kernel(False),
            f"patch 5³, search 7³, h 0.8σ, σ given, pixel-wise; torch, {threads} threads",
        ),
        Method(
            "VoxPipe kernel, phantom window, pixel-wise",
            kernel(False, 1),
            f"patch 3³, search 7³, h 0.8σ, σ given, pixel-wise; torch, {threads} threads",
        ),
        Method(
            "VoxPipe kernel, phantom window, torch intra-op threads",
            kernel(True, 1, threads=1),
            f"patch 3³, search 7³, h 0.8σ, σ given, patch-wise; one calling thread, torch's {threads} intra-op threads",
        ),
    ]
    if cuda:
        methods.append(Method("VoxPipe `denoise.nlm` defaults on CUDA", stage("cuda"), "as the CPU stage, on the GPU", device="cuda"))
    return methods


def run(methods: list[Method], clean: np.ndarray, repeat: int, warmup: int) -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    for _ in range(warmup):
        for method in methods:
            method.run()
    outputs: dict[str, np.ndarray] = {}
    for _ in range(repeat):
        for method in methods:
            start = time.perf_counter()
            outputs[method.label] = method.run()
            method.times.append(time.perf_counter() - start)
    for method in methods:
        out = outputs[method.label]
        method.psnr = float(peak_signal_noise_ratio(clean, out, data_range=1.0))
        method.ssim = float(structural_similarity(clean, out, data_range=1.0))


def table(methods: list[Method], noisy_psnr: float, noisy_ssim: float) -> str:
    reference = next(m for m in methods if m.reference)
    lines = [
        "| method | settings | runs | median (s) | best (s) | time / reference | PSNR (dB) | SSIM |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| noisy input | σ = {SIGMA} | – | – | – | – | {noisy_psnr:.2f} | {noisy_ssim:.3f} |",
    ]
    for m in methods:
        lines.append(
            f"| {m.label} | {m.settings} | {len(m.times)} | {m.median:.3f} | {m.best:.3f} | "
            f"{m.median / reference.median:.2f}× | {m.psnr:.2f} | {m.ssim:.3f} |"
        )
    return "\n".join(lines)


def verdict(methods: list[Method], cuda: bool) -> str:
    reference = next(m for m in methods if m.reference)
    text = f"CPU goal (PSNR ≥ scikit-image's {reference.psnr:.2f} dB in ≤ {CPU_GOAL}× its time):"
    for label, name in (
        ("VoxPipe `denoise.nlm` defaults (stage)", "defaults"),
        ("VoxPipe `denoise.nlm`, phantom window (stage)", "phantom window"),
    ):
        ours = next(m for m in methods if m.label == label)
        ratio = ours.median / reference.median
        met = ratio <= CPU_GOAL and ours.psnr >= reference.psnr
        text += (
            f" {name}: "
            f"{'met' if met else 'NOT met'}, {ours.psnr:.2f} dB in {ratio:.2f}× the time "
            f"({ours.median:.3f} s vs {reference.median:.3f} s, {reference.median / ours.median:.1f}× faster);"
        )
    text = text.rstrip(";") + "."
    if cuda:
        gpu = next(m for m in methods if m.device == "cuda")
        speedup = reference.median / gpu.median
        text += f" GPU goal (≥ {GPU_GOAL:.0f}× faster than scikit-image): {'met' if speedup >= GPU_GOAL else 'NOT met'}: {speedup:.0f}×."
    else:
        text += (
            f" GPU goal (≥ {GPU_GOAL:.0f}× faster than scikit-image): not measured, no CUDA device on this machine; "
            "the same code runs on CUDA (the CUDA-vs-CPU test in tests/test_denoise.py checks it agrees)."
        )
    return text


def section(
    methods: list[Method], noisy_psnr: float, noisy_ssim: float, repeat: int, warmup: int, cuda: bool, load: tuple[float, float]
) -> str:
    import torch

    today = _dt.date.today().isoformat()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if cuda else ", no GPU"
    busy = (
        f" 1-minute load average {load[0]:.1f} at the start and {load[1]:.1f} at the end (other work on the "
        "machine shows as a gap between median and best)."
        if load[0] >= 0
        else ""
    )
    return "\n".join(
        [
            BEGIN,
            f"Measured {today} with `python benchmarks/denoise_nlm.py --repeat {repeat} --warmup {warmup}`: 3D Shepp-Logan "
            f"phantom {SHAPE[0]}×{SHAPE[1]}×{SHAPE[2]}, Gaussian noise σ = {SIGMA}, all methods in one process, interleaved.",
            "",
            f"Machine: {machine()}{gpu}; torch {torch.__version__} ({torch.get_num_threads()} threads).{busy}",
            "",
            table(methods, noisy_psnr, noisy_ssim),
            "",
            verdict(methods, cuda),
            END,
        ]
    )


def write_doc(text: str) -> None:
    benchlib.write_section(BEGIN, END, text, DOC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each method (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded rounds first (default 1)")
    parser.add_argument("--write", action="store_true", help=f"replace the denoise section of {DOC.relative_to(REPO)}")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be >= 1, --warmup >= 0")

    import torch
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from voxpipe_plugins.common.denoise_phantom import shepp_logan_3d

    torch.set_num_threads(os.cpu_count() or 1)
    clean = shepp_logan_3d(SHAPE)
    noisy = (clean + np.random.default_rng(0).normal(0, SIGMA, clean.shape)).astype(np.float32)
    noisy_psnr = float(peak_signal_noise_ratio(clean, noisy, data_range=1.0))
    noisy_ssim = float(structural_similarity(clean, noisy, data_range=1.0))
    cuda = torch.cuda.is_available()
    methods = build_methods(noisy, cuda)
    start_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
    run(methods, clean, args.repeat, args.warmup)
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
    text = section(methods, noisy_psnr, noisy_ssim, args.repeat, args.warmup, cuda, (start_load, end_load))
    print(text)
    if args.write:
        write_doc(text)
    return 0  # report only


if __name__ == "__main__":
    sys.exit(main())

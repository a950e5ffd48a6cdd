#!/usr/bin/env python
"""Batch scaling: local worker pool 1 vs 2 workers, Dask LocalCluster vs local pool, runner overhead.

Cases: ``--cases`` synthetic CT-like volumes of ``--shape`` (default 16 of 128x256x256,
float32, uncompressed NIfTI, 1 x 0.8 x 0.8 mm), written once into a scratch folder. For the
64-case point the 16 files are hard-linked under new names (no extra disk; every link is a
distinct case to VoxPipe).

Pipeline (one case is under a second of single-threaded NumPy/SciPy work on the 2-core
machine, like most classical recipes; the lighter a case, the more start-up weighs)::

    load.auto -> denoise.gaussian (1 mm) -> segment.threshold (body > -500 HU)
              -> label.largest_component -> label.fill_holes (slice) -> label.close (2 mm) -> write.nifti (label)

(configs/ct-body-mask.yaml after a Gaussian). Start-up is measured too: the same variants on
one case; "steady state" is the ratio of (16-case time - 1-case time).

Every measurement is a whole ``voxpipe run`` in a fresh process into a fresh output folder,
as a user runs it: start-up (the forkserver importing torch and MONAI, the Dask cluster
coming up) is included, because that is what the user waits for. Runs alternate between the
variants being compared, ``--repeat`` rounds; the median of each is reported, and so is the
median (and range) of the per-round ratios: the two runs of a round are neighbours in time,
so they share whatever else the machine was doing then.

Per-case overhead of the runner (discovery, case ids, the manifest, case.json, staging and
the atomic publish) is measured in-process with ``voxpipe.run(workers=0)`` on tiny cases
whose only stages are load + write: the growth of (wall time minus the stages' own seconds)
from 16 to 80 cases, per case, so fixed costs (imports, building the pipeline) cancel.

    python benchmarks/batch_scaling.py                  # the table
    python benchmarks/batch_scaling.py --write          # also update docs/benchmarks.md
    python benchmarks/batch_scaling.py --repeat 1 --skip-64   # quicker look

Goals (issue 8): 2 workers >= 1.7x faster than 1 on a 2-core machine; Dask LocalCluster
with 2 workers <= 1.15x the local pool's time; runner overhead < 50 ms per case. Timings
are reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

REPO = benchlib.REPO
VOXPIPE = [sys.executable, "-m", "voxpipe"]
BEGIN, END = "<!-- batch_scaling:begin -->", "<!-- batch_scaling:end -->"

PIPELINE = """\
version: 1
name: batch-scaling
device: cpu
stages:
  - use: load.auto
  - use: denoise.gaussian
    with: {sigma_mm: 1.0}
  - use: segment.threshold
    with:
      ranges: [{name: body, min: -500}]
  - use: label.largest_component
  - use: label.fill_holes
    with: {mode: slice}
  - use: label.close
    with: {radius_mm: 2.0}
  - use: write.nifti
    with: {keys: [label]}
"""

TINY = """\
version: 1
name: runner-overhead
device: cpu
stages:
  - use: load.auto
  - use: write.nifti
    with: {keys: [image], compress: false}
"""


def make_cases(folder: Path, count: int, shape: tuple[int, int, int]) -> None:
    import nibabel as nib
    import numpy as np

    from voxpipe_plugins.io_dicom.synthetic import ct_like_volume

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        volume = ct_like_volume(shape, seed=i).astype(np.float32)  # (Z, Y, X) in HU
        array = np.ascontiguousarray(np.transpose(volume, (2, 1, 0)))
        nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 1.0, 1.0])), str(folder / f"case{i:03d}.nii"))


def link_cases(source: Path, target: Path, count: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(source.glob("*.nii"))
    for i in range(count):
        os.link(files[i % len(files)], target / f"case{i:03d}.nii")


def timed_run(config: Path, inputs: Path, scratch: Path, *options: str) -> float:
    out = Path(tempfile.mkdtemp(dir=scratch, prefix="out-"))
    shutil.rmtree(out)
    env = benchlib.child_env(VOXPIPE_ID_KEY_FILE=str(scratch / "id.key"))
    start = time.perf_counter()
    proc = subprocess.run(
        [*VOXPIPE, "run", str(config), "-i", str(inputs), "-o", str(out), "--no-report", *options],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(options)}): {proc.stderr[-800:]}")
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def compare(config: Path, inputs: Path, scratch: Path, variants: dict[str, list[str]], repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(repeat):
        names = list(variants)
        if round_ % 2:
            names.reverse()  # alternate the order: neither side always runs first
        for name in names:
            times[name].append(timed_run(config, inputs, scratch, *variants[name]))
            print(f"  {name}: {times[name][-1]:.1f} s", file=sys.stderr)
    return times


def paired(numerators: list[float], denominators: list[float]) -> tuple[float, float, float]:
    """Median, lowest and highest of the ratios of runs made in the same round."""
    ratios = sorted(a / b for a, b in zip(numerators, denominators))
    return statistics.median(ratios), ratios[0], ratios[-1]


def runner_overhead(scratch: Path, small: int = 16, large: int = 80) -> dict:
    """In-process slope: (wall - stage seconds) grows by this much per extra case.

    Two runs of ``voxpipe.run(workers=0)`` on ``small`` and ``large`` tiny cases; fixed costs
    (imports, pipeline build, the final manifest) cancel in the difference.
    """
    import nibabel as nib
    import numpy as np

    import voxpipe

    os.environ["VOXPIPE_ID_KEY_FILE"] = str(scratch / "id.key")
    config = scratch / "tiny.yaml"
    config.write_text(TINY)
    registry = voxpipe.load_registry()
    folders = {}
    for count in (small, large):
        folder = folders[count] = scratch / f"tiny-{count}"
        folder.mkdir()
        for i in range(count):
            nib.save(nib.Nifti1Image(np.full((8, 8, 8), i, np.float32), np.eye(4)), str(folder / f"t{i:03d}.nii"))
    voxpipe.run(config, folders[small], scratch / "tiny-warm", registry=registry, workers=0, report=False)  # imports, caches
    samples = []
    for attempt in range(3):
        net = {}
        for count, folder in folders.items():
            start = time.perf_counter()
            summary = voxpipe.run(config, folder, scratch / f"tiny-out-{count}-{attempt}", registry=registry, workers=0, report=False)
            wall = time.perf_counter() - start
            net[count] = wall - sum(s["seconds"] for o in summary.outcomes for s in o.stages)
        samples.append((net[large] - net[small]) / (large - small))
    return {"cases": f"{small} vs {large}", "per_case_ms": statistics.median(samples) * 1000, "samples_ms": [s * 1000 for s in samples]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="128,256,256", help="Z,Y,X of each case")
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-64", action="store_true", help="leave out the 64-case point")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    scratch = Path(tempfile.mkdtemp(prefix="voxpipe-batch-bench-"))
    try:
        config = scratch / "pipeline.yaml"
        config.write_text(PIPELINE)
        inputs = scratch / "cases"
        print(f"writing {args.cases} cases of {shape} ...", file=sys.stderr)
        make_cases(inputs, args.cases, shape)

        one = scratch / "one"
        link_cases(inputs, one, 1)
        print("start-up: one case", file=sys.stderr)
        startup = compare(
            config,
            one,
            scratch,
            {"1 worker": ["--workers", "1"], "2 workers": ["--workers", "2"], "dask-local": ["--executor", "dask-local", "--workers", "2"]},
            args.repeat,
        )
        print("local pool: 1 vs 2 workers", file=sys.stderr)
        pool = compare(config, inputs, scratch, {"1 worker": ["--workers", "1"], "2 workers": ["--workers", "2"]}, args.repeat)
        print("Dask LocalCluster vs local pool, 2 workers", file=sys.stderr)
        dask = compare(
            config,
            inputs,
            scratch,
            {"local pool": ["--workers", "2"], "dask-local": ["--executor", "dask-local", "--workers", "2"]},
            args.repeat,
        )

        growth = {}
        counts = [4, 16] + ([] if args.skip_64 else [64])
        for count in counts:
            if count == args.cases:  # measured above
                growth[count] = pool
                continue
            folder = scratch / f"n{count}"
            link_cases(inputs, folder, count)
            print(f"{count} cases, 1 vs 2 workers", file=sys.stderr)
            growth[count] = compare(
                config,
                folder,
                scratch,
                {"1 worker": ["--workers", "1"], "2 workers": ["--workers", "2"]},
                max(1, args.repeat if count < 64 else 1),
            )
        overhead = runner_overhead(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]

    med = {k: statistics.median(v) for k, v in {**pool, **{f"dask:{k}": v for k, v in dask.items()}}.items()}
    speedup = med["1 worker"] / med["2 workers"]
    dask_ratio = med["dask:dask-local"] / med["dask:local pool"]
    start = {k: statistics.median(v) for k, v in startup.items()}
    steady_speedup = (med["1 worker"] - start["1 worker"]) / max(1e-9, med["2 workers"] - start["2 workers"])
    steady_dask = (med["dask:dask-local"] - start["dask-local"]) / max(1e-9, med["dask:local pool"] - start["2 workers"])
    paired_speedup = paired(pool["1 worker"], pool["2 workers"])
    paired_dask = paired(dask["dask-local"], dask["local pool"])
    lines = [
        BEGIN,
        "## Batch runs: worker pool, Dask, runner overhead (issue 8)",
        "",
        f"`python benchmarks/batch_scaling.py{' --write' if args.write else ''}{'' if args.repeat == 5 else f' --repeat {args.repeat}'}` "
        f"on {_dt.date.today().isoformat()}; {benchlib.machine()}.",
        f"Load average (1/5/15 min) before: {' / '.join(load_before)}, after: {' / '.join(load_after)}"
        + (
            " -- **the machine was shared with other jobs: rerun on a quiet machine for the real ratios.**"
            if float(load_before[0]) > 1.0 or float(load_after[0]) > 1.0
            else "."
        ),
        "",
        f"{args.cases} cases of {shape[0]}x{shape[1]}x{shape[2]} (float32 NIfTI), pipeline load -> Gaussian 1 mm -> threshold -> "
        "largest component -> fill holes -> closing 2 mm -> write label (the ct-body-mask recipe); each number is a whole `voxpipe run` in a fresh process (start-up included), "
        f"median of {args.repeat} alternating runs.",
        "",
        "| comparison | whole run (s) | one case (s): start-up | ratio of the medians | per-round ratios: median (range) | ratio, steady state | goal |",
        "|---|---|---|---|---|---|---|",
        f"| local pool, 1 worker | {med['1 worker']:.1f} | {start['1 worker']:.1f} | | | | |",
        f"| local pool, 2 workers | {med['2 workers']:.1f} | {start['2 workers']:.1f} | speed-up **{speedup:.2f}x** | "
        f"{paired_speedup[0]:.2f}x ({paired_speedup[1]:.2f}-{paired_speedup[2]:.2f}) | {steady_speedup:.2f}x | >= 1.7x |",
        f"| local pool, 2 workers (Dask pair) | {med['dask:local pool']:.1f} | | | | | |",
        f"| Dask LocalCluster, 2 workers | {med['dask:dask-local']:.1f} | {start['dask-local']:.1f} | **{dask_ratio:.2f}x** the time | "
        f"{paired_dask[0]:.2f}x ({paired_dask[1]:.2f}-{paired_dask[2]:.2f}) | {steady_dask:.2f}x | <= 1.15x |",
        "",
        f"Runner overhead per case (discovery, ids, manifest, case.json, staging, atomic publish; in-process slope between "
        f"{overhead['cases']} tiny cases, stages' own time removed): **{overhead['per_case_ms']:.1f} ms** (goal < 50 ms; samples "
        + ", ".join(f"{s:.1f}" for s in overhead["samples_ms"])
        + ").",
        "",
        "How the total grows with the number of cases, and the 2-worker speed-up with it (start-up is paid once per run):",
        "",
        "| cases | 1 worker (s) | 2 workers (s) | 2 workers, per case (s) | speed-up, whole runs |",
        "|---|---|---|---|---|",
    ]
    for count, runs in growth.items():
        one, two = statistics.median(runs["1 worker"]), statistics.median(runs["2 workers"])
        lines.append(f"| {count} | {one:.1f} | {two:.1f} | {two / count:.2f} | {one / two:.2f}x |")
    lines += [
        "",
        "Raw times (s): "
        + "; ".join(f"{k}: " + ", ".join(f"{x:.1f}" for x in v) for k, v in {**pool, **{f"dask {k}": v for k, v in dask.items()}}.items()),
        END,
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        benchlib.write_section(BEGIN, END, text)


if __name__ == "__main__":
    main()

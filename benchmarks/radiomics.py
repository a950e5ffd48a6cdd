#!/usr/bin/env python
"""Radiomics benchmark: GLCM counting against scikit-image, and the whole stage on a large region.

1. GLCM counting on a 2D image (``--size`` squared, 32 grey levels, distance 1, the four 2D
   directions, symmetric): ``voxpipe_plugins.radiomics.glcm.glcm_matrices`` (one slice pair
   and one ``bincount`` per direction, pure NumPy) against scikit-image's Cython
   ``graycomatrix`` on the same levels. The matrices are checked equal before timing.
2. ``radiomics.extract`` on a 3D ellipsoid region (``--volume`` voxels, 0.8 x 0.8 x 1.5 mm):
   the whole stage, and each feature group alone (first-order, shape, GLCM with 13
   directions), to show where the time goes. There is no 3D GLCM in scikit-image to compare with.

Both are measured in this one process, alternating the implementations each round
(``--repeat`` rounds, median and minimum wall time). The machine may be shared: the 1-minute
load average is printed before and after and recorded with the table.

    python benchmarks/radiomics.py               # print the tables
    python benchmarks/radiomics.py --write       # also update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

BEGIN, END = "<!-- radiomics:begin -->", "<!-- radiomics:end -->"


def timed(function, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def alternate(functions: dict, repeat: int) -> dict[str, list[float]]:
    """Each round calls every function once, the order rotating; returns wall times per name."""
    names = list(functions)
    out = {n: [] for n in names}
    for r in range(repeat):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            out[n] += timed(functions[n], 1)
    return out


def glcm_2d(size: int, repeat: int) -> list[tuple]:
    from skimage.feature import graycomatrix

    from voxpipe_plugins.radiomics import glcm

    rng = np.random.default_rng(0)
    image = rng.integers(0, 32, size=(size, size)).astype(np.uint8)
    levels, mask = image.astype(np.int32) + 1, np.ones(image.shape, bool)
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    ours = glcm.glcm_matrices(levels, mask, 32)
    ref = graycomatrix(image, [1], angles, levels=32, symmetric=True)
    order = [glcm.directions(2).index(o) for o in [(0, 1), (1, 1), (1, 0), (1, -1)]]
    for a, d in enumerate(order):
        assert np.array_equal(ours[d], ref[:, :, 0, a]), "matrices differ"
    times = alternate(
        {
            "voxpipe": lambda: glcm.glcm_matrices(levels, mask, 32),
            "skimage": lambda: graycomatrix(image, [1], angles, levels=32, symmetric=True),
        },
        repeat,
    )
    base = statistics.median(times["skimage"])
    return [(name, statistics.median(t), min(t), statistics.median(t) / base) for name, t in times.items()]


def stage_3d(shape: tuple[int, int, int], repeat: int) -> tuple[int, list[tuple]]:
    from voxpipe_plugins.radiomics.extract import RadiomicsExtractor

    rng = np.random.default_rng(1)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, np.float32) - 1) / 2
    semi = np.array(shape, np.float32) * np.array([0.32, 0.28, 0.3])
    mask = (((grid - centre[:, None, None, None]) / semi[:, None, None, None]) ** 2).sum(0) <= 1
    image = (100 + rng.normal(0, 30, shape)).astype(np.float32)
    spacing = (0.8, 0.8, 1.5)
    rows = []
    for label, groups in (
        ("whole stage", ["firstorder", "shape", "glcm"]),
        ("first-order only", ["firstorder"]),
        ("shape only", ["shape"]),
        ("GLCM only (13 directions)", ["glcm"]),
    ):
        stage = RadiomicsExtractor(groups=groups)
        t = timed(lambda stage=stage: stage.compute(image, mask, spacing), repeat)
        rows.append((label, statistics.median(t), min(t)))
    return int(mask.sum()), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="2D image side for the GLCM comparison")
    parser.add_argument("--volume", default="192,192,128", help="3D grid for the stage timing")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.volume.split(","))
    load_before = os.getloadavg()[0]
    g = glcm_2d(args.size, args.repeat)
    voxels, s = stage_3d(shape, max(3, args.repeat // 2))
    load_after = os.getloadavg()[0]
    lines = [
        BEGIN,
        f"Measured {_dt.date.today().isoformat()} on {benchlib.machine()}; 1-minute load average "
        f"{load_before:.1f} before, {load_after:.1f} after (the machine was shared; medians of alternating rounds).",
        "",
        f"**GLCM counting, 2D {args.size}×{args.size}, 32 levels, 4 directions, symmetric** ({args.repeat} rounds; identical matrices):",
        "",
        "| implementation | median (s) | min (s) | vs scikit-image |",
        "|---|---:|---:|---:|",
    ]
    titles = {"voxpipe": "`radiomics.glcm.glcm_matrices` (NumPy, bincount)", "skimage": "scikit-image `graycomatrix` (Cython)"}
    lines += [f"| {titles[n]} | {m:.3f} | {lo:.3f} | {ratio:.2f}× |" for n, m, lo, ratio in g]
    lines += [
        "",
        f"**`radiomics.extract` on a 3D ellipsoid region**: grid {'×'.join(map(str, shape))}, {voxels:,} region voxels, "
        "0.8×0.8×1.5 mm, 32 bins:",
        "",
        "| what | median (s) | min (s) | region voxels / s |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {m:.2f} | {lo:.2f} | {voxels / m:,.0f} |" for label, m, lo in s]
    lines.append(END)
    text = "\n".join(lines)
    print(text)
    if args.write:
        benchlib.write_section(BEGIN, END, text)


if __name__ == "__main__":
    main()

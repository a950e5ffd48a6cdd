#!/usr/bin/env python
"""Classical segmentation recipes on a CT-sized volume: time per stage (issue 5).

The synthetic thorax CT of :func:`voxpipe_plugins.segment.phantoms.ct_phantom` (HU: air,
body with a fat layer, two lungs, spine, sternum and ribs, a couch, Gaussian noise of
20 HU), 512 x 512 x 300 voxels (X x Y x Z, 0.7 x 0.7 x 1.0 mm), written once as an
uncompressed NIfTI (float32, 315 MB), goes through each recipe in configs/
(ct-body-mask, ct-lungs, ct-bone) exactly as `voxpipe run` runs it (the same Pipeline
object, the same stages), and the wall time of every stage is recorded, plus the Dice of
the result against the phantom's true region. The writers are included (label NIfTI,
gzip level 1, and the PNG montage). Each recipe runs ``--repeat`` times in one process
after the volume was loaded once (the file cache is warm); the fastest run counts.

    python benchmarks/classical_recipes.py                     # full size, prints the table
    python benchmarks/classical_recipes.py --write             # also update docs/benchmarks.md
    python benchmarks/classical_recipes.py --shape 256,256,150 # quicker look

Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import resource
import sys
import tempfile
import time
from pathlib import Path

import benchlib

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- classical:begin -->", "<!-- classical:end -->"
SPACING = (0.7, 0.7, 1.0)
RECIPES = (("ct-body-mask", "body"), ("ct-lungs", "lungs"), ("ct-bone", "bone"))


machine = benchlib.machine


def run(shape: tuple[int, int, int], repeat: int) -> tuple[list[dict], dict]:
    import nibabel as nib
    import numpy as np
    import torch

    from voxpipe.cases import CaseSource
    from voxpipe.config import load_config
    from voxpipe.pipeline import Pipeline
    from voxpipe.registry import Registry
    from voxpipe_plugins.segment.phantoms import ct_phantom, dice

    registry = Registry.load()
    start = time.perf_counter()
    phantom = ct_phantom(shape=shape, spacing=SPACING, seed=0)
    build_s = time.perf_counter() - start
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "thorax.nii"
        nib.save(nib.Nifti1Image(phantom.image, phantom.affine), str(path))
        image_bytes = phantom.image.nbytes
        truths = phantom.truth
        del phantom
        for recipe, truth in RECIPES:
            validated = load_config(REPO / "configs" / f"{recipe}.yaml", registry, device="cpu")
            pipeline = Pipeline(validated, "cpu")
            best = None
            for attempt in range(repeat):
                out = Path(tmp) / f"{recipe}-{attempt}"
                out.mkdir()
                result = pipeline.run_case(CaseSource(identity=str(path), paths=(path,), kind="nifti"), "case-bench", out)
                if not result.ok:
                    raise SystemExit(f"{recipe}: {result.error}")
                total = sum(t for _, t in result.timings)
                if best is None or total < best[0]:
                    score = dice(result.case["label"].numpy()[0] > 0, truths[truth])
                    best = (total, result.timings, score)
                del result
            total, timings, score = best
            rows.append({"recipe": recipe, "timings": timings, "total": total, "dice": score})
            print(f"{recipe}: {total:.2f} s, Dice {score:.4f}: " + ", ".join(f"{n} {t:.2f}" for n, t in timings), file=sys.stderr)
    info = {
        "shape": shape,
        "build_s": build_s,
        "image_mb": image_bytes / 2**20,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "threads": torch.get_num_threads(),
        "numpy": np.__version__,
    }
    return rows, info


def render(rows: list[dict], info: dict, repeat: int, command: str) -> str:
    x, y, z = info["shape"]
    lines = [
        BEGIN,
        "### Classical segmentation recipes",
        "",
        f"The CT recipes in `configs/` on a synthetic thorax CT of {x}×{y}×{z} voxels "
        f"({SPACING[0]}×{SPACING[1]}×{SPACING[2]} mm, float32, {info['image_mb']:.0f} MB; "
        "`voxpipe_plugins.segment.phantoms.ct_phantom`), each stage timed as `voxpipe run` runs it "
        f"(fastest of {repeat}, warm file cache). Dice is against the phantom's true region. "
        "The uncompressed NIfTI is memory-mapped, so `load.auto` takes no time and the first stage "
        "that reads the voxels pays for reading them.",
        "",
        f"Measured {_dt.date.today().isoformat()} with `{command}` on {machine()}.",
        "",
    ]
    lines += ["| recipe | stage | seconds |", "|---|---|---:|"]
    for row in rows:
        for name, seconds in row["timings"]:
            lines.append(f"| {row['recipe']} | {name} | {seconds:.2f} |")
        lines.append(f"| **{row['recipe']}** | **total** (Dice {row['dice']:.3f}) | **{row['total']:.2f}** |")
    lines += [
        "",
        f"Peak resident memory of the process: {info['peak_rss_gb']:.1f} GB (all three recipes, the phantom's truth masks included).",
        END,
    ]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    benchlib.write_section(BEGIN, END, text, DOC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="512,512,300", help="X,Y,Z voxels (default 512,512,300)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per recipe; the fastest counts")
    parser.add_argument("--write", action="store_true", help="update the classical section of docs/benchmarks.md")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    rows, info = run(shape, args.repeat)
    command = (
        "python benchmarks/classical_recipes.py"
        + ("" if args.shape == "512,512,300" else f" --shape {args.shape}")
        + (f" --repeat {args.repeat}" if args.repeat != 2 else "")
        + " --write"
    )
    text = render(rows, info, args.repeat, command)
    print(text)
    if args.write:
        write_doc(text)


if __name__ == "__main__":
    main()

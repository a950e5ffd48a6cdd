"""N4 bias correction and brain extraction (issue 20) against peers, in one run.

1. ``enhance.bias_n4`` (SimpleITK's N4 through the stage) against ANTs' N4
   (antspyx ``n4_bias_field_correction``, its defaults) on phantoms with a known
   multiplicative field: the coefficient of variation inside each tissue after correction,
   the correlation of the recovered log field with the true one, and the time.
2. ``segment.brain_mask`` against dipy's ``median_otsu`` (the brain extraction most used in
   diffusion MRI), antspyx's ``get_mask`` (threshold + morphology) and Otsu + the largest
   part, on whole-head phantoms with a known brain (tests/head_phantom.py): Dice, volume, time;
   and on nibabel's anatomical.nii (a crop inside a brain: the share of the field of view kept).

Every method runs in this process on the same arrays, interleaved, after one unrecorded
warm-up call each; times are medians of ``--repeats`` calls (imports excluded). The peers
come from the ``bench-peers`` extra (``make bench-peers``).

    .venv/bin/python benchmarks/brain_extraction.py [--repeats 3] [--write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from benchlib import REPO, machine, write_section

sys.path.insert(0, str(REPO))

BEGIN, END = "<!-- brain_extraction:begin -->", "<!-- brain_extraction:end -->"


def timed(fn, repeats: int):
    """Median seconds of ``repeats`` calls after an unrecorded warm-up; a call over 10 s is its own single measurement."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    if first > 10.0:  # dipy's median_otsu takes minutes on a head: a warm-up changes nothing there
        return result, first
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def cv(image, tissue, values):
    return [float(image[tissue == t].std() / image[tissue == t].mean()) for t in values]


# --------------------------------------------------------------------------- N4


def n4_cases():
    from tests.head_phantom import CSF, GM, WM, head_phantom
    from tests.test_bias_n4 import affine_for, field_phantom

    for name, spacing, shape in [
        ("field phantom 64x64x48, 2 mm", (2.0, 2.0, 2.0), (64, 64, 48)),
        ("field phantom 80x80x24, 1.5x1.5x4 mm", (1.5, 1.5, 4.0), (80, 80, 24)),
    ]:
        image, tissue, field = field_phantom(shape, spacing)
        yield name, image, affine_for(spacing), tissue, (1, 2, 3), field
    head = head_phantom()
    tissue = np.where(head.brain > 0, head.tissue, 0)
    yield "head phantom 88x108x100, 2 mm (brain tissues)", head.image, head.affine, tissue, (CSF, GM, WM), head.field


def voxpipe_n4(image, affine):
    from voxpipe.metatensors import make_metatensor
    from voxpipe_plugins.enhance.bias_n4 import BiasN4

    out = BiasN4(bias_key="bias")({"image": make_metatensor(image[None], affine), "history": []})
    return out["image"].numpy()[0], out["bias"].numpy()[0]


def ants_n4(image, affine):
    import ants

    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    img = ants.from_numpy(image.astype(np.float32), spacing=spacing)
    field = ants.n4_bias_field_correction(img, return_bias_field=True)
    field_np = field.numpy()
    return image / field_np, np.log(np.maximum(field_np, 1e-6))


def bench_n4(repeats: int) -> list[str]:
    rows = ["| case | method | CV per tissue after (before) | field r | s | time vs ANTs |", "|---|---|---|---:|---:|---:|"]
    for name, image, affine, tissue, values, field in n4_cases():
        before = cv(image, tissue, values)
        inside = tissue > 0
        results = {}
        for method, fn in (("VoxPipe enhance.bias_n4", voxpipe_n4), ("ANTs N4 (antspyx 0.6.3)", ants_n4)):
            (corrected, log_field), seconds = timed(lambda fn=fn, image=image, affine=affine: fn(image, affine), repeats)
            r = float(np.corrcoef(log_field[inside], np.log(field[inside]))[0, 1])
            results[method] = (cv(corrected, tissue, values), r, seconds)
        ants_time = results["ANTs N4 (antspyx 0.6.3)"][2]
        for method, (after, r, seconds) in results.items():
            text = " / ".join(f"{a:.3f} ({b:.3f})" for a, b in zip(after, before))
            rows.append(f"| {name} | {method} | {text} | {r:.3f} | {seconds:.2f} | {seconds / ants_time:.2f}x |")
        print(rows[-2], rows[-1], sep="\n", flush=True)
    return rows


# --------------------------------------------------------------------------- brain extraction


def largest(mask):
    from scipy import ndimage as ndi

    labels, count = ndi.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def voxpipe_mask(image, spacing):
    from voxpipe_plugins.segment.brain_mask import BrainMask

    return BrainMask().mask(image, spacing)[0]


def dipy_mask(image, spacing):
    from dipy.segment.mask import median_otsu

    return median_otsu(image)[1]


def ants_mask(image, spacing):
    import ants

    return ants.get_mask(ants.from_numpy(image.astype(np.float32), spacing=tuple(spacing))).numpy() > 0


def otsu_mask(image, spacing):
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    return ndi.binary_fill_holes(largest(image > threshold_otsu(image)))


MASKERS = [
    ("VoxPipe segment.brain_mask", voxpipe_mask),
    ("dipy median_otsu (1.12, defaults)", dipy_mask),
    ("antspyx get_mask (0.6.3, defaults)", ants_mask),
    ("Otsu + largest part + holes", otsu_mask),
]


def bench_masks(repeats: int) -> list[str]:
    import nibabel as nib

    from tests.head_phantom import dice, head_phantom

    rows = [
        "| case | method | Dice | volume mL (true) | s | time vs dipy |",
        "|---|---|---:|---:|---:|---:|",
    ]
    cases = [
        ("head phantom 2 mm, seed 0", head_phantom(seed=0)),
        ("head phantom 1.5x1.5x3 mm", head_phantom(spacing=(1.5, 1.5, 3.0), seed=2)),
        ("head phantom 2 mm, bias ±30 %, noise 0.06", head_phantom(bias=0.3, noise=0.06, seed=3)),
    ]
    for name, head in cases:
        voxel_ml = float(np.prod(head.spacing)) / 1000.0
        results = []
        for method, fn in MASKERS:
            mask, seconds = timed(lambda fn=fn, head=head: fn(head.image, head.spacing), repeats)
            results.append((method, dice(mask, head.brain), float(mask.sum()) * voxel_ml, seconds))
        dipy_time = results[1][3]
        for method, score, volume, seconds in results:
            rows.append(
                f"| {name} | {method} | {score:.3f} | {volume:.0f} ({head.brain_volume_ml:.0f}) | {seconds:.2f} | {seconds / dipy_time:.2f}x |"
            )
            print(rows[-1], flush=True)
    t1 = nib.load(str(Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"))
    data = np.asanyarray(t1.dataobj).astype(np.float32)
    spacing = tuple(float(s) for s in t1.header.get_zooms()[:3])
    kept = ["| nibabel anatomical.nii (crop inside a brain: the right answer is ~100 %) | share of the field of view kept |", "|---|---:|"]
    for method, fn in MASKERS:
        mask = fn(data, spacing)
        kept.append(f"| {method} | {100 * float(np.mean(mask)):.1f} % |")
    return rows + [""] + kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="replace this script's section of docs/benchmarks.md")
    args = parser.parse_args()
    load_before = os.getloadavg()
    n4_rows = bench_n4(args.repeats)
    mask_rows = bench_masks(args.repeats)
    load_after = os.getloadavg()
    header = (
        f"`python benchmarks/brain_extraction.py --repeats {args.repeats}`, {date.today().isoformat()}; {machine()}; "
        f"in-process medians of {args.repeats} calls after a warm-up (one call where it took over 10 s: dipy), imports excluded. This 2-core machine was shared with other "
        f"engineers' work and busy when this ran: load average before {load_before[0]:.1f}, after {load_after[0]:.1f}, so times "
        "are ±30 % or worse; the ratios were measured side by side."
    )
    text = "\n".join(
        [
            BEGIN,
            header,
            "",
            "N4 bias-field correction (CV: coefficient of variation inside each tissue; field r: correlation of the recovered log field with the true one):",
            "",
            *n4_rows,
            "",
            "Brain extraction (Dice against the phantom's known brain):",
            "",
            *mask_rows,
            END,
        ]
    )
    print(text)
    if args.write:
        write_section(BEGIN, END, text)


if __name__ == "__main__":
    main()

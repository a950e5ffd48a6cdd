"""Brain tissue classes on nilearn's MNI152 2009a T1 (1 mm, skull-stripped): VoxPipe vs multi-Otsu vs ANTs Atropos.

All three run in one process on the same inputs (issue 20):

- VoxPipe: ``voxpipe run configs/brain-tissue.yaml`` (a child process, timed from start to
  end, writers and montage included); on the degraded variants also with
  ``enhance.bias_n4`` (mask: the non-zero voxels) inserted before ``segment.tissue``.
- multi-Otsu: scikit-image's ``threshold_multiotsu``, 3 classes on the non-zero voxels.
- Atropos (antspyx): k-means init, 3 classes, MRF [0.2, 1x1x1], 5 iterations, mask = the
  non-zero voxels; with ``ants.n4_bias_field_correction`` (same mask) where VoxPipe has N4.

Scored against nilearn's own GM/WM probability maps: a tissue is the voxels where its
probability is > 0.5 and >= the other's; each reference tissue is matched to the label value
that overlaps it most; Dice and volumes (mL). Variants of the same T1: a smooth multiplicative
bias field of +/- 20 %, Rician noise (sigma 4 % of the white-matter intensity, brain voxels
only: the image stays skull-stripped), and trilinear resampling to 1.2 x 1.2 x 2.0 mm
(the reference maps resampled the same way). The benchmark peers are the ``bench-peers``
extra (``make bench-peers``); nothing is downloaded (the templates ship with nilearn).

    .venv/bin/python benchmarks/brain_tissue.py [--variants clean,bias,noise,aniso] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, child_env, machine, write_section  # noqa: E402

BEGIN, END = "<!-- brain_tissue:begin -->", "<!-- brain_tissue:end -->"
CONFIG = REPO / "configs" / "brain-tissue.yaml"
VOXPIPE = Path(sys.executable).parent / "voxpipe"
ANISO = (1.2, 1.2, 2.0)


def load_mni():
    """T1 (float32), affine, GM and WM probability maps (0..1) of nilearn's MNI152 2009a at 1 mm."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    arrays = [np.asarray(img.dataobj, dtype=np.float32) for img in (t1, gm, wm)]
    return arrays[0], np.asarray(t1.affine, dtype=np.float64), arrays[1], arrays[2]


def bias_field(shape, amplitude=0.2):
    """A smooth multiplicative field, 1 +/- amplitude over the volume (low-order, like a coil's)."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    field = np.sin(1.2 * x + 0.4) * np.cos(0.9 * y - 0.2) + 0.6 * z * x + 0.4 * y
    field = field - field.mean()
    return 1.0 + amplitude * field / np.abs(field).max()


def variants(names):
    t1, affine, gm, wm = load_mni()
    brain = t1 != 0
    out = {}
    if "clean" in names:
        out["clean"] = (t1, affine, gm, wm, "the template as it ships")
    if "bias" in names:
        out["bias"] = ((t1 * bias_field(t1.shape)).astype(np.float32), affine, gm, wm, "x smooth bias field, +/- 20 %")
    if "noise" in names:
        rng = np.random.default_rng(0)
        sigma = 0.04 * float(np.percentile(t1[brain], 90))
        noisy = np.sqrt((t1 + rng.normal(0, sigma, t1.shape)) ** 2 + rng.normal(0, sigma, t1.shape) ** 2)
        out["noise"] = (np.where(brain, noisy, 0).astype(np.float32), affine, gm, wm, "Rician noise, sigma 4 % of WM")
    if "aniso" in names:
        from scipy import ndimage

        zoom = [1.0 / s for s in ANISO]
        t1_a = ndimage.zoom(t1, zoom, order=1)
        t1_a[ndimage.zoom(brain.astype(np.float32), zoom, order=1) < 0.5] = 0
        scaled = affine.copy()
        scaled[:3, :3] = affine[:3, :3] * np.array(ANISO)
        out["aniso"] = (
            t1_a.astype(np.float32),
            scaled,
            ndimage.zoom(gm, zoom, order=1),
            ndimage.zoom(wm, zoom, order=1),
            "resampled to 1.2 x 1.2 x 2.0 mm (trilinear; reference too)",
        )
    return out


def score(label, gm, wm, voxel_ml):
    """GM/WM Dice against the reference (each matched to the best-overlapping label value) and volumes."""
    result = {}
    for name, ref in (("gm", (gm > 0.5) & (gm >= wm)), ("wm", (wm > 0.5) & (wm >= gm))):
        values = [v for v in np.unique(label) if v != 0]
        best = max(values, key=lambda v: int((ref & (label == v)).sum()))
        mine = label == best
        result[f"{name}_dice"] = 2.0 * int((ref & mine).sum()) / (int(ref.sum()) + int(mine.sum()))
        result[f"{name}_ml"] = float(mine.sum()) * voxel_ml
        result[f"{name}_ref_ml"] = float(ref.sum()) * voxel_ml
    return result


def run_voxpipe(t1, affine, n4: bool, folder: Path):
    import nibabel as nib
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    if n4:
        config["stages"].insert(1, {"use": "enhance.bias_n4", "with": {"mask_threshold": 0}})
    config_path = folder / "brain-tissue.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    inputs, output = folder / "in", folder / "out"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(t1, affine), str(inputs / "t1.nii.gz"))
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [str(VOXPIPE), "run", str(config_path), "-i", str(inputs), "-o", str(output)], env=child_env(), capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    if done.returncode:
        raise SystemExit(f"voxpipe run failed: {done.stderr.strip()[-2000:]}")
    (case,) = [p for p in output.iterdir() if p.name.startswith("case-")]
    return np.asarray(nib.load(str(case / "label.nii.gz")).dataobj), seconds, cpu_seconds


def run_otsu(t1):
    from skimage.filters import threshold_multiotsu

    start, cpu = time.perf_counter(), time.process_time()
    mask = t1 != 0
    thresholds = threshold_multiotsu(t1[mask], classes=3)
    label = np.where(mask, np.digitize(t1, thresholds) + 1, 0)
    return label, time.perf_counter() - start, time.process_time() - cpu


def run_atropos(t1, affine, n4: bool):
    import ants

    start, cpu = time.perf_counter(), time.process_time()
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    image = ants.from_numpy(t1.astype(np.float32), spacing=spacing)
    mask = ants.from_numpy((t1 != 0).astype(np.float32), spacing=spacing)
    if n4:
        image = ants.n4_bias_field_correction(image, mask=mask)
    result = ants.atropos(a=image, x=mask, i="kmeans[3]", m="[0.2,1x1x1]", c="[5,0]")
    label = result["segmentation"].numpy().astype(np.int32)
    return label, time.perf_counter() - start, time.process_time() - cpu


def render(rows) -> str:
    table = [
        "| variant | method | GM Dice | WM Dice | GM mL (ref) | WM mL (ref) | wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, what, method, s, seconds in rows:
        table.append(
            f"| {name}: {what} | {method} | {s['gm_dice']:.3f} | {s['wm_dice']:.3f} | "
            f"{s['gm_ml']:.0f} ({s['gm_ref_ml']:.0f}) | {s['wm_ml']:.0f} ({s['wm_ref_ml']:.0f}) | {seconds[0]:.1f} | {seconds[1]:.1f} |"
        )
    return "\n".join(table)


def measure(names, atropos: bool):
    rows = []
    for name, (t1, affine, gm, wm, what) in variants(names).items():
        voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
        methods = [("VoxPipe `brain-tissue.yaml`", False)]
        if name != "clean":
            methods.append(("VoxPipe N4 + `brain-tissue.yaml`", True))
        for method, n4 in methods:
            with tempfile.TemporaryDirectory() as tmp:
                label, *seconds = run_voxpipe(t1, affine, n4, Path(tmp))
            rows.append((name, what, method, score(label, gm, wm, voxel_ml), seconds))
            print(rows[-1], flush=True)
        label, *seconds = run_otsu(t1)
        rows.append((name, what, "multi-Otsu (3 classes, non-zero voxels)", score(label, gm, wm, voxel_ml), seconds))
        print(rows[-1], flush=True)
        if atropos:
            for n4 in (False, True) if name != "clean" else (False,):
                label, *seconds = run_atropos(t1, affine, n4)
                method = "ANTs Atropos" + (" (N4 first)" if n4 else "")
                rows.append((name, what, method, score(label, gm, wm, voxel_ml), seconds))
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="clean,bias,noise,aniso")
    parser.add_argument("--no-atropos", action="store_true", help="skip Atropos (quick VoxPipe checks)")
    parser.add_argument("--save", type=Path, help="also save the rows as JSON")
    parser.add_argument("--rows", type=Path, help="render rows saved by --save instead of measuring")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    load_before = f"{os.getloadavg()[0]:.1f}"
    rows = json.loads(args.rows.read_text()) if args.rows else measure(args.variants.split(","), not args.no_atropos)
    load_after = f"{os.getloadavg()[0]:.1f}"
    if args.save:
        args.save.write_text(json.dumps(rows, indent=1))
    text = render(rows)
    print(text)
    if args.write:
        import ants
        import nilearn
        import skimage

        section = "\n".join(
            [
                BEGIN,
                "## Brain tissue classes: MNI152 vs multi-Otsu and ANTs Atropos (issue 20)",
                "",
                f"`python benchmarks/brain_tissue.py --write` on {machine()}; this 2-core machine was shared with "
                f"other jobs (load average {load_before} before the run, {load_after} after), so wall times are rough. "
                f"nilearn {nilearn.__version__}, antspyx {ants.__version__}, scikit-image {skimage.__version__}. "
                "VoxPipe's time is the whole `voxpipe run` child process (start-up, reading, writing the label map, "
                "three probability maps and the montage); the peers' are their calls alone (N4 included where named). "
                "CPU s (user + system, all threads) is less disturbed by the other jobs than wall s.",
                "",
                text,
                "",
                "Scoring, variants and settings: the script's docstring and [brain-tissue.md](brain-tissue.md#benchmark), "
                "which also says which goals are met.",
                END,
            ]
        )
        write_section(BEGIN, END, section)


if __name__ == "__main__":
    main()

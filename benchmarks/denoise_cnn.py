#!/usr/bin/env python
"""denoise.cnn's shipped models against denoise.nlm, on images they were never trained on, in one run.

- MR: nibabel's real T1 (``anatomical.nii``, 33 x 41 x 25 voxels of 2 mm) with Rician noise of
  σ = 5 % and 10 % of its maximum (fixed seeds); PSNR (peak = the clean maximum) and SSIM
  inside the head (above 10 % of the 99.5th percentile, holes filled). ``denoise.nlm`` with
  ``noise: rician`` and its defaults; ``denoise.cnn`` with ``model: mr-rician``; both estimate σ.
- 2D: the middle axial slice of the same T1 with Gaussian noise σ = 8 % of its maximum.
- CT: pydicom's real CT (``CT_small.dcm``, 128 x 128, HU) and a generated body phantom with a
  held-apart seed, each at a simulated 10 % dose (Poisson noise on the projections, as in
  training); PSNR with peak 2000 HU (the model's window) and SSIM inside the body (> -500 HU).
  ``CT_small.dcm`` already holds its own scanner noise, so its "clean" reference is noisy:
  the PSNR there says how close to the full-dose image the result is, not to the truth.
- GAN vs MSE (``--gan MSE_RUN GAN_RUN``): two fine-tunes of the shipped CT model, PSNR/SSIM
  and two texture measures on the held-apart phantom, and a side-by-side picture.

    python benchmarks/denoise_cnn.py                 # print the tables
    python benchmarks/denoise_cnn.py --write         # also update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path

import benchlib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- denoise_cnn:begin -->", "<!-- denoise_cnn:end -->"
CT_DOSE = 0.1


def metatensor(array: np.ndarray, spacing: tuple[float, ...]):
    from voxpipe_plugins.common.tensors import make_metatensor

    affine = np.diag([*spacing, *([1.0] * (4 - len(spacing)))])
    return make_metatensor(array[None].astype(np.float32), affine)


def run_stage(stage, array: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = stage({"image": metatensor(array, spacing)})["image"][0].numpy()
    return out, time.perf_counter() - start


def psnr(x: np.ndarray, ref: np.ndarray, mask: np.ndarray, peak: float) -> float:
    return float(10 * np.log10(peak**2 / np.mean((x[mask].astype(np.float64) - ref[mask]) ** 2)))


def ssim_in(x: np.ndarray, ref: np.ndarray, mask: np.ndarray, peak: float) -> float:
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(ref.astype(np.float64), x.astype(np.float64), data_range=peak, full=True, win_size=7)
    return float(full[mask].mean())


def stages():
    from voxpipe.stage import StageContext
    from voxpipe_plugins.denoise.cnn import CNNDenoise
    from voxpipe_plugins.denoise.nlm import NLMDenoise

    ctx = StageContext(device="cpu", config_dir=REPO, stage_id="denoise.cnn")
    return {
        "nlm-rician": NLMDenoise(noise="rician"),
        "nlm": NLMDenoise(),
        "cnn-mr": CNNDenoise(model="mr-rician", context=ctx),
        "cnn-mr-gauss": CNNDenoise(model="mr-rician", noise="gaussian", context=ctx),
        "cnn-ct": CNNDenoise(model="ct-lowdose", context=ctx),
    }


def mr_rows(s) -> list[str]:
    import nibabel as nib
    from scipy.ndimage import binary_fill_holes

    path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    clean = np.asarray(nib.load(str(path)).get_fdata(), dtype=np.float32)
    mask = binary_fill_holes(clean > 0.1 * np.percentile(clean, 99.5))
    peak = float(clean.max())
    rows = []
    for fraction, seed in ((0.05, 0), (0.10, 1)):
        rng = np.random.default_rng(seed)
        sigma = fraction * peak
        noisy = np.sqrt((clean + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2).astype(np.float32)
        row = [f"T1 3D, Rician {fraction:.0%}", f"{psnr(noisy, clean, mask, peak):.1f} / {ssim_in(noisy, clean, mask, peak):.3f}"]
        for name in ("nlm-rician", "cnn-mr"):
            out, seconds = run_stage(s[name], noisy, (2.0, 2.0, 2.0))
            row.append(f"{psnr(out, clean, mask, peak):.1f} / {ssim_in(out, clean, mask, peak):.3f} ({seconds:.2f} s)")
        rows.append(row)
    slice_clean = clean[:, :, clean.shape[2] // 2]
    slice_mask = mask[:, :, clean.shape[2] // 2]
    noisy = (slice_clean + np.random.default_rng(2).normal(0, 0.08 * peak, slice_clean.shape)).astype(np.float32)
    row = [
        "T1 2D slice, Gaussian 8 %",
        f"{psnr(noisy, slice_clean, slice_mask, peak):.1f} / {ssim_in(noisy, slice_clean, slice_mask, peak):.3f}",
    ]
    for name in ("nlm", "cnn-mr-gauss"):
        out, seconds = run_stage(s[name], noisy, (2.0, 2.0))
        row.append(f"{psnr(out, slice_clean, slice_mask, peak):.1f} / {ssim_in(out, slice_clean, slice_mask, peak):.3f} ({seconds:.2f} s)")
    rows.append(row)
    return rows


def ct_images() -> dict[str, tuple[np.ndarray, tuple[float, float]]]:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from voxpipe_plugins.denoise.cnn_data import HELD_APART_SEED, ct_slice

    ds = dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    spacing = tuple(float(v) for v in ds.PixelSpacing)
    return {"CT_small.dcm (real)": (hu, spacing), f"body phantom (seed {HELD_APART_SEED})": (ct_slice(HELD_APART_SEED), (0.8, 0.8))}


def ct_rows(s) -> list[str]:
    from voxpipe_plugins.denoise.noise_models import lowdose_ct

    rows = []
    for name, (clean, spacing) in ct_images().items():
        noisy = lowdose_ct(clean, CT_DOSE, np.random.default_rng(3), pixel_mm=spacing[0])
        mask = clean > -500
        row = [f"{name}, {CT_DOSE:.0%} dose", f"{psnr(noisy, clean, mask, 2000):.1f} / {ssim_in(noisy, clean, mask, 2000):.3f}"]
        for method in ("nlm", "cnn-ct"):
            out, seconds = run_stage(s[method], noisy, spacing)
            row.append(f"{psnr(out, clean, mask, 2000):.1f} / {ssim_in(out, clean, mask, 2000):.3f} ({seconds:.2f} s)")
        rows.append(row)
    return rows


def radial_spectrum(image: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum (mean removed), one value per integer frequency radius."""
    f = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2
    cy, cx = (np.array(f.shape) - 1) / 2
    y, x = np.indices(f.shape)
    r = np.hypot(y - cy, x - cx).astype(int)
    return np.bincount(r.ravel(), f.ravel()) / np.maximum(np.bincount(r.ravel()), 1)


def texture(out: np.ndarray, clean: np.ndarray, noisy: np.ndarray) -> tuple[float, float]:
    """(log-spectral distance to the clean image over the upper half of frequencies, dB;
    high-frequency power of the output relative to the clean image's)."""
    so, sc = radial_spectrum(out), radial_spectrum(clean)
    n = min(out.shape) // 2
    band = slice(n // 2, n)
    lsd = float(np.sqrt(np.mean((10 * np.log10(so[band] / sc[band])) ** 2)))
    return lsd, float(so[band].sum() / sc[band].sum())


def gan_rows(mse_run: Path, gan_run: Path, picture: Path | None) -> list[list[str]]:
    from voxpipe.stage import StageContext
    from voxpipe_plugins.denoise.cnn import CNNDenoise
    from voxpipe_plugins.denoise.cnn_data import HELD_APART_SEED, ct_slice
    from voxpipe_plugins.denoise.noise_models import lowdose_ct

    ctx = StageContext(device="cpu", config_dir=REPO, stage_id="denoise.cnn")
    clean = ct_slice(HELD_APART_SEED + 1)
    noisy = lowdose_ct(clean, CT_DOSE, np.random.default_rng(4))
    mask = clean > -500
    outputs = {
        "noisy (10 % dose)": noisy,
        "shipped ct-lowdose (MSE)": run_stage(CNNDenoise(model="ct-lowdose", context=ctx), noisy, (0.8, 0.8))[0],
    }
    for label, run in (("MSE fine-tune", mse_run), ("WGAN-GP + VGG fine-tune", gan_run)):
        outputs[label] = run_stage(CNNDenoise(weights=str(run.resolve() / "last.safetensors"), context=ctx), noisy, (0.8, 0.8))[0]
    rows = []
    for label, out in outputs.items():
        lsd, hf = texture(out, clean, noisy)
        rows.append([label, f"{psnr(out, clean, mask, 2000):.2f}", f"{ssim_in(out, clean, mask, 2000):.3f}", f"{lsd:.2f}", f"{hf:.2f}"])
    if picture is not None:
        strip([o[40:200, 40:216] for o in [clean, *outputs.values()]], -160, 240, picture, zoom=2)
    return rows


def strip(images: list[np.ndarray], low: float, high: float, path: Path, zoom: int = 2) -> None:
    """Images side by side (grey window low..high), enlarged ``zoom`` times, as a PNG."""
    from PIL import Image

    tiles = [np.pad(np.clip((im - low) / (high - low), 0, 1), 2, constant_values=1) for im in images]
    row = np.concatenate(tiles, axis=1)
    Image.fromarray((row * 255).astype(np.uint8)).resize((row.shape[1] * zoom, row.shape[0] * zoom), Image.NEAREST).save(path)


def pictures(s, folder: Path) -> None:
    """denoise-cnn-mr.png (clean, Rician 10 %, nlm, cnn: middle axial slice) and denoise-cnn-ct.png (CT_small at 10 % dose)."""
    import nibabel as nib

    from voxpipe_plugins.denoise.noise_models import lowdose_ct

    clean = np.asarray(nib.load(str(Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii")).get_fdata(), dtype=np.float32)
    rng = np.random.default_rng(1)
    sigma = 0.1 * float(clean.max())
    noisy = np.sqrt((clean + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2).astype(np.float32)
    k = clean.shape[2] // 2
    outs = [run_stage(s[m], noisy, (2.0, 2.0, 2.0))[0] for m in ("nlm-rician", "cnn-mr")]
    strip([np.rot90(v[:, :, k]) for v in (clean, noisy, *outs)], 0, float(clean.max()), folder / "denoise-cnn-mr.png", zoom=4)
    hu, spacing = ct_images()["CT_small.dcm (real)"]
    low = lowdose_ct(hu, CT_DOSE, np.random.default_rng(3), pixel_mm=spacing[0])
    outs = [run_stage(s[m], low, spacing)[0] for m in ("nlm", "cnn-ct")]
    strip([hu, low, *outs], -160, 240, folder / "denoise-cnn-ct.png", zoom=2)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--gan", nargs=2, type=Path, metavar=("MSE_RUN", "GAN_RUN"), help="compare two fine-tune runs")
    parser.add_argument("--picture", type=Path, help="with --gan: write the side-by-side PNG here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pictures", type=Path, help="write denoise-cnn-mr.png and denoise-cnn-ct.png into this folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.gan:
        rows = gan_rows(*args.gan, args.picture)
        print(table(["", "PSNR (dB)", "SSIM", "log-spectral distance (dB)", "HF power / clean"], rows))
        return 0
    s = stages()
    if args.pictures:
        pictures(s, args.pictures)
    header = ["image, noise", "noisy PSNR / SSIM", "denoise.nlm", "denoise.cnn (shipped)"]
    mr, ct = mr_rows(s), ct_rows(s)
    text = "\n".join(
        [
            BEGIN,
            "## denoise.cnn: shipped models vs denoise.nlm on held-apart images",
            "",
            f"`python benchmarks/denoise_cnn.py --write`, {_dt.date.today().isoformat()}, {args.threads} torch threads; "
            f"{benchlib.machine()}. The 2-core machine was shared with other busy jobs during the run, so times are rough.",
            "",
            "PSNR (dB) / SSIM inside the head (MR) or body (CT), time in brackets. MR: nibabel's real T1 (never trained on); "
            "nlm with `noise: rician` (3D rows). CT: simulated 10 % dose on pydicom's real CT_small.dcm (its reference is the "
            "full-dose image, itself noisy) and on a held-apart phantom. Details: docs/denoising-cnn.md.",
            "",
            table(header, mr + ct),
            END,
        ]
    )
    print(text)
    if args.write:
        benchlib.write_section(BEGIN, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`voxpipe train` really learns: a small UNet on synthetic ellipsoid "organs", then `voxpipe run` with its weights.

One training run (about two CPU minutes) is shared by the tests in this module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from voxpipe_plugins.deep.synthetic import write_dataset

CONFIG = """\
version: 1
name: unet-synthetic
device: cpu
stages:
  - use: load.nifti
  - use: intensity.scale
    with: {mode: range, lower: 0, upper: 1, clip: false}
  - use: segment.deep
    id: unet
    with:
      network: UNet
      args: {spatial_dims: 3, in_channels: 1, out_channels: 4, channels: [8, 16, 32], strides: [2, 2], num_res_units: 1, norm: batch}
      roi_size: [32, 32, 32]
      weights: run/best.safetensors
      label_names: {0: background, 1: liver, 2: kidney, 3: spleen}
  - use: write.nifti
    with: {keys: [label]}
training:
  task: segmentation
  data: data
  val_fraction: 0.25
  epochs: 30
  batch_size: 2
  samples_per_volume: 4
  lr: 0.01
  val_every: 5
  threads: 2
"""


def dice(pred: np.ndarray, ref: np.ndarray, labels=(1, 2, 3)) -> float:
    scores = []
    for k in labels:
        p, r = pred == k, ref == k
        if p.sum() + r.sum():
            scores.append(2 * (p & r).sum() / (p.sum() + r.sum()))
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    from voxpipe.cli import main

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("train")
    write_dataset(root / "data", 12, seed=0)
    write_dataset(root / "heldout", 3, seed=123)
    config = root / "unet.yaml"
    config.write_text(CONFIG)
    try:
        main(["train", str(config), "-o", str(root / "run")])
    except SystemExit as exc:
        assert not exc.code, f"voxpipe train exited with {exc.code}"
    return root


def test_training_learns(trained):
    run = trained / "run"
    info = json.loads((run / "best.json").read_text())
    assert info["network"] == "UNet" and info["label_names"]["1"] == "liver"
    print(f"validation Dice {info['best_dice']:.4f} at epoch {info['best_epoch']}")
    assert info["best_dice"] >= 0.9, f"validation Dice {info['best_dice']:.4f} < 0.9"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(1, 31))
    assert log[-1]["loss"] < log[0]["loss"] / 2
    assert (run / "learning_curve.png").stat().st_size > 1000
    assert (run / "last.safetensors").exists() and (run / "last.state.pt").exists()


def test_trained_checkpoint_runs_through_voxpipe_run(trained, cli):
    import nibabel as nib

    source_map = trained / "sources.tsv"
    result = cli("run", trained / "unet.yaml", "-i", trained / "heldout" / "images", "-o", trained / "out", "--source-map", source_map)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((trained / "out" / "manifest.json").read_text())
    assert len(manifest["cases"]) == 3 and all(c["status"] == "ok" for c in manifest["cases"])
    scores = []
    for line in source_map.read_text().splitlines():
        case_id, _, source = line.partition("\t")
        if not case_id.startswith("case-"):
            continue
        folder = trained / "out" / case_id
        pred = np.asarray(nib.load(str(folder / "label.nii.gz")).dataobj)
        ref = np.asarray(nib.load(str(trained / "heldout" / "labels" / Path(source).name)).dataobj)
        assert pred.shape == ref.shape
        assert json.loads((folder / "label.labels.json").read_text())["3"] == "spleen"
        scores.append(dice(pred, ref))
    print(f"held-out Dice per case: {[round(s, 4) for s in scores]}")
    assert len(scores) == 3
    assert min(scores) >= 0.85, f"held-out Dice {scores}"


def test_resume_continues_from_last_epoch(trained, cli):
    run = trained / "run"
    again = cli("train", trained / "unet.yaml", "-o", run)
    assert again.exit_code == 2 and "--resume" in again.stderr
    result = cli("train", trained / "unet.yaml", "-o", run, "--resume", "--set", "training.epochs=31")
    assert result.exit_code == 0, result.stderr
    assert "resuming after epoch 30" in result.stderr
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log][-2:] == [30, 31]
    assert json.loads((run / "last.json").read_text())["epoch"] == 31


def test_unexpected_label_values_name_the_file(tmp_path, cli):
    import nibabel as nib

    write_dataset(tmp_path / "data", 3, size=24, seed=1)
    bad = tmp_path / "data" / "labels" / "case_001.nii.gz"
    img = nib.load(str(bad))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, img.affine), str(bad))
    config = tmp_path / "unet.yaml"
    config.write_text(CONFIG.replace("[32, 32, 32]", "[16, 16, 16]"))
    result = cli("train", config, "-o", tmp_path / "run")
    assert result.exit_code != 0
    line = result.error_lines[0]
    assert "case_001.nii.gz" in line and "7" in line and "outside 0..3" in line


def _dicom_dataset(root: Path, count: int, size: int = 24) -> Path:
    """DICOM CT series as images (one folder each), NIfTI labels on the grid the DICOM loader produces,
    listed in a CSV: the layout a hospital export plus an annotation tool gives."""
    from voxpipe_plugins.deep.synthetic import make_case
    from voxpipe_plugins.deep.train import read_volume
    from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, write_series
    from voxpipe_plugins.io_nifti.writer import write_nifti

    rng = np.random.default_rng(5)
    rows = ["image,label"]
    for i in range(count):
        image, label = make_case(rng, size)
        spec = SeriesSpec(spacing=(1.5, 1.5, 2.0), intercept=0.0, slope=0.001, seed=i)
        write_series(root / f"series_{i}", image, spec)
        write_series(root / "tmp" / f"label_{i}", label.astype(np.float32), SeriesSpec(spacing=(1.5, 1.5, 2.0), intercept=0.0, seed=i))
        write_nifti(read_volume(root / "tmp" / f"label_{i}", "x").round(), root / f"label_{i}.nii.gz")
        rows.append(f"series_{i},label_{i}.nii.gz")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def test_trains_from_dicom_series_and_refuses_misplaced_labels(tmp_path, cli):
    """Training data may be DICOM series (folders) with NIfTI labels; a label whose shape fits
    but whose axes are flipped against the image is refused, naming the file."""
    import nibabel as nib

    _dicom_dataset(tmp_path, 3)
    config = tmp_path / "unet.yaml"
    config.write_text(
        CONFIG.replace("load.nifti", "load.dicom")
        .replace("data: data", "data: pairs.csv")
        .replace("epochs: 30", "epochs: 2")
        .replace("[32, 32, 32]", "[16, 16, 16]")
        .replace("val_every: 5", "val_every: 1")
    )
    result = cli("train", config, "-o", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    info = json.loads((tmp_path / "run" / "last.json").read_text())
    assert info["epoch"] == 2 and (tmp_path / "run" / "best.safetensors").exists()

    flipped = tmp_path / "label_1.nii.gz"
    img = nib.load(str(flipped))
    affine = img.affine.copy()
    affine[:3, 0] *= -1  # same voxels, first axis now runs the other way
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), str(flipped))
    result = cli("train", config, "-o", tmp_path / "run2")
    assert result.exit_code == 2
    assert "label_1.nii.gz" in result.error_lines[0] and "placed differently" in result.error_lines[0]
    assert not (tmp_path / "run2" / "best.safetensors").exists()

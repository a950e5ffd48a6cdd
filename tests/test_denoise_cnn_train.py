"""`voxpipe train` task `denoise`: a tiny model trained for seconds beats NLM on a held-apart image; resume, GAN, CT, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

CONFIG = """version: 1
name: train-denoise-test
stages:
  - use: load.auto
  - use: denoise.cnn
    with: {{weights: run/best.safetensors}}
  - use: write.nifti
training:
  task: denoise
  data: data/train
  val_data: data/val
  seed: 0
  threads: 1
{extra}
"""

TINY = {"features": 4, "depth": 3, "patch_size": 16, "batch_size": 2, "steps_per_epoch": 3, "epochs": 2}


def write_data(root: Path, kind: str = "mr", train: int = 8, size: int = 96) -> None:
    from voxpipe_plugins.denoise.cnn_data import _write_nifti, brain_slice, ct_slice

    make, spacing = (brain_slice, 1.0) if kind == "mr" else (ct_slice, 0.8)
    for folder, seeds, n in (("train", range(train), size), ("val", [900], 64)):
        (root / "data" / folder).mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            _write_nifti(make(seed, n), root / "data" / folder / f"p{seed}.nii.gz", spacing)


def config(root: Path, **settings) -> Path:
    extra = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in settings.items())
    path = root / "train.yaml"
    path.write_text(CONFIG.format(extra=extra))
    return path


def test_a_tiny_model_retrained_for_seconds_beats_nlm_on_a_held_apart_image(tmp_path, cli):
    """Brain-like phantoms, Gaussian noise; evaluated on a phantom whose seed no training or validation image used."""
    import torch

    from voxpipe_plugins.denoise.cnn_data import HELD_APART_SEED, brain_slice
    from voxpipe_plugins.denoise.cnn_weights import load_model
    from voxpipe_plugins.denoise.nlm import NLMDenoise

    write_data(tmp_path)
    settings = dict(noise="gaussian", sigma_range=[0.05, 0.15], val_level=0.1, features=16, depth=5, patch_size=32, batch_size=8)
    result = cli("train", config(tmp_path, **settings, steps_per_epoch=100, epochs=4, lr=0.002), "-o", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "run"
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json", "last.state.pt", "log.jsonl", "learning_curve.png"):
        assert (run / name).is_file(), name
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3, 4] and all(e["val_psnr"] > e["val_psnr_noisy"] + 3 for e in log)
    assert "ETA" in result.stderr and "val PSNR" in result.stderr
    card = json.loads((run / "best.json").read_text())
    assert card["noise"] == "gaussian" and card["architecture"]["features"] == 16 and card["seed"] == 0

    clean = brain_slice(HELD_APART_SEED, 128)
    clean = clean / np.percentile(clean, 99.5)
    noisy = clean + np.random.default_rng(5).normal(0, 0.1, clean.shape).astype(np.float32)
    model, _ = load_model(run / "best.safetensors")
    with torch.inference_mode():
        cnn = model(torch.from_numpy(noisy)[None, None], 0.1)[0, 0].numpy()
    nlm = NLMDenoise(sigma=0.1).denoise_channel(torch.from_numpy(noisy), (1.0, 1.0))[0].numpy()

    def psnr(x):
        return 10 * np.log10(1.0 / np.mean((x - clean) ** 2))

    assert psnr(cnn) > psnr(nlm) > psnr(noisy) + 5


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_resume_repeats_an_uninterrupted_run(tmp_path, cli):
    write_data(tmp_path, train=2, size=40)
    straight = cli("train", config(tmp_path, noise="rician", **TINY), "-o", tmp_path / "a")
    assert straight.exit_code == 0, straight.stderr
    # an interrupted run: max_minutes stops it after its first epoch (the schedule still spans 2 epochs)
    first = cli("train", config(tmp_path, noise="rician", max_minutes=1e-6, **TINY), "-o", tmp_path / "b")
    assert first.exit_code == 0, first.stderr
    again = cli("train", config(tmp_path, noise="rician", **TINY), "-o", tmp_path / "b")
    assert again.exit_code == 2 and "--resume" in again.stderr  # never overwrites a run silently
    resumed = cli("train", config(tmp_path, noise="rician", **TINY), "-o", tmp_path / "b", "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming after epoch 1" in resumed.stderr
    a, b = _tensors(tmp_path / "a" / "last.safetensors"), _tensors(tmp_path / "b" / "last.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    mismatch = cli("train", config(tmp_path, noise="gaussian", **{**TINY, "epochs": 3}), "-o", tmp_path / "b", "--resume")
    assert mismatch.exit_code == 2 and "other settings" in mismatch.stderr


def test_wgan_gp_trains_generator_and_critic_and_resumes(tmp_path, cli):
    write_data(tmp_path, train=2, size=40)
    settings = dict(noise="gaussian", adversarial="wgan-gp", critic_steps=1, **{**TINY, "patch_size": 32})
    result = cli("train", config(tmp_path, **{**settings, "epochs": 1}), "-o", tmp_path / "g")
    assert result.exit_code == 0, result.stderr
    card = json.loads((tmp_path / "g" / "last.json").read_text())
    assert card["adversarial"] == "wgan-gp" and card["training"]["gp_lambda"] == 10.0
    from voxpipe_plugins.deep.weights import load_torch_file

    state = load_torch_file(tmp_path / "g" / "last.state.pt")
    assert "critic" in state and "critic_optimizer" in state
    resumed = cli("train", config(tmp_path, **settings), "-o", tmp_path / "g", "--resume")
    assert resumed.exit_code == 0, resumed.stderr


def test_gradient_penalty_and_perceptual_loss():
    import torch

    from voxpipe_plugins.denoise.cnn_perceptual import Perceptual, gradient_penalty

    class Linear(torch.nn.Module):  # D(x) = sum(w x): gradient w everywhere, penalty (|w| - 1)^2
        def __init__(self, w):
            super().__init__()
            self.w = w

        def forward(self, x):
            return (x * self.w).flatten(1).sum(1)

    w = torch.full((1, 1, 4, 4), 0.5)  # |w| = 2
    real, fake = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    assert abs(float(gradient_penalty(Linear(w), real, fake)) - 1.0) < 1e-5
    loss = Perceptual(2, seed=3)
    x = torch.rand(2, 1, 32, 32)
    assert float(loss(x, x)) == 0.0 and float(loss(x, x + 0.1 * torch.randn_like(x))) > 0
    assert all(not q.requires_grad for q in loss.parameters())
    again = Perceptual(2, seed=3)  # seeded: the same random VGG every run
    assert all(torch.equal(a, b) for a, b in zip(loss.state_dict().values(), again.state_dict().values()))


def test_ct_lowdose_training_runs_on_hu_phantoms(tmp_path, cli):
    write_data(tmp_path, kind="ct", train=1, size=64)
    result = cli("train", config(tmp_path, noise="ct-lowdose", dose_range=[0.1, 0.3], **{**TINY, "epochs": 1}), "-o", tmp_path / "c")
    assert result.exit_code == 0, result.stderr
    card = json.loads((tmp_path / "c" / "best.json").read_text())
    assert card["noise"] == "ct-lowdose" and card["val_psnr_noisy"] < 60


@pytest.mark.parametrize(
    "setup, expected",
    [
        ("empty", "no images found"),
        ("missing", "not found"),
        ("csv", "needs an `image` column"),
        ("one", "at least 2 images"),
        ("text", "cannot be read as an image"),
    ],
)
def test_training_data_errors_are_one_line_exit_2(tmp_path, cli, setup, expected):
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    extra = {}
    if setup == "missing":
        data.rmdir()
    elif setup == "csv":
        (tmp_path / "list.csv").write_text("path\na.png\n")
        extra = {"data": "list.csv"}
    elif setup == "one":
        write_data(tmp_path, train=1, size=32)
        extra = {"val_data": None}
    elif setup == "text":
        (data / "fake.png").write_text("not an image")
        (data / "fake2.png").write_text("not an image")
    path = config(tmp_path, **TINY)
    text = path.read_text()
    for key, value in extra.items():
        text = text.replace(f"  {key}: data/{'val' if key == 'val_data' else 'train'}\n", "" if value is None else f"  {key}: {value}\n")
    if setup != "one":
        text = text.replace("  val_data: data/val\n", "")
    path.write_text(text)
    result = cli("train", path, "-o", tmp_path / "run")
    assert result.exit_code == 2, result.stderr
    assert len(result.error_lines) == 1 and expected in result.error_lines[0] and "Traceback" not in result.stderr


def test_csv_of_png_and_dicom_images_trains(tmp_path, cli):
    """Clean images listed in a CSV (paths relative to it): 8-bit and 16-bit PNG and a real DICOM MR slice."""
    from pydicom.data import get_testdata_file
    from skimage import data
    from skimage.io import imsave

    folder = tmp_path / "imgs"
    folder.mkdir()
    imsave(str(folder / "camera.png"), data.camera()[::4, ::4], check_contrast=False)
    imsave(str(folder / "moon16.png"), (data.moon()[::4, ::4].astype("uint16") * 200), check_contrast=False)
    (folder / "mr.dcm").write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    (tmp_path / "list.csv").write_text("image\nimgs/camera.png\nimgs/moon16.png\nimgs/mr.dcm\n")
    path = config(tmp_path, **{**TINY, "epochs": 1})
    path.write_text(path.read_text().replace("  data: data/train\n  val_data: data/val\n", "  data: list.csv\n  val_fraction: 0.34\n"))
    result = cli("train", path, "-o", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    card = json.loads((tmp_path / "run" / "best.json").read_text())
    assert card["data_counts"] == {"train_images": 2, "val_images": 1, "train_items": 2, "val_items": 1}
    assert "camera" not in (tmp_path / "run" / "best.json").read_text()  # no input names in the card


def test_a_3d_model_trains_on_volumes_and_runs_as_a_stage(tmp_path, cli):
    from tests.conftest import write_nifti
    from voxpipe_plugins.common.denoise_phantom import shepp_logan_3d

    for folder, shape in (("train", (24, 28, 20)), ("val", (20, 20, 20))):
        write_nifti(tmp_path / "data" / folder / "v.nii.gz", shepp_logan_3d(shape))
    write_nifti(tmp_path / "data" / "train" / "w.nii.gz", shepp_logan_3d((20, 24, 28)))
    result = cli("train", config(tmp_path, noise="rician", spatial_dims=3, **{**TINY, "epochs": 1}), "-o", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    card = json.loads((tmp_path / "run" / "best.json").read_text())
    assert card["architecture"]["spatial_dims"] == 3 and card["data_counts"]["train_items"] == 2
    from voxpipe.stage import StageContext
    from voxpipe_plugins.common.tensors import make_metatensor
    from voxpipe_plugins.denoise.cnn import CNNDenoise

    stage = CNNDenoise(weights="run/best.safetensors", context=StageContext(device="cpu", config_dir=tmp_path, stage_id="denoise.cnn"))
    image = make_metatensor(shepp_logan_3d((18, 20, 22))[None], np.eye(4))
    out = stage({"image": image})
    assert out["image"].shape == image.shape and out["history"][-1]["model_dims"] == 3 and out["history"][-1]["noise"] == "rician"

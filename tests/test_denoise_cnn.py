"""denoise.cnn: the stage (shipped and local weights, 2D/3D, geometry, refusals) and the noise models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.denoise_cnn_support import anatomical, brain_mask, psnr_in, rician, save_random_model

PIPELINE = """version: 1
name: cnn
stages:
  - use: load.nifti
  - use: denoise.cnn
    with: {with_}
  - use: write.nifti
"""


def metatensor(array: np.ndarray, affine: np.ndarray):
    from voxpipe_plugins.common.tensors import make_metatensor

    return make_metatensor(array[None].astype(np.float32), affine)


def build(**params):
    from voxpipe.stage import StageContext
    from voxpipe_plugins.denoise.cnn import CNNDenoise

    context = params.pop("context", None) or StageContext(device="cpu", config_dir=Path("."), stage_id="denoise.cnn")
    return CNNDenoise(context=context, **params)


# ------------------------------------------------------------------ registration and config


def test_spec_is_registered_and_needs_exactly_one_source(registry, write_config, cli):
    spec = registry.stages["denoise.cnn"]
    assert spec.content_files == ("weights",) and "denoise" in registry.trainers
    for with_ in ("{}", "{model: mr-rician, weights: w.safetensors}"):
        result = cli("validate", write_config(PIPELINE.format(with_=with_)))
        assert result.exit_code == 2 and "exactly one of `model`" in result.stderr
    result = cli("validate", write_config(PIPELINE.format(with_="{model: mr-unknown}")))
    assert result.exit_code == 2 and "model" in result.stderr
    assert cli("validate", write_config(PIPELINE.format(with_="{model: mr-rician}"))).exit_code == 0


@pytest.mark.parametrize("model", ["mr-rician", "ct-lowdose"])
def test_shipped_models_load_from_the_package_and_carry_a_card(model):
    import json

    from voxpipe_plugins.denoise.cnn_weights import WEIGHTS_DIR, load_model

    path = WEIGHTS_DIR / f"{model}.safetensors"
    assert path.stat().st_size < 4_000_000
    network, card = load_model(path)
    assert card == json.loads(path.with_suffix(".json").read_text())
    assert card["noise"] == {"mr-rician": "rician", "ct-lowdose": "ct-lowdose"}[model]
    for field in ("architecture", "training", "seed", "command", "data", "metrics"):
        assert field in card, field
    assert network.arch.spatial_dims == card["architecture"]["spatial_dims"] == 2


# ------------------------------------------------------------------ the shipped MR model on real data


def test_mr_rician_runs_from_a_config_on_real_mr_and_keeps_geometry(tmp_path, write_config, cli):
    """`voxpipe run` with `model: mr-rician` on nibabel's real T1 (never trained on), Rician 5 %: no download, a clear gain."""
    import nibabel as nib

    from tests.conftest import write_nifti

    clean, affine = anatomical()
    noisy = rician(clean, 0.05)
    write_nifti(tmp_path / "in" / "t1.nii.gz", noisy, affine)
    config = write_config(PIPELINE.format(with_="{model: mr-rician}"))
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    written = [p for p in (tmp_path / "out").rglob("*.nii.gz")]
    assert len(written) == 1
    out = nib.load(str(written[0]))
    assert out.shape == clean.shape and np.allclose(out.affine, affine, atol=1e-4)
    denoised = np.asarray(out.get_fdata(), dtype=np.float32)
    mask = brain_mask(clean)
    assert psnr_in(denoised, clean, mask) > psnr_in(noisy, clean, mask) + 3.0


def test_2d_and_3d_inputs_keep_shape_affine_and_meta(tmp_path):
    weights = save_random_model(tmp_path / "w.safetensors")
    affine3 = np.diag([0.9, 0.9, 3.0, 1.0])
    affine3[:3, 3] = [10, -20, 5]
    rng = np.random.default_rng(0)
    stage = build(weights=str(weights), slice_axis="auto")
    for array, affine in ((rng.random((40, 36, 6)), affine3), (rng.random((50, 44)), np.diag([0.5, 0.5, 1.0, 1.0]))):
        image = metatensor(array, affine)
        image.meta["source_note"] = "kept"
        out = stage({"image": image, "history": []})
        result = out["image"]
        assert tuple(result.shape) == tuple(image.shape) and result.dtype.is_floating_point
        assert np.allclose(np.asarray(result.affine), affine) and result.meta["source_note"] == "kept"
        entry = out["history"][-1]
        assert entry["op"] == "denoise.cnn" and entry["weights"] == "local file" and entry["sigma"] > 0
        if array.ndim == 3:
            assert entry["slice_axis"] == 2  # the thick axis


def test_isotropic_volumes_average_three_slicings_and_large_images_go_through_windows(tmp_path):
    weights = save_random_model(tmp_path / "w.safetensors")
    rng = np.random.default_rng(2)
    cube = metatensor(rng.random((20, 22, 18)), np.diag([1.0, 1.1, 1.2, 1.0]))
    out = build(weights=str(weights))({"image": cube, "history": []})
    assert out["history"][-1]["slice_axis"] == [0, 1, 2]
    single = [build(weights=str(weights), slice_axis=a)({"image": cube})["image"].numpy() for a in (0, 1, 2)]
    assert np.allclose(out["image"].numpy(), sum(single) / 3, atol=1e-5)
    big = metatensor(rng.random((70, 60)), np.eye(4))
    whole = build(weights=str(weights))({"image": big})["image"].numpy()
    windows = build(weights=str(weights), roi_size=[32, 32], overlap=0.5)({"image": big})["image"].numpy()
    assert windows.shape == whole.shape and float(np.abs(windows - whole).mean()) < 0.02
    # a slice longer than the window on one axis and narrow on the other: windows are cut to the
    # narrow axis, never padded up to the window (padding put borders inside 16-voxel strips)
    strip = metatensor(rng.random((150, 12)), np.eye(4))
    whole = build(weights=str(weights), roi_size=[256, 256])({"image": strip})["image"].numpy()
    windows = build(weights=str(weights), roi_size=[128, 128])({"image": strip})["image"].numpy()
    assert float(np.abs(windows - whole).max()) < 0.05


def test_slice_axis_and_batching_match_a_plain_network_call(tmp_path):
    """Slice-wise over a volume = the network on each slice, scaled and unscaled (no window seams: roi covers the slice)."""
    import torch

    from voxpipe_plugins.denoise.cnn_weights import load_model
    from voxpipe_plugins.denoise.noise_models import robust_range

    weights = save_random_model(tmp_path / "w.safetensors")
    network, _ = load_model(weights)
    rng = np.random.default_rng(1)
    volume = rng.random((5, 30, 26)).astype(np.float32)
    out = build(weights=str(weights), slice_axis=0, sigma=0.1, noise="gaussian")({"image": metatensor(volume, np.eye(4))})["image"]
    low, scale = robust_range(volume, "gaussian")
    with torch.inference_mode():
        expected = network(torch.from_numpy((volume - low) / scale)[:, None], 0.1 / scale)[:, 0].numpy() * scale + low
    assert np.allclose(out[0].numpy(), expected, atol=1e-4)


def test_3d_model_refuses_2d_images_and_roi_must_match(tmp_path):
    from voxpipe_plugins.common.checks import StageInputError

    weights = save_random_model(tmp_path / "w3.safetensors", spatial_dims=3)
    stage = build(weights=str(weights))
    out = stage({"image": metatensor(np.random.default_rng(0).random((20, 20, 20)), np.eye(4))})
    assert out["image"].shape == (1, 20, 20, 20) and out["history"][-1]["model_dims"] == 3
    with pytest.raises(StageInputError, match="3D model and the image is 2D"):
        stage({"image": metatensor(np.random.default_rng(0).random((20, 20)), np.eye(4))})
    with pytest.raises(ValueError, match="roi_size"):
        build(weights=str(weights), roi_size=[32, 32])


# ------------------------------------------------------------------ weights files an adversary may hand us


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("bad.safetensors", b"not a safetensors file", "cannot be read as safetensors"),
        ("empty.safetensors", b"", "cannot be read as safetensors"),
        ("w.bin", b"x", "unsupported type"),
        ("missing.safetensors", None, "weights file not found"),
        ("bad.pt", b"\x80\x02garbage", "refused"),
    ],
)
def test_bad_weights_files_are_one_line_exit_2(tmp_path, write_config, cli, name, content, expected):
    from tests.conftest import write_nifti

    if content is not None:
        (tmp_path / name).write_bytes(content)
    write_nifti(tmp_path / "in" / "a.nii.gz", np.random.default_rng(0).random((16, 16, 4)).astype(np.float32))
    result = cli("run", write_config(PIPELINE.format(with_=f"{{weights: {name}}}")), "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert len(result.error_lines) == 1 and "cannot build" in result.error_lines[0] and expected in result.error_lines[0]
    assert "Traceback" not in result.stderr


def test_other_networks_weights_are_refused(tmp_path):
    import torch
    from monai.networks.nets import UNet
    from safetensors.torch import save_file

    save_file(UNet(2, 1, 1, (4, 8), (2,)).state_dict(), str(tmp_path / "unet.safetensors"))
    with pytest.raises(ValueError, match="not a denoise.cnn model"):
        build(weights=str(tmp_path / "unet.safetensors"))
    from safetensors.torch import load_file

    good = load_file(str(save_random_model(tmp_path / "m.safetensors")))
    good["body.1.conv.weight"] = torch.full_like(good["body.1.conv.weight"], float("nan"))
    save_file(good, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        build(weights=str(tmp_path / "nan.safetensors"))
    huge = {f"body.{i}.conv.weight": torch.zeros(1, 2 if i == 0 else 1, 3, 3) for i in range(40)}
    save_file(huge, str(tmp_path / "deep.safetensors"))
    with pytest.raises(ValueError, match="at most 256 channels and 30 layers"):
        build(weights=str(tmp_path / "deep.safetensors"))
    save_file(
        {"body.0.conv.weight": torch.zeros(8, 2, 5, 5), "body.1.conv.weight": torch.zeros(1, 8, 5, 5)}, str(tmp_path / "k5.safetensors")
    )
    with pytest.raises(ValueError, match="3-wide kernels"):
        build(weights=str(tmp_path / "k5.safetensors"))


class _Exploit:
    """Unpickling this would run code (touch a marker file): weights_only loading must refuse it."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("layout", ["bare", "state_dict", "model"])
def test_pickles_with_code_are_refused_and_never_run(tmp_path, layout):
    import torch

    from voxpipe_plugins.denoise.cnn_weights import load_model

    marker = tmp_path / "pwned"
    _Exploit.marker = str(marker)
    state = dict(torch.load(str(_pt(tmp_path)), weights_only=True))
    state["evil"] = _Exploit()
    payload = state if layout == "bare" else {layout: state}
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()


def _pt(tmp_path: Path) -> Path:
    """A plain state dict saved with torch.save: the other accepted format."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(save_random_model(tmp_path / "p.safetensors")))
    torch.save(state, tmp_path / "plain.pt")
    return tmp_path / "plain.pt"


def test_plain_torch_state_dict_loads_weights_only(tmp_path):
    stage = build(weights=str(_pt(tmp_path)), noise="gaussian")
    out = stage({"image": metatensor(np.random.default_rng(0).random((24, 24)), np.eye(4))})
    assert out["history"][-1]["trained_for"] is None and out["history"][-1]["noise"] == "gaussian"


# ------------------------------------------------------------------ noise models


def test_noise_models_have_the_right_statistics():
    from voxpipe_plugins.denoise.noise_models import lowdose_ct, robust_range, simulate

    rng = np.random.default_rng(0)
    flat = np.full((64, 64), 0.5, dtype=np.float32)
    assert abs(float((simulate(flat, "gaussian", 0.1, rng) - flat).std()) - 0.1) < 0.005
    dark = simulate(np.zeros((128, 128), np.float32), "rician", 0.1, rng)  # Rayleigh: mean sigma sqrt(pi/2)
    assert dark.min() >= 0 and abs(float(dark.mean()) - 0.1 * np.sqrt(np.pi / 2)) < 0.004
    bright = simulate(np.full((128, 128), 1.0, np.float32), "rician", 0.05, rng)  # ~Gaussian at high SNR
    assert abs(float(bright.std()) - 0.05) < 0.004
    # low-dose CT: zero-mean noise in HU, stronger at a lower dose (std ~ 1/sqrt(dose))
    yy, xx = np.mgrid[-1:1:96j, -1:1:96j]
    water = np.where(xx**2 + yy**2 < 0.7, 0.0, -1000.0).astype(np.float32)
    inside = xx**2 + yy**2 < 0.4
    stds = {d: float((lowdose_ct(water, d, np.random.default_rng(1)) - water)[inside].std()) for d in (0.05, 0.2)}
    assert 1.5 < stds[0.05] / stds[0.2] < 2.6 and stds[0.2] > 5
    assert abs(float((lowdose_ct(water, 0.2, rng) - water)[inside].mean())) < 0.25 * stds[0.2]
    assert robust_range(water, "ct-lowdose") == (-1000.0, 2000.0)
    with pytest.raises(ValueError, match="unknown noise model"):
        simulate(flat, "speckle", 0.1, rng)


# ------------------------------------------------------------------ GPU


@pytest.mark.gpu
def test_cuda_matches_cpu_with_amp(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from voxpipe.stage import StageContext

    weights = save_random_model(tmp_path / "w.safetensors", features=16, depth=5)
    image = metatensor(np.random.default_rng(0).random((64, 64, 8)), np.eye(4))
    context = StageContext(device="cuda", config_dir=tmp_path, stage_id="denoise.cnn")
    cpu = build(weights=str(weights))({"image": image})["image"]
    gpu_case = build(weights=str(weights), device="cuda", context=context)({"image": image})
    assert gpu_case["history"][-1]["amp"] is True
    assert np.allclose(gpu_case["image"].cpu().numpy(), cpu.numpy(), atol=2e-2)


def test_registration_stays_light():
    import subprocess

    code = "import sys; from voxpipe.registry import Registry; Registry.load(); print(sorted(m for m in ('torch', 'monai', 'voxpipe_plugins.denoise.cnn') if m in sys.modules) or 'light')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "light"

"""Hybrid denoise.cnn models (``guide: nlm``): the NLM estimate as an extra input, at inference and in training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.denoise_cnn_support import save_random_model
from tests.test_denoise_cnn import build, metatensor
from tests.test_denoise_cnn_train import config, write_data


def test_three_input_channels_load_as_a_hybrid_and_old_weights_stay_plain(tmp_path):
    import torch

    from voxpipe_plugins.denoise.cnn_weights import load_model

    hybrid, _ = load_model(save_random_model(tmp_path / "h.safetensors", guide="nlm"))
    plain, _ = load_model(save_random_model(tmp_path / "p.safetensors"))
    assert hybrid.arch.guide == "nlm" and hybrid.arch.in_channels == 3
    assert plain.arch.guide == "none" and plain.arch.in_channels == 2
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="needs the NLM estimate"):
        hybrid(x, 0.1)
    assert hybrid(x, 0.1, x.clone()).shape == x.shape


def test_a_volume_gets_one_3d_guide_sliced_like_the_image(tmp_path):
    """The guide is denoise.nlm's estimate of the whole scaled volume (3D search), then cut into the same slices."""
    import torch

    from voxpipe_plugins.denoise.cnn_guide import nlm_guide
    from voxpipe_plugins.denoise.cnn_weights import load_model
    from voxpipe_plugins.denoise.noise_models import robust_range

    weights = save_random_model(tmp_path / "h.safetensors", guide="nlm")
    network, _ = load_model(weights)
    volume = np.random.default_rng(3).random((6, 30, 26)).astype(np.float32)
    out = build(weights=str(weights), slice_axis=0, sigma=0.1, noise="gaussian")({"image": metatensor(volume, np.eye(4)), "history": []})
    assert out["history"][-1]["guide"] == "denoise.nlm"
    low, scale = robust_range(volume, "gaussian")
    scaled = torch.from_numpy((volume - low) / scale)
    guide = nlm_guide(scaled, 0.1 / scale, (1.0, 1.0, 1.0), "gaussian")
    with torch.inference_mode():
        expected = network(scaled[:, None], 0.1 / scale, guide[:, None])[:, 0].numpy() * scale + low
    assert np.allclose(out["image"][0].numpy(), expected, atol=1e-4)
    sliced = nlm_guide(scaled[0], 0.1 / scale, (1.0, 1.0), "gaussian")  # a 2D guide of one slice is another estimate
    assert not torch.allclose(sliced, guide[0])


def test_a_tiny_hybrid_trained_for_seconds_beats_its_nlm_guide_on_a_held_apart_phantom(tmp_path, cli):
    """Brain-like 2D phantoms and one 3D phantom volume (kept whole: 3D guide, slices along every axis), Rician noise."""
    import nibabel as nib
    import torch

    from voxpipe_plugins.denoise.cnn_data import HELD_APART_SEED, brain_slice, brain_volume
    from voxpipe_plugins.denoise.cnn_guide import nlm_guide
    from voxpipe_plugins.denoise.cnn_weights import load_model
    from voxpipe_plugins.denoise.noise_models import add_rician

    write_data(tmp_path, train=4)
    nib.save(nib.Nifti1Image(brain_volume(1, (40, 48, 24)), np.eye(4)), str(tmp_path / "data" / "train" / "v1.nii.gz"))
    settings = dict(noise="rician", guide="nlm", guide_bank=2, sigma_range=[0.04, 0.12], val_level=0.08, features=12, depth=5)
    result = cli("train", config(tmp_path, **settings, patch_size=32, batch_size=8, steps_per_epoch=60, epochs=2), "-o", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    card = json.loads((tmp_path / "run" / "best.json").read_text())
    assert card["architecture"]["guide"] == "nlm" and card["guide"]["method"] == "denoise.nlm" and card["data_counts"]["train_items"] == 5

    clean = brain_slice(HELD_APART_SEED, 128)
    clean = clean / np.percentile(clean, 99.5)
    noisy = add_rician(clean, 0.08, np.random.default_rng(7))
    guide = nlm_guide(torch.from_numpy(noisy), 0.08, (1.0, 1.0), "rician")
    model, _ = load_model(tmp_path / "run" / "best.safetensors")
    with torch.inference_mode():
        out = model(torch.from_numpy(noisy)[None, None], 0.08, guide[None, None])[0, 0].numpy()

    def psnr(x) -> float:
        return float(10 * np.log10(1.0 / np.mean((np.asarray(x) - clean) ** 2)))

    assert psnr(out) > psnr(guide.numpy()) + 0.3 > psnr(noisy) + 5


def test_guide_with_ct_noise_is_a_config_error(tmp_path, cli):
    result = cli("validate", config(tmp_path, noise="ct-lowdose", guide="nlm"))
    assert result.exit_code == 2 and "guide: nlm is for gaussian or rician" in result.stderr
    assert "Traceback" not in result.stderr


def test_guide_recipe_is_pinned():
    """The recipe the shipped hybrid was trained with: changing it silently would change what the network sees."""
    from voxpipe_plugins.denoise.cnn_guide import guide_recipe

    assert guide_recipe() == {"method": "denoise.nlm", "h_factor": 0.8, "patch_voxels": 2, "search_voxels": {"2": 3, "3": 1}}


def test_brain_volumes_are_seeded_and_in_range():
    from voxpipe_plugins.denoise.cnn_data import brain_volume

    a, b = brain_volume(3, (32, 40, 20)), brain_volume(3, (32, 40, 20))
    assert np.array_equal(a, b) and a.shape == (32, 40, 20) and 0.5 < float(a.max()) < 1.5
    assert not np.array_equal(a, brain_volume(4, (32, 40, 20)))


def test_a_resumed_hybrid_run_repeats_an_uninterrupted_one(tmp_path, cli):
    """The NLM bank is rebuilt from the seed on resume, so the weights are the same tensors."""
    from tests.test_denoise_cnn_train import TINY, _tensors

    write_data(tmp_path, train=2, size=40)
    settings = dict(noise="rician", guide="nlm", guide_bank=2, **TINY)
    assert cli("train", config(tmp_path, **settings), "-o", tmp_path / "a").exit_code == 0
    assert cli("train", config(tmp_path, max_minutes=1e-6, **settings), "-o", tmp_path / "b").exit_code == 0
    resumed = cli("train", config(tmp_path, **settings), "-o", tmp_path / "b", "--resume")
    assert resumed.exit_code == 0 and "resuming after epoch 1" in resumed.stderr, resumed.stderr
    a, b = _tensors(tmp_path / "a" / "last.safetensors"), _tensors(tmp_path / "b" / "last.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert a["body.0.conv.weight"].shape[1] == 3

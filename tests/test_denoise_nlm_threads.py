"""`denoise.nlm` on small images runs on one thread, with the same result, and leaves torch's threads as they were.

Small images (the 34k-voxel anatomical.nii, the 1 mm benchmark block) are filtered on the
calling thread with torch's intra-op threads off (kernels.SINGLE_THREAD_WORK, nlm.ONE_THREAD_VOXELS):
on a shared machine a second thread there costs more than it saves (docs/denoising.md, "Speed").
TV (kernels.tv_chambolle) does the same up to kernels.TV_ONE_THREAD_VOXELS.
The noise estimate's median is a selection now (NumPy's partition on the CPU, torch's kthvalue
elsewhere); it must pick exactly the value torch.median picked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture
def two_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def _volume(shape=(20, 26, 18), seed=2) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    clean = (np.indices(shape)[0] > shape[0] // 2) * 0.6 + 0.2
    return torch.from_numpy((clean + rng.normal(0, 0.1, shape)).astype(np.float32))


@pytest.mark.parametrize("rician", [False, True])
def test_one_thread_path_equals_the_threaded_tiled_path(two_threads, rician):
    from voxpipe_plugins.denoise import kernels

    x = _volume()
    auto = kernels.nlm(x, 0.1, 0.08, (1, 1, 1), (1, 2, 1), rician=rician)
    assert torch.get_num_threads() == 2
    for threads, tile in ((2, 2000), (1, 2000), (2, None)):
        other = kernels.nlm(x, 0.1, 0.08, (1, 1, 1), (1, 2, 1), rician=rician, threads=threads, tile_voxels=tile)
        torch.testing.assert_close(auto, other, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        kernels.bilateral(x, 0.2, (1, 1, 2), (2, 2, 3)),
        kernels.bilateral(x, 0.2, (1, 1, 2), (2, 2, 3), threads=2, tile_voxels=1500),
        atol=1e-5,
        rtol=0,
    )


def test_kernel_uses_one_thread_only_below_the_work_limit(two_threads, monkeypatch):
    from voxpipe_plugins.denoise import kernels

    seen = []
    engine = kernels.shift_filter

    def spy(u, **kw):
        seen.append((torch.get_num_threads(), kw["tile_voxels"], kw["threads"]))
        return engine(u, **kw)

    monkeypatch.setattr(kernels, "shift_filter", spy)
    x = _volume((18, 20, 26))  # axes already shortest first: no permuted inner call
    small = kernels.nlm(x, 0.1, 0.08, (1, 1, 1), (1, 1, 1))
    monkeypatch.setattr(kernels, "SINGLE_THREAD_WORK", 0)
    large = kernels.nlm(x, 0.1, 0.08, (1, 1, 1), (1, 1, 1))
    with kernels.single_threaded_torch():  # as the stage holds it for a small image with a large window
        nested = kernels.nlm(x, 0.1, 0.08, (1, 1, 1), (1, 1, 1))
    # larger work: our two worker threads over tiles, torch's own threads off around them too
    assert seen == [(1, None, 1), (1, kernels.CPU_TILE_VOXELS, 2), (1, kernels.CPU_TILE_VOXELS, 2)]
    assert torch.get_num_threads() == 2
    torch.testing.assert_close(small, large, atol=1e-5, rtol=0)
    torch.testing.assert_close(small, nested, atol=1e-5, rtol=0)


def test_stage_runs_small_images_on_one_thread_and_restores_the_setting(two_threads, monkeypatch):
    from monai.data import MetaTensor

    from voxpipe_plugins.common import noise
    from voxpipe_plugins.common.checks import StageInputError
    from voxpipe_plugins.denoise import base, kernels
    from voxpipe_plugins.denoise.nlm import NLMDenoise

    seen = {}
    estimate, kernel = noise.estimate_sigma, kernels.nlm
    monkeypatch.setattr(base, "estimate_sigma", lambda *a, **k: seen.setdefault("estimate", torch.get_num_threads()) and estimate(*a, **k))
    monkeypatch.setattr(kernels, "nlm", lambda *a, **k: seen.setdefault("kernel", torch.get_num_threads()) and kernel(*a, **k))
    image = MetaTensor(_volume()[None], affine=torch.eye(4))
    out = NLMDenoise(noise="rician")({"image": image, "history": []})
    assert seen == {"estimate": 1, "kernel": 1}
    assert torch.get_num_threads() == 2
    assert out["image"].shape == image.shape
    bad = image.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(StageInputError):
        NLMDenoise()({"image": bad, "history": []})
    assert torch.get_num_threads() == 2


def test_noise_median_is_the_value_torch_median_picks():
    from voxpipe_plugins.common.noise import MAD_TO_SIGMA, _lower_median_numpy, _lower_median_torch, _mad

    rng = np.random.default_rng(5)
    for size in (1, 2, 7, 64, 1001):
        magnitude = torch.from_numpy(np.abs(rng.normal(size=(size, 3))).astype(np.float32))
        magnitude[0, 0] = magnitude[-1, -1]  # ties
        for mask in (torch.ones_like(magnitude, dtype=torch.bool), torch.from_numpy(rng.random((size, 3)) < 0.5)):
            expected = float(magnitude[mask].median()) if bool(mask.any()) else None
            assert _lower_median_numpy(magnitude, mask) == expected
            assert _lower_median_torch(magnitude, mask) == expected
            assert _mad(magnitude, mask) == (0.0 if expected is None else expected * MAD_TO_SIGMA)


def test_tv_runs_small_images_on_one_thread_with_the_same_result(two_threads, monkeypatch):
    from voxpipe_plugins.denoise import kernels

    seen = []
    inner = kernels._tv_chambolle

    def spy(*args):
        seen.append(torch.get_num_threads())
        return inner(*args)

    monkeypatch.setattr(kernels, "_tv_chambolle", spy)
    x = _volume()
    small, n_small = kernels.tv_chambolle(x, 0.07)
    monkeypatch.setattr(kernels, "TV_ONE_THREAD_VOXELS", 0)
    large, n_large = kernels.tv_chambolle(x, 0.07)
    assert seen == [1, 2]
    assert torch.get_num_threads() == 2
    assert n_small == n_large > 1
    torch.testing.assert_close(small, large, atol=1e-6, rtol=0)


def test_noise_estimate_of_a_small_image_runs_on_one_thread(two_threads, monkeypatch):
    """Every denoiser's σ estimate (common/noise.py), not only NLM's: one thread up to UNDECIMATED_MAX_VOXELS, restored after."""
    from voxpipe_plugins.common import noise

    seen = []
    blocks = noise.haar_blocks
    monkeypatch.setattr(noise, "haar_blocks", lambda x, step: seen.append(torch.get_num_threads()) or blocks(x, step))
    small = _volume()
    assert noise.estimate_sigma(small, rician=True) == pytest.approx(0.1, rel=0.15)
    large = torch.zeros(70, 70, 60)  # above the limit: torch's threads as configured
    large[::2] = 1.0
    noise.estimate_sigma(large)
    assert seen == [1, 2] and torch.get_num_threads() == 2

"""The `enhance.*` stages (issue 4): exact windowing, stated statistics, measurable contrast gains,
geometry that keeps world positions, runs from configs and in a plain MONAI Compose, and
clear refusals of bad input. Real images come with the dependencies (scikit-image's camera,
pydicom's CT_small, nibabel's anatomical.nii); the rest is synthetic and small.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydantic
import pytest
import torch

from tests.conftest import nibabel_data, write_nifti
from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.common.tensors import make_metatensor

ENHANCE_IDS = [
    "enhance.clahe",
    "enhance.gamma",
    "enhance.histeq",
    "enhance.normalize",
    "enhance.reorient",
    "enhance.resample",
    "enhance.unsharp",
    "enhance.window",
]


# --------------------------------------------------------------------------- helpers


def meta(array: np.ndarray, affine=None):
    """Channel-first MetaTensor from a spatial array (adds the channel axis)."""
    return make_metatensor(np.asarray(array)[None], np.eye(4) if affine is None else np.asarray(affine, dtype=float))


def case_of(image, **extra) -> dict:
    return {"image": image, "history": [], **extra}


def camera() -> np.ndarray:
    from skimage.data import camera as cam

    return cam().T.astype(np.float32)  # (x, y) array axes, as the 2D loader gives them


def ct_small():
    """pydicom's real CT slice in HU, (x, y) axes, and its affine (0.66 mm pixels)."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    row, col = (float(v) for v in ds.PixelSpacing)
    return hu.T, np.diag([col, row, 1.0, 1.0])


def anatomical():
    """nibabel's real T1 MRI (33x41x25, 2 mm, LAS-like affine) as a MetaTensor."""
    img = nib.load(nibabel_data("anatomical.nii"))
    return meta(np.asarray(img.dataobj).astype(np.float32), img.affine)


def local_contrast(array: np.ndarray, size: int = 7) -> float:
    """Mean standard deviation in size^k windows, after min-max scaling to [0, 1]."""
    from scipy.ndimage import uniform_filter

    a = array.astype(np.float64)
    a = (a - a.min()) / (a.max() - a.min())
    mean, mean_sq = uniform_filter(a, size), uniform_filter(a * a, size)
    return float(np.sqrt(np.clip(mean_sq - mean * mean, 0, None)).mean())


def ks_to_uniform(values: np.ndarray) -> float:
    """Largest gap between the empirical CDF of values in [0, 1] and the identity (the uniform CDF)."""
    v = np.sort(values.ravel())
    return float(np.max(np.abs(np.arange(1, v.size + 1) / v.size - v)))


def world(affine, index) -> np.ndarray:
    return (np.asarray(affine, dtype=float) @ np.r_[np.asarray(index, dtype=float), 1.0])[:3]


def world_centroid(image) -> np.ndarray:
    """Intensity-weighted centroid of a 3D MetaTensor in world (RAS, mm) coordinates."""
    data = image[0].numpy().astype(np.float64)
    grid = np.indices(data.shape).reshape(3, -1)
    index = (grid * data.reshape(-1)).sum(axis=1) / data.sum()
    return world(image.affine.numpy(), index)


def all_stages():
    from voxpipe_plugins.enhance.clahe import Clahe
    from voxpipe_plugins.enhance.gamma import Gamma
    from voxpipe_plugins.enhance.geometry import Reorient, Resample
    from voxpipe_plugins.enhance.histeq import HistogramEqualize
    from voxpipe_plugins.enhance.normalize import Normalize
    from voxpipe_plugins.enhance.unsharp import Unsharp
    from voxpipe_plugins.enhance.window import Window

    return {
        "enhance.window": Window(preset="brain"),
        "enhance.normalize": Normalize(),
        "enhance.histeq": HistogramEqualize(),
        "enhance.clahe": Clahe(),
        "enhance.gamma": Gamma(gamma=0.7),
        "enhance.unsharp": Unsharp(radius_mm=1.0),
        "enhance.resample": Resample(spacing_mm=[1.5]),
        "enhance.reorient": Reorient(axcodes="LPS"),
    }


# --------------------------------------------------------------------------- registry


def test_stages_registered_with_docs(registry, cli):
    for stage_id in ENHANCE_IDS:
        spec = registry.get(stage_id)
        assert spec is not None and spec.kind.value == "enhancer" and spec.plugin == "enhance"
        assert spec.params.model_config["extra"] == "forbid"
        for name, field in spec.params.model_fields.items():
            assert field.description, f"{stage_id}.{name} has no description"
    listing = cli("plugins")
    assert listing.exit_code == 0
    for stage_id in ENHANCE_IDS:
        assert stage_id in listing.stdout
    shown = cli("plugins", "show", "enhance.clahe")
    assert shown.exit_code == 0 and "kernel_mm" in shown.stdout and "clip_limit" in shown.stdout


def test_parameter_models_reject_bad_values():
    from voxpipe_plugins.enhance.plugin import ClaheParams, GammaParams, NormalizeParams, ReorientParams, ResampleParams, WindowParams

    WindowParams(preset="lung")
    WindowParams(level=40, width=80)
    bad = [
        (WindowParams, {}),  # neither preset nor level/width
        (WindowParams, {"preset": "brain", "level": 40}),
        (WindowParams, {"level": 40}),
        (WindowParams, {"preset": "brian"}),
        (WindowParams, {"level": 40, "width": 0}),
        (WindowParams, {"level": 40, "width": 80, "out_min": 1, "out_max": 0}),
        (WindowParams, {"level": 40, "width": 0.5, "function": "linear"}),
        (NormalizeParams, {"lower": 1}),  # a percentile field in zscore mode
        (NormalizeParams, {"mode": "percentile", "target_std": 2}),
        (NormalizeParams, {"mode": "percentile", "lower": 90, "upper": 10}),
        (NormalizeParams, {"target_std": 0}),
        (NormalizeParams, {"mask_labels": [1]}),
        (NormalizeParams, {"fill_outside": 0}),
        (ClaheParams, {"clip_limit": 2}),
        (ClaheParams, {"kernel_mm": -1}),
        (GammaParams, {}),
        (GammaParams, {"gamma": 0}),
        (GammaParams, {"gamma": 1, "lower": 0}),
        (ResampleParams, {"spacing_mm": []}),
        (ResampleParams, {"spacing_mm": [1, 1, 1, 1]}),
        (ResampleParams, {"spacing_mm": [-1]}),
        (ResampleParams, {"spacing_mm": [1], "keys": ["image"], "label_keys": ["image"]}),
        (ReorientParams, {"axcodes": "RAR"}),
        (ReorientParams, {"axcodes": "XYZ"}),
        (ReorientParams, {"axcodes": "RASS"}),
        (ReorientParams, {"spacing": 1}),
    ]
    for model, values in bad:
        with pytest.raises(pydantic.ValidationError):
            model.model_validate(values)
    assert ReorientParams(axcodes="lps").axcodes == "LPS"


# --------------------------------------------------------------------------- window

PRESETS = {  # (level, width) in HU, as documented in docs/enhancement.md
    "brain": (40, 80),
    "subdural": (75, 215),
    "stroke": (40, 40),
    "lung": (-600, 1500),
    "mediastinum": (50, 350),
    "abdomen": (40, 400),
    "liver": (30, 150),
    "bone": (400, 1800),
}


def test_window_maps_known_hu_exactly():
    from voxpipe_plugins.enhance.window import Window

    hu = np.array([-1000, -1, 0, 10, 20, 40, 60, 80, 81, 3000], dtype=np.float32).reshape(1, 10, 1)
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    image = make_metatensor(hu, affine)
    result = Window(preset="brain")(case_of(image))
    expected = [0, 0, 0, 0.125, 0.25, 0.5, 0.75, 1, 1, 1]
    np.testing.assert_array_equal(result["image"].numpy().ravel(), np.asarray(expected, dtype=np.float32))
    assert result["image"].dtype == torch.float32
    assert torch.equal(result["image"].affine, image.affine)
    assert result["history"][-1] == {
        "op": "enhance.window",
        "preset": "brain",
        "level": 40.0,
        "width": 80.0,
        "function": "linear_exact",
        "lower": 0.0,
        "upper": 80.0,
        "out_min": 0.0,
        "out_max": 1.0,
        "input_range": [-1000.0, 3000.0],
    }
    # an 8-bit display range, from int16 input (CT as stored)
    display = Window(level=40, width=80, out_min=0, out_max=255)(case_of(make_metatensor(hu.astype(np.int16), affine)))
    np.testing.assert_allclose(display["image"].numpy().ravel(), np.asarray(expected) * 255, atol=1e-5)
    assert display["image"].dtype == torch.float32


@pytest.mark.parametrize("preset", list(PRESETS))
def test_window_presets(preset):
    from voxpipe_plugins.enhance.window import Window

    level, width = PRESETS[preset]
    hu = np.array(
        [level - width, level - width / 2, level - width / 4, level, level + width / 4, level + width / 2, level + width, -1024, 3071],
        dtype=np.float32,
    )
    out = Window(preset=preset)(case_of(meta(hu.reshape(9, 1))))["image"].numpy().ravel()
    expected = np.clip((hu - (level - width / 2)) / width, 0, 1)
    np.testing.assert_allclose(out[:7], [0, 0, 0.25, 0.5, 0.75, 1, 1], atol=1e-6)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_window_dicom_linear_function():
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR): y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped."""
    from voxpipe_plugins.enhance.window import Window

    c, w = 40.0, 80.0
    x = np.array([-0.5, 0.0, 0.5, 19.75, 39.5, 59.25, 79.0, 79.5, 200], dtype=np.float32)
    out = Window(level=c, width=w, function="linear")(case_of(meta(x.reshape(9, 1))))["image"].numpy().ravel()
    reference = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(out, reference, atol=1e-6)
    np.testing.assert_allclose(out[[1, 3, 4, 5, 6]], [0, 0.25, 0.5, 0.75, 1], atol=1e-6)
    step = Window(level=c, width=1, function="linear")(case_of(meta(x.reshape(9, 1))))["image"].numpy().ravel()
    np.testing.assert_array_equal(step, (x > c - 0.5).astype(np.float32))


# --------------------------------------------------------------------------- normalize


def test_zscore_inside_label_mask_gives_stated_mean_and_std():
    from voxpipe_plugins.enhance.normalize import Normalize

    image = anatomical()
    data = image[0].numpy()
    label = meta((data > np.percentile(data, 60)).astype(np.uint8), image.affine)  # the brighter 40 %
    inside = label[0].numpy().astype(bool)
    result = Normalize(mask_key="label", target_mean=0.0, target_std=1.0)(case_of(image, label=label))
    out = result["image"][0].numpy()
    assert abs(out[inside].mean() - 0.0) < 1e-4 and abs(out[inside].std() - 1.0) < 1e-4
    assert abs(out.mean()) > 0.1, "statistics must come from the mask, not the whole image"
    step = result["history"][-1]
    assert step["mask_voxels"] == [int(inside.sum())]
    assert step["channels"][0]["mean"] == pytest.approx(float(data[inside].mean()), rel=1e-5)
    assert step["channels"][0]["std"] == pytest.approx(float(data[inside].std()), rel=1e-5)
    assert torch.equal(result["image"].affine, image.affine)
    # another target, a label value, a threshold, and the outside filled
    labels = meta(np.where(inside, 2, 1).astype(np.uint8), image.affine)
    shifted = Normalize(mask_key="label", mask_labels=[2], target_mean=100, target_std=15, fill_outside=0.0)(case_of(image, label=labels))[
        "image"
    ][0].numpy()
    assert abs(shifted[inside].mean() - 100) < 1e-4 * 100 and abs(shifted[inside].std() - 15) < 1e-4 * 15
    assert np.all(shifted[~inside] == 0)
    body = data > 100
    thresholded = Normalize(mask_threshold=100)(case_of(image))["image"][0].numpy()
    assert abs(thresholded[body].mean()) < 1e-4 and abs(thresholded[body].std() - 1) < 1e-4


def test_percentile_mode_matches_intensity_scale_and_masks():
    from voxpipe_plugins.enhance.normalize import Normalize
    from voxpipe_plugins.intensity.scale import IntensityScale

    hu, affine = ct_small()
    image = meta(hu, affine)
    ours = Normalize(mode="percentile", lower=1, upper=99)(case_of(image))["image"]
    theirs = IntensityScale(mode="percentile", lower=1, upper=99)(case_of(image))["image"]
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6)
    body = hu > -500
    masked = Normalize(mode="percentile", lower=2, upper=98, mask_threshold=-500)(case_of(image))["image"][0].numpy()
    p2, p98 = np.percentile(hu[body], [2, 98])
    np.testing.assert_allclose(masked, np.clip((hu - p2) / (p98 - p2), 0, 1), atol=1e-5)


def test_normalize_mask_problems_are_one_line():
    from voxpipe_plugins.enhance.normalize import Normalize

    image = meta(np.random.default_rng(0).random((8, 9, 4)).astype(np.float32))
    empty = meta(np.zeros((8, 9, 4), np.uint8))
    with pytest.raises(StageInputError, match="selects no voxels"):
        Normalize(mask_key="label")(case_of(image, label=empty))
    with pytest.raises(StageInputError, match="has no `label`"):
        Normalize(mask_key="label")(case_of(image))
    with pytest.raises(StageInputError, match="resample the mask"):
        Normalize(mask_key="label")(case_of(image, label=meta(np.ones((8, 9, 5), np.uint8))))
    flat = meta(np.where(np.arange(8)[:, None, None] < 4, 5.0, 1.0) * np.ones((8, 9, 4), np.float32))
    with pytest.raises(StageInputError, match="constant inside the mask"):
        Normalize(mask_threshold=2)(case_of(flat))


# --------------------------------------------------------------------------- histeq, clahe


def test_histeq_flattens_histogram_and_torch_path_agrees():
    from voxpipe_plugins.enhance.histeq import HistogramEqualize, equalize_torch

    hu, affine = ct_small()
    before = ks_to_uniform((hu - hu.min()) / (hu.max() - hu.min()))
    result = HistogramEqualize()(case_of(meta(hu, affine)))
    out = result["image"][0].numpy()
    after = ks_to_uniform(out)
    assert before > 0.3 and after < 0.05, (before, after)
    assert 0 <= out.min() and out.max() == pytest.approx(1.0)
    # inside a mask: the masked voxels are equalised
    body = hu > -500
    masked = HistogramEqualize(mask_threshold=-500)(case_of(meta(hu, affine)))["image"][0].numpy()
    assert ks_to_uniform(masked[body]) < 0.05
    # the torch implementation (used on the GPU) is scikit-image's algorithm
    cam = camera()
    ours = equalize_torch(torch.from_numpy(cam), 256).numpy()
    from skimage.exposure import equalize_hist

    np.testing.assert_allclose(ours, equalize_hist(cam, nbins=256), atol=1e-5)
    mask = cam > 100
    np.testing.assert_allclose(
        equalize_torch(torch.from_numpy(cam), 128, torch.from_numpy(mask)).numpy(), equalize_hist(cam, nbins=128, mask=mask), atol=1e-5
    )


def test_clahe_raises_local_contrast_2d_real_images():
    from voxpipe_plugins.enhance.clahe import Clahe
    from voxpipe_plugins.enhance.window import Window

    cam = camera()
    out = Clahe()(case_of(meta(cam)))["image"][0].numpy()
    assert local_contrast(out) > 1.3 * local_contrast(cam)
    hu, affine = ct_small()
    windowed = Window(level=40, width=400)(case_of(meta(hu, affine)))
    result = Clahe(kernel_mm=16)(windowed)
    assert result["history"][-1]["kernel_voxels"] == [24, 24]  # 16 mm / 0.661 mm
    out = result["image"][0].numpy()
    assert local_contrast(out) > 1.3 * local_contrast(windowed["image"][0].numpy())
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert torch.equal(result["image"].affine, windowed["image"].affine)


def test_clahe_3d_and_per_slice():
    from voxpipe_plugins.enhance.clahe import Clahe

    image = anatomical()
    for per_slice, mode in ((False, "3d"), (True, "2d per slice")):
        result = Clahe(kernel_mm=16, per_slice=per_slice)(case_of(image))
        out = result["image"][0].numpy()
        assert result["history"][-1]["mode"] == mode
        assert result["history"][-1]["kernel_voxels"] == ([8, 8, 8] if mode == "3d" else [8, 8])
        assert local_contrast(out) > 1.3 * local_contrast(image[0].numpy())
        assert np.isfinite(out).all() and out.shape == image.shape[1:]
    # a volume with 3 slices is a volume, not an RGB picture (scikit-image's adapt_rgb guess)
    from skimage.exposure import equalize_adapthist

    thin = np.random.default_rng(1).random((24, 20, 3)).astype(np.float32)
    out = Clahe()(case_of(meta(thin)))["image"][0].numpy()
    np.testing.assert_allclose(out, equalize_adapthist.__wrapped__(thin, kernel_size=[3, 2, 1]), atol=1e-6)


# --------------------------------------------------------------------------- gamma, unsharp


def test_gamma_is_a_power_law_on_the_stated_range():
    from monai.transforms import AdjustContrast

    from voxpipe_plugins.enhance.gamma import Gamma

    ramp = np.linspace(0, 1, 101, dtype=np.float32).reshape(101, 1)
    for gamma in (0.5, 2.0):
        out = Gamma(gamma=gamma)(case_of(meta(ramp)))["image"].numpy().ravel()
        np.testing.assert_allclose(out, ramp.ravel() ** gamma, atol=1e-6)
    bright = Gamma(gamma=0.5)(case_of(meta(ramp)))["image"]
    assert float(bright.mean()) > float(ramp.mean()) + 0.1  # gamma < 1 brightens mid-tones
    hu, affine = ct_small()
    image = meta(hu, affine)
    ours = Gamma(gamma=1.5)(case_of(image))["image"]
    theirs = AdjustContrast(gamma=1.5)(image)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-3)  # MONAI's epsilon 1e-7 on a 2063 HU range
    assert float(ours.min()) == hu.min() and float(ours.max()) == hu.max()
    fixed = Gamma(gamma=2.0, lower=0, upper=100, preserve_range=False)(case_of(image))["image"][0].numpy()
    np.testing.assert_allclose(fixed, (np.clip(hu, 0, 100) / 100) ** 2, atol=1e-6)
    assert torch.equal(ours.affine, image.affine)


def test_unsharp_sharpens_edges_and_keeps_mean():
    from scipy.ndimage import gaussian_filter, sobel
    from skimage.data import shepp_logan_phantom
    from skimage.filters import unsharp_mask

    from voxpipe_plugins.enhance.unsharp import Unsharp

    clean = shepp_logan_phantom()[::2, ::2].astype(np.float32)  # 200 x 200
    soft = (gaussian_filter(clean, 1.5) + 0.25).astype(np.float32)  # non-zero up to the border: padding matters
    affine = np.diag([0.5, 0.5, 1.0, 1.0])  # 0.5 mm pixels: radius 1 mm = 2 pixels
    result = Unsharp(radius_mm=1.0, amount=1.5)(case_of(meta(soft, affine)))
    out = result["image"][0].numpy()
    assert result["history"][-1]["sigma_voxels"] == [2.0, 2.0]
    edges = np.hypot(sobel(clean, 0), sobel(clean, 1)) > 0.1

    def gradient(a):
        return np.hypot(sobel(a, 0), sobel(a, 1))[edges].mean()

    assert gradient(out) > 1.5 * gradient(soft)
    assert abs(out.mean() - soft.mean()) < 1e-3 * (soft.max() - soft.min())
    reference = unsharp_mask(soft, radius=2.0, amount=1.5, preserve_range=True)
    assert np.abs(out - reference).max() < 0.01  # same definition; MONAI's erf kernel vs SciPy's sampled one
    clipped = Unsharp(radius_mm=1.0, amount=1.5, clip=True)(case_of(meta(soft, affine)))["image"]
    assert float(clipped.min()) >= soft.min() and float(clipped.max()) <= soft.max()
    # 3D with anisotropic spacing
    volume = anatomical()
    out3 = Unsharp(radius_mm=2.0)(case_of(volume))
    assert out3["history"][-1]["sigma_voxels"] == [1.0, 1.0, 1.0]
    assert torch.equal(out3["image"].affine, volume.affine) and out3["image"].dtype == torch.float32


# --------------------------------------------------------------------------- geometry


def blob_volume(shape, affine, centre_world, sigma_mm=4.0):
    """A Gaussian blob centred at a world position, sampled on the grid of ``affine``."""
    index = np.indices(shape).reshape(3, -1)
    xyz = (np.asarray(affine)[:3, :3] @ index) + np.asarray(affine)[:3, 3:4]
    d2 = ((xyz - np.asarray(centre_world)[:, None]) ** 2).sum(axis=0)
    return np.exp(-d2 / (2 * sigma_mm**2)).reshape(shape).astype(np.float32)


def test_resample_gives_target_spacing_and_keeps_world_positions():
    from voxpipe_plugins.common.tensors import spacing_of
    from voxpipe_plugins.enhance.geometry import Resample

    # LAS-like, anisotropic, off-centre: like a real scanner volume
    affine = np.array([[-0.8, 0, 0, 40.0], [0, 1.2, 0, -30.0], [0, 0, 3.0, -12.0], [0, 0, 0, 1]])
    shape = (40, 30, 10)
    centre = [25.0, -10.0, 6.0]
    image = meta(blob_volume(shape, affine, centre), affine)
    label = meta((image[0].numpy() > 0.5).astype(np.uint8), affine)
    result = Resample(spacing_mm=[1.0, 1.0, 1.0], label_keys=["label"])(case_of(image, label=label))
    out, out_label = result["image"], result["label"]
    np.testing.assert_allclose(spacing_of(out), (1.0, 1.0, 1.0), atol=1e-6)
    assert out.shape == out_label.shape and out.dtype == torch.float32 and out_label.dtype == torch.uint8
    assert set(np.unique(out_label.numpy())) <= {0, 1}
    np.testing.assert_allclose(world_centroid(out), world_centroid(image), atol=0.1)  # mm; 1 mm voxels
    np.testing.assert_allclose(world_centroid(out), centre, atol=0.2)
    np.testing.assert_allclose(world_centroid(label.float()), world_centroid(out_label.float()), atol=0.5)
    # same physical extent (voxel centres), to within one new voxel, and the same first voxel
    extent_before = (np.array(shape) - 1) * np.array([0.8, 1.2, 3.0])
    extent_after = (np.array(out.shape[1:]) - 1) * 1.0
    assert np.all(np.abs(extent_after - extent_before) <= 1.0), (extent_before, extent_after)
    np.testing.assert_allclose(world(out.affine.numpy(), [0, 0, 0]), world(affine, [0, 0, 0]), atol=1e-6)
    assert nib.aff2axcodes(out.affine.numpy()) == nib.aff2axcodes(affine)  # orientation kept
    step = result["history"][-1]
    assert step["spacing_before"] == [0.8, 1.2, 3.0] and step["spacing_after"] == [1.0, 1.0, 1.0]
    # a single marker voxel: after nearest resampling from 2 mm to 1 mm it sits at the same world point
    coarse = np.array([[0, 0, -2.0, 10.0], [2.0, 0, 0, -5.0], [0, 2.0, 0, 3.0], [0, 0, 0, 1]])  # oblique axes
    marker = np.zeros((10, 12, 8), np.float32)
    marker[5, 6, 3] = 1.0
    fine = Resample(spacing_mm=[1.0], mode="nearest")(case_of(meta(marker, coarse)))["image"]
    where = np.round(np.linalg.solve(fine.affine.numpy(), np.r_[world(coarse, [5, 6, 3]), 1.0])[:3]).astype(int)
    assert fine[0][tuple(where)] == 1.0
    np.testing.assert_allclose(world(fine.affine.numpy(), where), world(coarse, [5, 6, 3]), atol=1e-6)
    # 2D, keep one axis, and refusals
    flat = meta(np.random.default_rng(0).random((30, 20)).astype(np.float32), np.diag([0.5, 2.0, 1.0, 1.0]))
    for mode in ("bilinear", "bicubic"):
        out2 = Resample(spacing_mm=[1.0, 0], mode=mode)(case_of(flat))["image"]
        np.testing.assert_allclose(spacing_of(out2), (1.0, 2.0), atol=1e-6)
        assert out2.shape[2] == 20 and abs((out2.shape[1] - 1) * 1.0 - 29 * 0.5) <= 1.0
    with pytest.raises(StageInputError, match="2D images only"):
        Resample(spacing_mm=[1.0], mode="bicubic")(case_of(image))
    with pytest.raises(StageInputError, match="2 values or one"):
        Resample(spacing_mm=[1.0, 1.0, 1.0])(case_of(flat))
    with pytest.raises(StageInputError, match="share one grid"):
        Resample(spacing_mm=[1.0], label_keys=["label"])(case_of(image, label=meta(np.zeros((4, 4, 4), np.uint8))))


def test_reorient_gives_axcodes_and_keeps_world_coordinates():
    from voxpipe_plugins.enhance.geometry import Reorient

    image = anatomical()
    assert "".join(nib.aff2axcodes(image.affine.numpy())) == "LAS"
    data = image[0].numpy()
    marker = np.unravel_index(int(np.argmax(data)), data.shape)
    label = meta((data > np.percentile(data, 90)).astype(np.uint8), image.affine)
    for codes in ("RAS", "LPS", "PIR"):
        result = Reorient(axcodes=codes, keys=["image", "label"])(case_of(image, label=label))
        out = result["image"]
        assert "".join(nib.aff2axcodes(out.affine.numpy())) == codes
        moved = np.unravel_index(int(np.argmax(out[0].numpy())), out.shape[1:])
        np.testing.assert_allclose(world(out.affine.numpy(), moved), world(image.affine.numpy(), marker), atol=1e-6)
        assert float(out.sum()) == pytest.approx(float(image.sum()))
        assert result["label"].dtype == torch.uint8 and int(result["label"].sum()) == int(label.sum())
        assert result["history"][-1]["axcodes_before"] == "LAS" and result["history"][-1]["axcodes_after"] == codes
    flat = meta(np.arange(12, dtype=np.float32).reshape(3, 4), np.diag([-1.0, 1.0, 1.0, 1.0]))
    out = Reorient(axcodes="RAS")(case_of(flat))["image"]
    assert out.shape == (1, 3, 4) and "".join(nib.aff2axcodes(out.affine.numpy()))[:2] == "RA"
    np.testing.assert_array_equal(out[0].numpy(), np.arange(12, dtype=np.float32).reshape(3, 4)[::-1])


# --------------------------------------------------------------------------- composition, configs


def test_every_stage_in_a_plain_monai_compose_2d_and_3d():
    from monai.transforms import Compose

    stages = all_stages()
    volume = anatomical()
    flat = meta(camera()[::4, ::4].copy())
    for image in (volume, flat):
        result = Compose(list(stages.values()))(case_of(image))
        assert [h["op"] for h in result["history"]] == list(stages)
        out = result["image"]
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert out.ndim == image.ndim and "LPS".startswith("".join(nib.aff2axcodes(out.affine.numpy()))[: out.ndim - 1])
        json.dumps(result["history"])  # what case.json will hold


CT_CONFIG = """\
version: 1
name: ct-enhance
device: cpu
stages:
  - use: load.nifti
  - use: enhance.reorient
    with: {axcodes: RAS}
  - use: enhance.resample
    with: {spacing_mm: [2.0]}
  - use: enhance.window
    id: window
    with: {preset: abdomen}
  - use: denoise.gaussian
    with: {sigma_mm: 1.0}
  - use: enhance.unsharp
    with: {radius_mm: 2.0, amount: 0.5}
  - use: enhance.clahe
    with: {kernel_mm: 32}
  - use: enhance.gamma
    with: {gamma: 0.9}
  - use: enhance.histeq
  - use: enhance.normalize
    with: {mask_threshold: 0.05}
  - use: write.nifti
"""


def ct_phantom(shape=(48, 40, 12)) -> np.ndarray:
    """A CT-like int16 volume in HU: air, a soft-tissue body, a denser organ and a bone rod."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    hu = np.full(shape, -1000.0)
    hu[(x / 0.8) ** 2 + (y / 0.7) ** 2 < 1] = 40
    hu[((x - 0.3) / 0.3) ** 2 + (y / 0.3) ** 2 < 1] = 90
    hu[(x + 0.4) ** 2 + (y + 0.2) ** 2 < 0.01] = 900
    hu += np.random.default_rng(5).normal(0, 15, shape)
    return hu.astype(np.int16)


def test_config_runs_through_cli_and_api(cli, write_config, tmp_path):
    import voxpipe

    folder = tmp_path / "input"
    affine = np.array([[-0.9, 0, 0, 20.0], [0, -0.9, 0, 18.0], [0, 0, 4.0, -20.0], [0, 0, 0, 1]])  # LPS-like
    write_nifti(folder / "ct.nii.gz", ct_phantom(), affine)
    config = write_config(CT_CONFIG)
    assert cli("validate", config).exit_code == 0
    result = cli("run", config, "-i", folder, "-o", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    (case_dir,) = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("case-")]
    record = json.loads((case_dir / "case.json").read_text())
    ops = [h["op"] for h in record["history"]]
    assert ops == [
        "load.nifti",
        "enhance.reorient",
        "enhance.resample",
        "enhance.window",
        "denoise.gaussian",
        "enhance.unsharp",
        "enhance.clahe",
        "enhance.gamma",
        "enhance.histeq",
        "enhance.normalize",
        "write.nifti",
    ]
    written = nib.load(case_dir / "image.nii.gz")
    assert nib.aff2axcodes(written.affine) == ("R", "A", "S")
    np.testing.assert_allclose(written.header.get_zooms()[:3], (2.0, 2.0, 2.0), atol=1e-5)
    assert np.isfinite(written.get_fdata()).all()
    # the Python API, with an override, and a bad value caught at validation with the field named
    summary = voxpipe.run(config, folder, tmp_path / "api", overrides=["window.preset=bone"])
    assert summary.exit_code == 0
    bad = write_config(CT_CONFIG.replace("{preset: abdomen}", "{preset: abdomen, level: 40}"), "bad.yaml")
    checked = cli("validate", bad)
    assert checked.exit_code == 2 and "window" in checked.stderr and "preset" in checked.stderr


def test_bad_case_fails_with_one_line_in_the_manifest(cli, write_config, tmp_path):
    folder = tmp_path / "input"
    data = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
    data[3, 4, 5] = np.nan
    write_nifti(folder / "nan.nii.gz", data)
    write_nifti(folder / "ok.nii.gz", np.random.default_rng(1).random((16, 16, 8)).astype(np.float32))
    config = write_config("version: 1\nname: t\ndevice: cpu\nstages:\n  - use: load.nifti\n  - use: enhance.clahe\n")
    result = cli("run", config, "-i", folder, "-o", tmp_path / "out")
    assert result.exit_code == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    errors = [c["error"] for c in manifest["cases"] if c["status"] == "failed"]
    assert len(errors) == 1 and "1 NaN or infinite voxels" in errors[0] and "\n" not in errors[0]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("stage_id", ENHANCE_IDS)
def test_bad_inputs_refused_or_handled(stage_id):
    stage = all_stages()[stage_id]
    rng = np.random.default_rng(0)
    good = rng.random((12, 10, 6)).astype(np.float32) * 100

    for bad_value in (np.nan, np.inf):
        data = good.copy()
        data[1, 2, 3] = bad_value
        if stage_id == "enhance.reorient":  # an exact permutation: values pass through untouched
            out = stage(case_of(meta(data)))["image"]
            assert int((~torch.isfinite(out)).sum()) == 1
            continue
        with pytest.raises(StageInputError, match=r"^" + stage_id + ": image has 1 NaN or infinite voxels"):
            stage(case_of(meta(data)))

    for shape in ((1, 4, 4, 4, 3), (5,), (6, 7)):  # 4D (channel + 4 spatial), no spatial axis, missing channel axis
        with pytest.raises(StageInputError, match=r"^" + stage_id + ": expected a channel-first 2D or 3D image"):
            stage(case_of(torch.zeros(shape)))

    integer = stage(case_of(meta(good.astype(np.int16))))["image"]
    assert integer.dtype == (torch.int16 if stage_id == "enhance.reorient" else torch.float32)

    constant = meta(np.full((12, 10, 6), 7.0, np.float32))
    try:
        out = stage(case_of(constant))["image"]
    except StageInputError as exc:
        assert str(exc).startswith(stage_id) and "constant" in str(exc) and "\n" not in str(exc)
        assert stage_id in {"enhance.normalize", "enhance.histeq", "enhance.clahe"}
    else:
        assert torch.isfinite(out).all()
        assert stage_id not in {"enhance.normalize", "enhance.histeq", "enhance.clahe"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_gpu_paths_agree_with_cpu():
    from voxpipe_plugins.enhance.geometry import Resample
    from voxpipe_plugins.enhance.histeq import HistogramEqualize
    from voxpipe_plugins.enhance.unsharp import Unsharp

    image = anatomical()
    for cpu_stage, gpu_stage, tol in (
        (HistogramEqualize(), HistogramEqualize(device="cuda"), 1e-4),
        (Unsharp(radius_mm=2.0), Unsharp(radius_mm=2.0, device="cuda"), 1e-3),
        (Resample(spacing_mm=[1.0]), Resample(spacing_mm=[1.0], device="cuda"), 1e-3),
    ):
        cpu = cpu_stage(case_of(image))["image"]
        gpu = gpu_stage(case_of(image))["image"]
        assert gpu.device.type == "cpu", "results come back to where the image was"
        scale = float(cpu.abs().max())
        np.testing.assert_allclose(gpu.numpy(), cpu.numpy(), atol=tol * scale)

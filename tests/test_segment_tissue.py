"""segment.tissue (issue 20): EM + partial volume + hidden-MRF brain tissue classes and probability maps.

Measured on the skull-stripped phantom of ``voxpipe_plugins.segment.tissue_phantom`` (known
CSF/GM/WM, partial volume from a 3x finer grid, Gaussian noise): the thresholds below sit a
little under what the stage reached when they were written (docs/brain-tissue.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxpipe_plugins.common.tensors import make_metatensor
from voxpipe_plugins.segment.phantoms import dice
from voxpipe_plugins.segment.tissue_phantom import tissue_phantom

PROBS = ("csf_prob", "gm_prob", "wm_prob")


def image_of(phantom, scale: float = 1.0):
    return make_metatensor(np.ascontiguousarray(phantom.image * scale)[None], phantom.affine)


def run(phantom, scale: float = 1.0, **params):
    from voxpipe_plugins.segment.tissue_hmrf import TissueSegmenter

    return TissueSegmenter(**params)({"image": image_of(phantom, scale)})


def dices(label, phantom) -> list[float]:
    return [dice(label == v, phantom.truth["classes"] == v) for v in (1, 2, 3)]


@pytest.fixture(scope="module")
def clean():
    return tissue_phantom(noise=0.04)


@pytest.fixture(scope="module")
def noisy():
    return tissue_phantom(noise=0.10, seed=1)


@pytest.fixture(scope="module")
def clean_out(clean):
    return run(clean)


def test_classes_match_the_truth_and_are_named(clean, clean_out):
    label = clean_out["label"].numpy()[0]
    assert clean_out["label"].meta["label_names"] == {0: "background", 1: "csf", 2: "gray_matter", 3: "white_matter"}
    csf, gm, wm = dices(label, clean)
    assert csf >= 0.92 and gm >= 0.93 and wm >= 0.95, (csf, gm, wm)
    assert not label[~clean.truth["brain"]].any()  # 0 outside the (non-zero) mask
    fitted = clean_out["history"][-1]
    assert fitted["op"] == "segment.tissue" and fitted["means"] == sorted(fitted["means"])


def test_probability_maps_sum_to_one_on_the_image_grid(clean, clean_out):
    image = image_of(clean)
    brain = clean.truth["brain"]
    probs = [clean_out[key] for key in PROBS]
    for prob in probs:
        assert prob.shape == image.shape and prob.dtype == torch.float32
        assert torch.allclose(prob.affine.double(), image.affine.double())
        values = prob.numpy()[0]
        assert values.min() >= 0 and values.max() <= 1 and not values[~brain].any()
    stack = np.stack([p.numpy()[0] for p in probs])
    np.testing.assert_allclose(stack.sum(axis=0)[brain], 1.0, atol=1e-5)
    np.testing.assert_array_equal(stack.argmax(axis=0)[brain] + 1, clean_out["label"].numpy()[0][brain])
    # partial volume: mixed voxels get fractional memberships that follow the true fractions
    truth = clean.truth["fractions"]
    mixed = brain & (truth.max(axis=0) < 0.9)
    assert mixed.sum() > 1000
    error = np.abs(stack[:, mixed] - truth[:, mixed]).mean()
    assert error < 0.2, error


def test_deterministic(clean, clean_out):
    again = run(clean)
    for key in ("label", *PROBS):
        np.testing.assert_array_equal(again[key].numpy(), clean_out[key].numpy())


def test_free_of_intensity_units(clean, clean_out):
    scaled = run(clean, scale=1000.0)
    assert (scaled["label"].numpy() == clean_out["label"].numpy()).mean() > 0.999


@pytest.mark.parametrize("value", [100.0, -100.0, 1e30])
def test_a_few_extreme_voxels_take_no_class(clean, value):
    """Hot (or cold) voxels, 0.02 % of the brain, would take a class of their own: they are clipped into the end classes."""
    image = clean.image.copy()
    where = np.flatnonzero(clean.truth["classes"] == 3)[::500][:20]
    image.reshape(-1)[where] = value
    from voxpipe_plugins.segment.tissue_hmrf import TissueSegmenter

    out = TissueSegmenter()({"image": make_metatensor(image[None], clean.affine)})
    assert min(dices(out["label"].numpy()[0], clean)) > 0.9


def test_spatial_prior_helps_at_high_noise(noisy):
    plain = np.mean(dices(run(noisy, beta=0.0, partial_volume=False)["label"].numpy()[0], noisy))
    prior = np.mean(dices(run(noisy, beta=1.0)["label"].numpy()[0], noisy))
    assert prior > plain + 0.015, (plain, prior)


def test_bias_field_estimated_inside_em():
    phantom = tissue_phantom(noise=0.03, bias=0.4, seed=3)
    plain = np.mean(dices(run(phantom, beta=1.0)["label"].numpy()[0], phantom))
    out = run(phantom, beta=1.0, bias_fwhm_mm=60.0)
    corrected = np.mean(dices(out["label"].numpy()[0], phantom))
    assert corrected > plain + 0.01, (plain, corrected)
    assert out["history"][-1]["bias_fwhm_mm"] == 60.0


def test_neighbour_weights_follow_the_spacing_in_mm():
    from voxpipe_plugins.segment.tissue_model import neighbour_kernel

    for neighbours, count in ((6, 6), (18, 18), (26, 26)):
        kernel = neighbour_kernel((1.0, 1.0, 1.0), neighbours)
        assert (kernel > 0).sum() == count and kernel[1, 1, 1] == 0 and kernel.sum() == pytest.approx(1.0)
    kernel = neighbour_kernel((1.0, 1.0, 3.0), 26)
    assert kernel[1, 1, 0] == pytest.approx(kernel[1, 0, 1] / 3)  # a 3 mm neighbour counts a third of a 1 mm one
    assert kernel[0, 1, 1] == pytest.approx(kernel[1, 0, 1])
    assert kernel[0, 0, 0] == pytest.approx(kernel[1, 0, 1] / np.sqrt(11))
    assert (neighbour_kernel((1.0, 2.0), 6) > 0).sum() == 4 and (neighbour_kernel((1.0, 2.0), 26) > 0).sum() == 8


def test_anisotropic_volume():
    phantom = tissue_phantom(shape=(48, 56, 24), spacing=(2.5, 2.5, 5.0), noise=0.08, seed=2)
    plain = dices(run(phantom, beta=0.0)["label"].numpy()[0], phantom)
    prior = dices(run(phantom, beta=1.0)["label"].numpy()[0], phantom)
    assert min(prior) >= 0.8 and np.mean(prior) > np.mean(plain), (plain, prior)


def test_mask_key_and_2d():
    phantom = tissue_phantom(noise=0.04)
    brain = make_metatensor(phantom.truth["brain"].astype(np.float32)[None], phantom.affine)
    image = image_of(phantom)
    from voxpipe_plugins.segment.tissue_hmrf import TissueSegmenter

    out = TissueSegmenter(mask_key="brain", prob_keys=[])({"image": image, "brain": brain})
    assert not any(key in out for key in PROBS)
    assert min(dices(out["label"].numpy()[0], phantom)) > 0.9
    middle = phantom.image.shape[2] // 2
    flat = make_metatensor(np.ascontiguousarray(phantom.image[:, :, middle])[None], np.diag([2.5, 2.5, 1.0, 1.0]))
    out = TissueSegmenter(beta=1.0)({"image": flat})
    truth = phantom.truth["classes"][:, :, middle]
    assert min(dice(out["label"].numpy()[0] == v, truth == v) for v in (1, 2, 3)) > 0.8
    assert out["gm_prob"].shape == flat.shape


def test_empty_or_flat_mask_is_one_clear_error():
    from voxpipe_plugins.common.checks import StageInputError
    from voxpipe_plugins.segment.tissue_hmrf import TissueSegmenter

    for array in (np.zeros((20, 20, 20), np.float32), np.pad(np.ones((6, 6, 6), np.float32), 7)):
        with pytest.raises(StageInputError) as caught:
            TissueSegmenter()({"image": make_metatensor(array[None], np.eye(4))})
        message = str(caught.value)
        assert "\n" not in message and "segment.tissue" in message and "mask_key" in message


@pytest.mark.parametrize(
    "bad",
    [
        {"beta": -1},
        {"neighbours": 7},
        {"variance": "diagonal"},
        {"classes": 4},  # 3 prob_keys for 4 classes
        {"names": ["a", "b"]},
        {"prob_keys": ["label", "gm", "wm"]},
        {"iterations": -1},
        {"mask_labels": [1]},
    ],
)
def test_bad_params_are_one_line_validation_errors(cli, write_config, bad):
    import pydantic
    import yaml

    from voxpipe_plugins.segment.plugin import BrainTissueParams

    with pytest.raises(pydantic.ValidationError):
        BrainTissueParams.model_validate(bad)
    config = write_config(
        yaml.safe_dump({"version": 1, "name": "t", "stages": [{"use": "load.auto"}, {"use": "segment.tissue", "with": bad}]})
    )
    result = cli("validate", config)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "Traceback" not in result.stderr, result.stderr


def test_start_finds_a_small_class_beside_a_dominant_one():
    """White matter filling most of a tight brain mask: Lloyd's from quantiles split it in two and merged CSF with GM."""
    from voxpipe_plugins.segment.tissue import histogram_centres, kmeans_1d

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.15, 0.02, 6_600), rng.normal(0.55, 0.02, 27_500), rng.normal(0.85, 0.02, 107_000)])
    rng.shuffle(x)
    for centres in (histogram_centres(x, 3), kmeans_1d(x, 3)):
        assert np.allclose(centres, [0.15, 0.55, 0.85], atol=0.01), centres
    assert kmeans_1d(np.array([1.0, 1, 1, 2, 2, 2, 5, 5, 5]), 3).tolist() == [1.0, 2.0, 5.0]
    assert np.allclose(kmeans_1d(np.array([1.0, 2.0]), 3), [1.0, 1.5, 2.0])  # fewer values than classes: no crash


def test_whole_head_phantom_brain_gets_its_grey_matter():
    """segment.tissue inside a tight brain mask of the head phantom: the outer CSF cut away as brain extraction does,
    so CSF is 6 % of the voxels and white matter 74 %."""
    from scipy import ndimage

    from tests.head_phantom import CSF, GM, WM, head_phantom
    from voxpipe_plugins.segment.tissue_hmrf import TissueSegmenter

    phantom = head_phantom(noise=0.04, bias=0.0, seed=1)
    brain = phantom.brain.astype(bool)
    brain = ndimage.binary_erosion(brain, iterations=3) | (brain & (phantom.tissue != CSF))
    case = {
        "image": make_metatensor(phantom.image[None], phantom.affine),
        "brain": make_metatensor(brain.astype(np.float32)[None], phantom.affine),
    }
    label = TissueSegmenter(mask_key="brain", beta=3.0)(case)["label"].numpy()[0]
    scores = [dice(label == v, (phantom.tissue == t) & brain) for v, t in ((1, CSF), (2, GM), (3, WM))]
    assert scores[1] > 0.9 and scores[2] > 0.95 and scores[0] > 0.6, scores


def _blurred_shells(seed: int = 0):
    """CSF / GM / WM shells (0.3, 0.65, 0.9) with wobbly surfaces, blurred: a wide partial-volume zone at every edge."""
    from scipy import ndimage

    n = 64
    rng = np.random.default_rng(seed)
    radius = np.sqrt(((np.indices((n, n, n)) - n / 2 + 0.5) ** 2).sum(axis=0))
    radius *= 1 + 4 * ndimage.gaussian_filter(rng.normal(size=(n, n, n)), 4)
    classes = np.where(radius < 14, 3, np.where(radius < 20, 2, np.where(radius < 26, 1, 0)))
    image = ndimage.gaussian_filter(np.array([0, 0.3, 0.65, 0.9], np.float32)[classes], 1.2)
    return np.where(classes > 0, image + rng.normal(0, 0.02, image.shape), 0).astype(np.float32)


def test_class_means_come_from_the_pure_voxels():
    """Edge voxels are part-volume whatever the mixture says: the fitted GM/WM means are the pure tissues', not pulled to the edge."""
    from voxpipe_plugins.segment.tissue_hmrf import TissueSegmenter

    image = _blurred_shells()
    means = TissueSegmenter(beta=2.0)({"image": make_metatensor(image[None], np.eye(4))})["history"][-1]["means"]
    assert abs(means[1] - 0.65) < 0.015 and abs(means[2] - 0.9) < 0.02, means

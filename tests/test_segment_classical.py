"""Classical segmenters, label post-processing, recipes and the montage writer (issue 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO, nibabel_data, write_nifti

from voxpipe_plugins.common.tensors import make_metatensor
from voxpipe_plugins.segment.phantoms import brain_phantom, ct_phantom, dice


def mt(array: np.ndarray, spacing=(1.0, 1.0, 1.0)):
    affine = np.diag([*spacing[:3], *(1.0,) * (4 - len(spacing[:3]))])
    return make_metatensor(np.ascontiguousarray(array, dtype=np.float32)[None], affine)


def lab(case, key="label") -> np.ndarray:
    return case[key].numpy()[0]


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(shape, centre, spacing)], indexing="ij", sparse=True)
    return sum(g**2 for g in grids) <= radius**2


@pytest.fixture(scope="module")
def ct():
    return ct_phantom()


# --------------------------------------------------------------------------- segmenters


def test_threshold_named_ranges_and_geometry(ct):
    from voxpipe_plugins.segment.threshold import ThresholdSegmenter

    image = make_metatensor(ct.image[None], ct.affine)
    stage = ThresholdSegmenter(
        ranges=[{"name": "lung", "min": -1000, "max": -400}, {"name": "bone", "min": 500}, {"name": "soft", "min": -200, "max": 150}]
    )
    out = stage({"image": image, "history": []})
    label = out["label"]
    assert label.meta["label_names"] == {0: "background", 1: "lung", 2: "bone", 3: "soft"}
    assert torch.allclose(label.affine.double(), image.affine.double()) and label.dtype == torch.uint8
    assert dice(lab(out) == 2, ct.truth["bone"]) > 0.99
    assert out["history"][-1]["op"] == "segment.threshold"
    assert "label" not in {"image": image}  # input dict untouched


def test_multiotsu_three_classes_2d_and_3d():
    from voxpipe_plugins.segment.threshold import MultiOtsuSegmenter

    rng = np.random.default_rng(1)
    truth = np.zeros((60, 60), dtype=int)
    truth[:, 20:40] = 1
    truth[:, 40:] = 2
    image = np.choose(truth, [0.0, 50.0, 100.0]) + rng.normal(0, 5, truth.shape)
    out = MultiOtsuSegmenter(classes=3, names=["dark", "mid", "bright"])({"image": mt(image, (1, 1))})
    assert out["label"].meta["label_names"] == {0: "dark", 1: "mid", 2: "bright"}
    assert all(dice(lab(out) == c, truth == c) > 0.97 for c in range(3))
    volume = np.repeat(image[..., None], 4, axis=2)
    mask = np.ones_like(volume)
    mask[:, :, 0] = 0
    out3 = MultiOtsuSegmenter(classes=3, mask_key="m")({"image": mt(volume), "m": mt(mask)})
    assert set(np.unique(lab(out3)[:, :, 0])) == {0} and set(np.unique(lab(out3))) == {0, 1, 2, 3}


def test_region_grow_connected_voxel_and_world_seeds():
    from voxpipe_plugins.segment.region_grow import RegionGrowSegmenter

    shape, spacing = (40, 40, 20), (1.0, 1.0, 2.0)
    a, b = ball(shape, (12, 20, 10), 6, spacing), ball(shape, (30, 20, 10), 6, spacing)
    image = np.where(a | b, 100.0, 0.0) + np.random.default_rng(0).normal(0, 3, shape)
    meta_image = mt(image, spacing)
    out = RegionGrowSegmenter(seeds=[[12, 20, 10]], lower=50, upper=150, name="left")({"image": meta_image})
    assert dice(lab(out), a) > 0.99 and not lab(out)[b].any()
    assert out["label"].meta["label_names"][1] == "left"
    world = (np.diag([*spacing, 1.0]) @ np.array([30, 20, 10, 1.0]))[:3].tolist()  # voxel -> RAS mm
    out_w = RegionGrowSegmenter(seeds=[world], seed_space="world", lower=50, upper=150)({"image": meta_image})
    assert dice(lab(out_w), b) > 0.99


def test_region_grow_confidence_connected():
    from voxpipe_plugins.segment.region_grow import RegionGrowSegmenter

    shape = (48, 48, 24)
    organ = ball(shape, (24, 24, 12), 9)
    rng = np.random.default_rng(3)
    image = np.where(organ, 120.0, 40.0) + rng.normal(0, 8, shape)
    out = RegionGrowSegmenter(seeds=[[24, 24, 12]], method="confidence", multiplier=2.5, iterations=5, initial_radius=2)(
        {"image": mt(image)}
    )
    assert dice(lab(out), organ) > 0.9
    assert len(out["history"][-1]["intervals"]) >= 2


def test_region_grow_seed_outside_image_is_clear():
    from voxpipe_plugins.common.checks import StageInputError
    from voxpipe_plugins.segment.region_grow import RegionGrowSegmenter

    with pytest.raises(StageInputError, match="outside the image"):
        RegionGrowSegmenter(seeds=[[99, 0, 0]], lower=0)({"image": mt(np.zeros((8, 8, 8)))})


def test_watershed_splits_touching_balls_with_distance_and_h_maxima():
    from voxpipe_plugins.segment.watershed import WatershedSegmenter

    shape = (56, 36, 36)
    a, b = ball(shape, (18, 18, 18), 10), ball(shape, (36, 18, 18), 10)
    image = np.where(a | b, 1.0, 0.0)
    out = WatershedSegmenter(surface="distance", markers="h_maxima", h=2.0, mask_threshold=0.5)({"image": mt(image)})
    result = lab(out)
    assert out["history"][-1]["regions"] == 2
    first = result[18, 18, 18]
    second = result[36, 18, 18]
    assert first != second and first and second
    assert dice(result == first, a & ~b) > 0.9 and dice(result == second, b & ~a) > 0.9


def test_watershed_gradient_with_label_markers_keeps_names():
    from voxpipe_plugins.common.tensors import like
    from voxpipe_plugins.segment.watershed import WatershedSegmenter

    shape = (40, 40, 10)
    organ = ball(shape, (20, 20, 5), 10, (1, 1, 4))
    image = np.where(organ, 100.0, 10.0) + np.random.default_rng(0).normal(0, 2, shape)
    markers = np.zeros(shape, dtype=np.uint8)
    markers[20, 20, 5] = 1
    markers[1, 1, :] = 2
    image_t = mt(image, (1, 1, 4))
    marker_t = like(image_t, torch.from_numpy(markers[None]), label_names={0: "background", 1: "organ", 2: "outside"})
    out = WatershedSegmenter(surface="gradient", sigma_mm=1.0, markers="label", marker_key="seeds")({"image": image_t, "seeds": marker_t})
    assert out["label"].meta["label_names"][1] == "organ"
    assert dice(lab(out) == 1, organ) > 0.9


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_tissue_classes_on_brain_phantom(method):
    from voxpipe_plugins.segment.tissue import GMMSegmenter, KMeansSegmenter

    phantom = brain_phantom(shape=(40, 48, 40), spacing=(3.0, 3.0, 3.0))
    cls = KMeansSegmenter if method == "kmeans" else GMMSegmenter
    stage = cls(classes=3, mask_key="brain", names=["csf", "gm", "wm"])
    image = mt(phantom.image, (3, 3, 3))
    out = stage({"image": image, "brain": mt(phantom.truth["brain"].astype(np.float32), (3, 3, 3))})
    result = lab(out)
    assert out["label"].meta["label_names"] == {0: "background", 1: "csf", 2: "gm", 3: "wm"}
    for value in (1, 2, 3):
        assert dice(result == value, phantom.truth["classes"] == value) >= 0.8, value
    means = [phantom.image[result == v].mean() for v in (1, 2, 3)]
    assert means == sorted(means)  # ordered by intensity
    assert not result[~phantom.truth["brain"]].any()


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (1000.0, -500.0), (1e-3, 7.0), (-1.0, 0.0)])
def test_gmm_is_deterministic_free_of_units_and_ordered_by_mean(scale, offset):
    """The same classes whatever the intensity units (a negative scale reverses their order), run after run."""
    from voxpipe_plugins.segment.tissue import GMMSegmenter

    phantom = brain_phantom(shape=(40, 48, 40), spacing=(3.0, 3.0, 3.0), noise=0.08)
    brain = mt(phantom.truth["brain"].astype(np.float32), (3, 3, 3))
    reference = lab(GMMSegmenter(classes=3, mask_key="brain")({"image": mt(phantom.image, (3, 3, 3)), "brain": brain}))
    stage = GMMSegmenter(classes=3, mask_key="brain", max_samples=20_000)
    image = mt(phantom.image * scale + offset, (3, 3, 3))
    first, second = (stage({"image": image, "brain": brain}) for _ in range(2))
    np.testing.assert_array_equal(lab(first), lab(second))
    expected = reference if scale > 0 else np.where(reference > 0, 4 - reference, 0)
    assert (lab(first) == expected).mean() > 0.995
    fitted = first["history"][-1]
    assert fitted["op"] == "segment.gmm" and fitted["means"] == sorted(fitted["means"]) and len(fitted["weights"]) == 3


def test_segmenters_in_a_plain_monai_compose_2d():
    from monai.transforms import Compose

    from voxpipe_plugins.label.ops import LargestComponent
    from voxpipe_plugins.segment.threshold import ThresholdSegmenter

    image = np.zeros((30, 30), dtype=np.float32)
    image[5:20, 5:20] = 1
    image[25:28, 25:28] = 1
    out = Compose([ThresholdSegmenter(ranges=[{"name": "square", "min": 0.5}]), LargestComponent()])({"image": mt(image, (1, 1))})
    assert lab(out).sum() == 15 * 15 and out["label"].meta["label_names"][1] == "square"


# --------------------------------------------------------------------------- post-processing


def test_footprint_follows_spacing():
    from voxpipe_plugins.label.ops import footprint

    assert footprint(2.0, (1.0, 1.0, 1.0)).shape == (5, 5, 5)
    assert footprint(2.0, (0.5, 1.0, 4.0)).shape == (9, 5, 1)
    assert footprint(1.0, (0.7, 0.7, 5.0)).shape == (3, 3, 1)


@pytest.mark.parametrize("radius", [2.6, 7.0])  # shifted copies (small element), distance transforms (large)
def test_morphology_matches_scipy_with_the_ellipsoid(radius):
    from scipy import ndimage

    from voxpipe_plugins.label.ops import SHIFT_MAX_OFFSETS, dilate, erode, footprint

    rng = np.random.default_rng(0)
    mask = np.zeros((44, 40, 20), dtype=bool)
    mask[12:-12, 10:-10, 5:-5] = rng.random((20, 20, 10)) > 0.3
    mask[2:10, 2:30, 2:12] = True  # a block near the border: outside counts as background
    spacing = (0.8, 1.2, 2.5)
    element = footprint(radius, spacing)
    assert (element.sum() <= SHIFT_MAX_OFFSETS) == (radius < 5)
    assert np.array_equal(dilate(mask, radius, spacing), ndimage.binary_dilation(mask, element))
    assert np.array_equal(erode(mask, radius, spacing), ndimage.binary_erosion(mask, element, border_value=0))


def test_open_radius_in_mm_depends_on_spacing():
    from voxpipe_plugins.label.ops import Opening

    slab = np.zeros((20, 20, 20), dtype=np.float32)
    slab[8:11, 3:17, 3:17] = 1  # 3 voxels thick along axis 0
    iso = Opening(radius_mm=2.0)({"label": mt(slab, (1, 1, 1))})
    assert not lab(iso).any()  # 3 mm thick: a 2 mm ball (5 mm across) does not fit
    coarse = Opening(radius_mm=2.0)({"label": mt(slab, (2, 1, 1))})  # 6 mm thick now
    assert lab(coarse)[9, 10, 10] == 1 and lab(coarse).sum() > 0.5 * slab.sum()
    assert coarse["history"][-1]["element_voxels"] == [3, 5, 5]
    assert any("empty" in w for w in iso["warnings"])


def test_close_fills_gap_only_in_background():
    from voxpipe_plugins.label.ops import Closing

    label = np.zeros((20, 20, 5), dtype=np.float32)
    label[3:9, 3:17, :] = 1
    label[11:17, 3:17, :] = 1
    label[9:11, 3:6, :] = 2  # another label in the gap is kept
    out = Closing(radius_mm=2.0, labels=[1])({"label": mt(label)})
    result = lab(out)
    assert (result[9:11, 8:14, 2] == 1).all()
    assert (result[9:11, 3:6, :] == 2).all()


def test_largest_component_fill_holes_and_components_in_mm3():
    from voxpipe_plugins.label.ops import Components, FillHoles, LargestComponent

    label = np.zeros((30, 30, 10), dtype=np.float32)
    label[2:20, 2:20, :] = 1
    label[8:12, 8:12, :] = 0  # a hole through every slice (open at top and bottom)
    label[25:28, 25:28, 3:6] = 1  # 27 voxels
    label[25, 2, 2] = 1  # 1 voxel
    spacing = (1.0, 1.0, 2.0)  # 2 mm³ voxels
    largest = LargestComponent()({"label": mt(label, spacing)})
    assert lab(largest)[25:28, 25:28].sum() == 0 and lab(largest)[5, 5, 5] == 1
    filled_slice = FillHoles(mode="slice")(largest)
    assert lab(filled_slice)[10, 10, 5] == 1
    filled_volume = FillHoles(mode="volume")(largest)
    assert lab(filled_volume)[10, 10, 5] == 0  # the hole reaches the volume's faces: not enclosed in 3D
    comps = Components(min_size=10.0, size_unit="mm3")({"label": mt(label, spacing)})
    assert set(np.unique(lab(comps))) == {0, 1, 2}  # the 2 mm³ speck dropped, 54 mm³ kept
    assert lab(comps)[26, 26, 4] == 2 and comps["label"].meta["label_names"][2] == "component_2"
    by_voxels = Components(min_size=60, size_unit="voxels", relabel=False)({"label": mt(label, spacing)})
    assert set(np.unique(lab(by_voxels))) == {0, 1} and lab(by_voxels)[26, 26, 4] == 0


def test_empty_masks_warn_once_and_do_not_crash():
    from monai.transforms import Compose

    from voxpipe_plugins.label.ops import Closing, Components, FillHoles, LargestComponent, Opening
    from voxpipe_plugins.segment.threshold import ThresholdSegmenter

    image = mt(np.zeros((10, 10, 4)))
    chain = Compose(
        [
            ThresholdSegmenter(ranges=[{"name": "x", "min": 5}]),
            LargestComponent(),
            FillHoles(),
            Opening(radius_mm=1),
            Closing(radius_mm=1),
            Components(min_size=3),
        ]
    )
    out = chain({"image": image})
    assert not lab(out).any()
    assert len(out["warnings"]) == 1 and "empty" in out["warnings"][0]


# --------------------------------------------------------------------------- recipes


@pytest.fixture(scope="module")
def ct_inputs(tmp_path_factory, ct):
    folder = tmp_path_factory.mktemp("ct-in")
    write_nifti(folder / "thorax.nii.gz", ct.image, ct.affine)
    return folder


@pytest.mark.parametrize("recipe, truth", [("ct-body-mask", "body"), ("ct-lungs", "lungs"), ("ct-bone", "bone")])
def test_ct_recipes_on_phantom(cli, tmp_path, ct, ct_inputs, recipe, truth):
    import nibabel as nib

    result = cli("run", REPO / "configs" / f"{recipe}.yaml", "-i", ct_inputs, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    (case_dir,) = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("case-")]
    label = np.asarray(nib.load(str(case_dir / "label.nii.gz")).dataobj)
    score = dice(label > 0, ct.truth[truth])
    assert score >= 0.9, (recipe, score)
    table = json.loads((case_dir / "label.labels.json").read_text())
    assert table["1"] == {"body": "body", "lungs": "lungs", "bone": "bone"}[truth]
    assert (case_dir / "montage.png").is_file()


def test_ct_recipe_on_real_dicom(cli, tmp_path):
    import shutil

    import nibabel as nib
    from pydicom.data import get_testdata_file

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm", download=False), folder / "CT_small.dcm")
    result = cli("run", REPO / "configs" / "ct-bone.yaml", "-i", folder, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    (case_dir,) = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("case-")]
    label = np.asarray(nib.load(str(case_dir / "label.nii.gz")).dataobj)
    assert 0.01 < (label > 0).mean() < 0.3  # the vertebra and ribs of this thoracic slice


def test_brain_recipe_on_phantom_and_real_t1(cli, tmp_path):
    """configs/brain-tissue.yaml on a skull-stripped phantom (scored) and on nibabel's real T1 (a crop inside the
    brain: it runs and its classes are ordered; configs/brain-tissue-head.yaml is for whole heads)."""
    import nibabel as nib

    from voxpipe_plugins.segment.tissue_phantom import tissue_phantom

    phantom = tissue_phantom(shape=(48, 56, 48), spacing=(2.5, 2.5, 2.5))
    folder = tmp_path / "in"
    write_nifti(folder / "phantom.nii.gz", phantom.image, phantom.affine)
    result = cli("run", REPO / "configs" / "brain-tissue.yaml", "-i", folder, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    (case_dir,) = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("case-")]
    label = np.asarray(nib.load(str(case_dir / "label.nii.gz")).dataobj)
    for value in (1, 2, 3):
        assert dice(label == value, phantom.truth["classes"] == value) >= 0.9, value
    assert json.loads((case_dir / "label.labels.json").read_text()) == {
        "0": "background",
        "1": "csf",
        "2": "gray_matter",
        "3": "white_matter",
    }
    probs = [nib.load(str(case_dir / f"{key}.nii.gz")) for key in ("csf_prob", "gm_prob", "wm_prob")]
    total = sum(np.asarray(prob.dataobj, dtype=np.float64) for prob in probs)
    np.testing.assert_allclose(total[phantom.truth["brain"]], 1.0, atol=1e-4)
    assert not total[~phantom.truth["brain"]].any()
    np.testing.assert_allclose(probs[1].affine, phantom.affine, atol=1e-5)
    assert (case_dir / "montage.png").stat().st_size > 1000

    real = tmp_path / "real"
    real.mkdir()
    (real / "anatomical.nii").write_bytes(nibabel_data("anatomical.nii").read_bytes())
    result = cli("run", REPO / "configs" / "brain-tissue.yaml", "-i", real, "-o", tmp_path / "out-real")
    assert result.exit_code == 0, result.stderr
    (case_dir,) = [p for p in (tmp_path / "out-real").iterdir() if p.name.startswith("case-")]
    label = np.asarray(nib.load(str(case_dir / "label.nii.gz")).dataobj)
    t1 = np.asarray(nib.load(str(real / "anatomical.nii")).dataobj)
    assert {1, 2, 3} <= set(np.unique(label).tolist())
    means = [t1[label == v].mean() for v in (1, 2, 3)]
    assert means == sorted(means)


def test_recipes_validate(cli):
    for recipe in ("ct-body-mask", "ct-lungs", "ct-bone", "brain-tissue"):
        result = cli("validate", REPO / "configs" / f"{recipe}.yaml")
        assert result.exit_code == 0, result.stderr


def test_params_reject_bad_values():
    import pydantic

    from voxpipe_plugins.label.plugin import MorphologyParams
    from voxpipe_plugins.segment.plugin import RegionGrowParams, ThresholdParams, TissueParams

    with pytest.raises(pydantic.ValidationError):
        ThresholdParams.model_validate({"ranges": [{"name": "x", "min": 5, "max": 1}]})
    with pytest.raises(pydantic.ValidationError):
        TissueParams.model_validate({"classes": 3, "names": ["a", "b"]})
    with pytest.raises(pydantic.ValidationError):
        RegionGrowParams.model_validate({"seeds": [[1, 2, 3]]})  # connected needs an interval
    with pytest.raises(pydantic.ValidationError):
        MorphologyParams.model_validate({"radius_mm": 0})


# --------------------------------------------------------------------------- montage


def test_montage_has_three_panels_and_legend_colours(tmp_path, ct):
    from PIL import Image

    from voxpipe_plugins.preview.montage import MontageWriter, colour_of
    from voxpipe_plugins.segment.threshold import ThresholdSegmenter

    image = make_metatensor(ct.image[None], ct.affine)
    case = ThresholdSegmenter(ranges=[{"name": "lungs", "min": -1000, "max": -400}, {"name": "bone", "min": 250}], mask_key=None)(
        {"image": image, "output_dir": tmp_path, "history": []}
    )
    MontageWriter(alpha=0.5)(case)
    picture = np.asarray(Image.open(tmp_path / "montage.png").convert("RGB"))
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert colour_of(1) in colours and colour_of(2) in colours  # legend swatches, exact colours
    assert case["history"][-1]["panels"] == 3 and case["history"][-1]["legend"] == ["lungs", "bone"]
    two_d = {"image": mt(np.random.default_rng(0).random((40, 30)), (1, 1)), "output_dir": tmp_path, "history": []}
    MontageWriter(label_key=None, filename="flat.png")(two_d)
    assert (tmp_path / "flat.png").is_file() and two_d["history"][-1]["panels"] == 1


def test_fortran_ordered_inputs_give_the_same_result():
    """NIfTI data arrive as Fortran-ordered views; the stages must not depend on the layout."""
    from voxpipe_plugins.label.ops import Components, FillHoles, Opening
    from voxpipe_plugins.segment.threshold import ThresholdSegmenter

    phantom = ct_phantom(shape=(48, 40, 20), spacing=(4.0, 4.0, 8.0))
    results = []
    for array in (phantom.image, np.asfortranarray(phantom.image)):
        image = make_metatensor(array[None], phantom.affine)
        case = ThresholdSegmenter(ranges=[{"name": "body", "min": -500}])({"image": image})
        for stage in (FillHoles(mode="slice"), Opening(radius_mm=5.0), Components(min_size=100.0)):
            case = stage(case)
        results.append((lab(case).copy(), case["history"][-2]["element_voxels"], case["history"][-3]["slice_axis"]))
    assert np.array_equal(results[0][0], results[1][0]) and results[0][1:] == results[1][1:]
    assert results[0][1] == [3, 3, 1] and results[0][2] == 2

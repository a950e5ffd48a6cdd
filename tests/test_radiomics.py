"""`radiomics.extract` against analytic and hand-computed ground truth.

Phantoms are digital (binary) spheres and ellipsoids with known volume and surface; the
GLCM is checked on Haralick's 4x4 example, whose matrix is in his 1973 paper, and
against scikit-image's independent implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from voxpipe_plugins.common.tensors import make_metatensor
from voxpipe_plugins.radiomics import glcm
from voxpipe_plugins.radiomics.discretise import fixed_bin_count, fixed_bin_width
from voxpipe_plugins.radiomics.extract import RadiomicsExtractor
from voxpipe_plugins.radiomics.plugin import RadiomicsParams


def ellipsoid(semi_axes_mm, spacing, margin=4, seed=0):
    """Binary ellipsoid mask centred in a grid of voxel ``spacing``, and a noisy image."""
    shape = [int(math.ceil(2 * a / s)) + 2 * margin for a, s in zip(semi_axes_mm, spacing)]
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    mask = sum((g / a) ** 2 for g, a in zip(grids, semi_axes_mm)) <= 1.0
    rng = np.random.default_rng(seed)
    image = np.where(mask, 100.0, 0.0) + rng.normal(0, 10, mask.shape)
    return mask, image.astype(np.float32)


def run_stage(image, mask, spacing, **params):
    affine = np.diag(list(spacing) + [1.0] * (4 - len(spacing)))
    if len(spacing) == 2:
        affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
    case = {
        "image": make_metatensor(image[None], affine),
        "label": make_metatensor(mask[None].astype(np.uint8), affine),
        "history": [],
        "features": {"other": np.ones(3, np.float32)},
    }
    stage = RadiomicsExtractor(**RadiomicsParams(**params).model_dump())
    case = stage(case)
    return dict(zip(case["feature_names"]["radiomics"], case["features"]["radiomics"].tolist())), case


def thomsen_surface(a, b, c, p=1.6075):
    """Knud Thomsen's ellipsoid surface approximation (relative error <= 1.06 %)."""
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 2.0), (0.8, 0.8, 2.5)])
def test_sphere_volume_surface_sphericity_within_three_percent(spacing):
    r = 10.0
    mask, image = ellipsoid((r, r, r), spacing)
    f, case = run_stage(image, mask, spacing, groups=["shape"])
    assert f["shape.volume_mm3"] == pytest.approx(4 / 3 * math.pi * r**3, rel=0.03)
    assert f["shape.surface_area_mm2"] == pytest.approx(4 * math.pi * r**2, rel=0.03)
    assert f["shape.sphericity"] == pytest.approx(1.0, abs=0.03)
    assert f["shape.max_3d_diameter_mm"] == pytest.approx(2 * r, abs=max(spacing))  # a digital object: within one voxel
    # other feature sets are left alone; names and values line up
    assert case["features"]["other"].tolist() == [1, 1, 1]
    assert len(case["feature_names"]["radiomics"]) == case["features"]["radiomics"].shape[0]
    assert case["features"]["radiomics"].dtype == np.float32


def test_ibsi_binary_mesh_surface_is_the_known_overestimate():
    """The `mesh` option is IBSI's binary mesh: its staircase surface is 5-15 % too large (why `smoothed` is the default)."""
    mask, image = ellipsoid((10, 10, 10), (1.0, 1.0, 1.0))
    f, _ = run_stage(image, mask, (1.0, 1.0, 1.0), groups=["shape"], surface="mesh")
    ratio = f["shape.surface_area_mm2"] / (4 * math.pi * 100)
    assert 1.05 < ratio < 1.15
    assert f["shape.sphericity"] < 0.95


def test_ellipsoid_in_anisotropic_voxels_gives_mm_values():
    a, b, c = 14.0, 9.0, 6.0
    mask, image = ellipsoid((a, b, c), (0.7, 1.0, 1.5))
    f, _ = run_stage(image, mask, (0.7, 1.0, 1.5), groups=["shape"])
    assert f["shape.volume_mm3"] == pytest.approx(4 / 3 * math.pi * a * b * c, rel=0.03)
    assert f["shape.surface_area_mm2"] == pytest.approx(thomsen_surface(a, b, c), rel=0.04)
    volume, surface = 4 / 3 * math.pi * a * b * c, thomsen_surface(a, b, c)
    assert f["shape.sphericity"] == pytest.approx((36 * math.pi * volume**2) ** (1 / 3) / surface, rel=0.04)
    assert f["shape.max_3d_diameter_mm"] == pytest.approx(2 * a, abs=1.5)
    assert f["shape.extent_i_mm"] == pytest.approx(2 * a, abs=2 * 0.7)
    assert f["shape.extent_j_mm"] == pytest.approx(2 * b, abs=2 * 1.0)
    assert f["shape.extent_k_mm"] == pytest.approx(2 * c, abs=2 * 1.5)
    # PCA axes of a solid ellipsoid: variance a^2/5 along each axis -> 4 sqrt(a^2/5)
    assert f["shape.major_axis_mm"] == pytest.approx(4 * a / math.sqrt(5), rel=0.03)
    assert f["shape.least_axis_mm"] == pytest.approx(4 * c / math.sqrt(5), rel=0.05)


def test_same_voxels_with_doubled_spacing_scale_mm_values():
    """Identical voxels, one axis twice as long: volume x2, extents on that axis x2, GLCM unchanged (voxel grid)."""
    mask, image = ellipsoid((8, 8, 8), (1.0, 1.0, 1.0))
    iso, _ = run_stage(image, mask, (1.0, 1.0, 1.0))
    stretched, _ = run_stage(image, mask, (1.0, 1.0, 2.0))
    assert stretched["shape.volume_mm3"] == pytest.approx(2 * iso["shape.volume_mm3"], rel=1e-4)
    assert stretched["shape.voxel_volume_mm3"] == pytest.approx(2 * iso["shape.voxel_volume_mm3"], rel=1e-6)
    assert stretched["shape.extent_k_mm"] == pytest.approx(2 * iso["shape.extent_k_mm"])
    assert stretched["shape.extent_i_mm"] == pytest.approx(iso["shape.extent_i_mm"])
    assert stretched["shape.max_3d_diameter_mm"] > 1.8 * iso["shape.max_3d_diameter_mm"]
    assert stretched["glcm.contrast"] == pytest.approx(iso["glcm.contrast"])
    assert stretched["firstorder.mean"] == pytest.approx(iso["firstorder.mean"])


def test_first_order_equals_numpy_on_masked_voxels():
    rng = np.random.default_rng(3)
    image = rng.gamma(2.0, 30.0, size=(12, 14, 10)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[2:10, 3:12, 1:8] = True
    mask[5, 5, 5] = False
    f, _ = run_stage(image, mask, (1.0, 1.0, 1.0), groups=["firstorder"], bin_count=16)
    x = image[mask].astype(np.float64)
    m, sd = x.mean(), x.std()
    p10, p25, p75, p90 = np.percentile(x, [10, 25, 75, 90])
    expected = {
        "mean": m,
        "variance": x.var(),
        "median": np.median(x),
        "minimum": x.min(),
        "maximum": x.max(),
        "p10": p10,
        "p90": p90,
        "iqr": p75 - p25,
        "range": np.ptp(x),
        "skewness": np.mean((x - m) ** 3) / sd**3,
        "kurtosis": np.mean((x - m) ** 4) / sd**4 - 3,
        "mad": np.mean(np.abs(x - m)),
        "medad": np.mean(np.abs(x - np.median(x))),
        "cov": sd / m,
        "energy": np.sum(x**2),
        "rms": np.sqrt(np.mean(x**2)),
        "qcod": (p75 - p25) / (p75 + p25),
    }
    for name, value in expected.items():
        assert f[f"firstorder.{name}"] == pytest.approx(value, rel=1e-5), name
    levels = np.minimum(np.floor(16 * (x - x.min()) / np.ptp(x)), 15).astype(int)
    p = np.bincount(levels) / x.size
    p = p[p > 0]
    assert f["firstorder.entropy"] == pytest.approx(-(p * np.log2(p)).sum(), rel=1e-5)
    assert f["firstorder.uniformity"] == pytest.approx((p**2).sum(), rel=1e-5)


def test_discretisation_follows_ibsi():
    x = np.array([0.0, 2.5, 5.0, 7.5, 10.0])
    assert fixed_bin_count(x, 4).values.tolist() == [1, 2, 3, 4, 4]  # the maximum falls into the last bin
    fbs = fixed_bin_width(x, 2.0, lower=-1.0)
    assert fbs.values.tolist() == [1, 2, 4, 5, 6] and fbs.levels == 6


HARALICK = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 2, 2, 2], [2, 2, 3, 3]])
# Haralick, Shanmugam & Dinstein (1973), Fig. 2: the symmetric 0-degree matrix of the image above.
HARALICK_0_DEG = np.array([[4, 2, 1, 0], [2, 4, 0, 0], [1, 0, 6, 1], [0, 0, 1, 2]])


# The IBSI 1 digital phantom (github.com/theibsi/data_sets, ibsi_1_digital_phantom): 4 slices of
# 5 x 4 voxels of 2 mm, grey levels 1-9, six voxels outside the ROI. Indexed [slice, row, column].
IBSI_PHANTOM = np.array(
    [
        [[4, 4, 1, 1], [4, 4, 1, 1], [6, 6, 6, 6], [4, 1, 1, 1], [1, 1, 1, 1]],
        [[4, 1, 1, 1], [1, 1, 1, 1], [6, 3, 9, 1], [4, 1, 1, 1], [1, 1, 1, 1]],
        [[1, 1, 1, 1], [4, 1, 1, 1], [6, 6, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
        [[1, 1, 1, 1], [4, 4, 4, 4], [4, 4, 4, 4], [1, 1, 1, 1], [1, 1, 1, 1]],
    ],
    dtype=np.float32,
)
IBSI_OUTSIDE = [(1, 0, 1), (1, 2, 2), (3, 3, 2), (3, 3, 3), (3, 4, 2), (3, 4, 3)]
# IBSI reference manual benchmark values for the digital phantom (3 significant digits; GLCM as
# "3D, averaged" / "3D, merged"); morphology with IBSI's binary mesh (`surface: mesh`).
IBSI_FIRST_ORDER = {
    "mean": 2.15,
    "variance": 3.05,
    "skewness": 1.08,
    "kurtosis": -0.355,
    "median": 1,
    "minimum": 1,
    "p10": 1,
    "p90": 4,
    "maximum": 6,
    "iqr": 3,
    "range": 5,
    "mad": 1.55,
    "robust_mad": 1.11,
    "medad": 1.15,
    "cov": 0.812,
    "qcod": 0.6,
    "energy": 567,
    "rms": 2.77,
    "entropy": 1.27,
    "uniformity": 0.512,
}
IBSI_SHAPE = {
    "volume_mm3": 556,
    "voxel_volume_mm3": 592,
    "surface_area_mm2": 388,
    "surface_to_volume_per_mm": 0.698,
    "sphericity": 0.843,
    "max_3d_diameter_mm": 13.1,
    "major_axis_mm": 11.4,
    "minor_axis_mm": 9.31,
    "least_axis_mm": 8.54,
    "elongation": 0.816,
    "flatness": 0.749,
}
IBSI_GLCM = {  # name: (3D averaged, 3D merged)
    "joint_maximum": (0.503, 0.509),
    "joint_average": (2.14, 2.15),
    "joint_variance": (3.1, 3.13),
    "joint_entropy": (2.4, 2.57),
    "difference_average": (1.43, 1.38),
    "difference_variance": (3.06, 3.21),
    "difference_entropy": (1.56, 1.64),
    "sum_average": (4.29, 4.3),
    "sum_variance": (7.07, 7.41),
    "sum_entropy": (1.92, 2.11),
    "angular_second_moment": (0.303, 0.291),
    "contrast": (5.32, 5.12),
    "dissimilarity": (1.43, 1.38),
    "inverse_difference": (0.677, 0.688),
    "inverse_difference_normalised": (0.851, 0.856),
    "inverse_difference_moment": (0.618, 0.631),
    "inverse_difference_moment_normalised": (0.898, 0.902),
    "inverse_variance": (0.0604, 0.0574),
    "correlation": (0.157, 0.183),
    "autocorrelation": (5.06, 5.19),
    "cluster_tendency": (7.07, 7.41),
    "cluster_shade": (16.6, 17.4),
    "cluster_prominence": (145, 147),
    "information_correlation_1": (-0.157, -0.0288),
    "information_correlation_2": (0.52, 0.269),
}


def three_digits(value: float) -> float:
    return float(f"{value:.3g}")


@pytest.mark.parametrize("aggregation", ["averaged", "merged"])
def test_ibsi_digital_phantom_reference_values(aggregation):
    mask = np.ones(IBSI_PHANTOM.shape, bool)
    for index in IBSI_OUTSIDE:
        mask[index] = False
    stage = RadiomicsExtractor(**RadiomicsParams(bin_width=1.0, surface="mesh", glcm_aggregation=aggregation).model_dump())
    names, values, summary = stage.compute(IBSI_PHANTOM, mask, (2.0, 2.0, 2.0))
    f = dict(zip(names, values.tolist()))
    assert summary["levels"] == 6  # fixed bin size 1 from the ROI minimum 1; the 9 lies outside the ROI
    expected = {f"firstorder.{k}": v for k, v in IBSI_FIRST_ORDER.items()}
    expected.update({f"shape.{k}": v for k, v in IBSI_SHAPE.items()})
    expected.update({f"glcm.{k}": v[aggregation == "merged"] for k, v in IBSI_GLCM.items()})
    wrong = {k: (round(f[k], 5), v) for k, v in expected.items() if three_digits(f[k]) != pytest.approx(v, abs=1e-12)}
    assert not wrong, f"differs from the IBSI reference (ours, IBSI): {wrong}"
    assert len(expected) == len(names) - 3  # every feature but the three axis extents is checked


def test_glcm_matches_haralick_hand_matrix_and_hand_features():
    levels = HARALICK + 1
    mats = glcm.glcm_matrices(levels, np.ones_like(levels, bool), 4)
    horizontal = glcm.directions(2).index((0, 1))
    np.testing.assert_array_equal(mats[horizontal], HARALICK_0_DEG)
    f = glcm.glcm_features(mats[horizontal])
    p = HARALICK_0_DEG / 24.0
    i, j = np.indices(p.shape) + 1
    assert f["contrast"] == pytest.approx((p * (i - j) ** 2).sum())  # = 14/24
    assert f["contrast"] == pytest.approx(14 / 24)
    assert f["angular_second_moment"] == pytest.approx((p**2).sum())
    assert f["joint_maximum"] == pytest.approx(6 / 24)
    assert f["dissimilarity"] == pytest.approx(10 / 24)
    assert f["joint_average"] == pytest.approx((i * p).sum())
    assert f["inverse_variance"] == pytest.approx((6 / 24) / 1 + (2 / 24) / 4)


def test_glcm_matches_the_pyradiomics_documentation_example():
    """The 5x5, 5-level example of the pyradiomics GLCM documentation and its published 0-degree matrix."""
    image = np.array([[1, 2, 5, 2, 3], [3, 2, 1, 3, 1], [1, 3, 5, 5, 2], [1, 1, 1, 1, 2], [1, 2, 4, 3, 5]])
    published = np.array([[6, 4, 3, 0, 0], [4, 0, 2, 1, 3], [3, 2, 0, 1, 2], [0, 1, 1, 0, 0], [0, 3, 2, 0, 2]])
    mats = glcm.glcm_matrices(image, np.ones(image.shape, bool), 5)
    np.testing.assert_array_equal(mats[glcm.directions(2).index((0, 1))], published)


def test_glcm_agrees_with_scikit_image_in_every_direction():
    from skimage.feature import graycomatrix, graycoprops

    rng = np.random.default_rng(7)
    image = rng.integers(0, 6, size=(9, 11))
    mats = glcm.glcm_matrices(image + 1, np.ones(image.shape, bool), 6)
    # skimage's angle theta pairs pixel (r, c) with (r + round(d sin theta), c + round(d cos theta))
    angles = {(0, 1): 0.0, (1, 1): np.pi / 4, (1, 0): np.pi / 2, (1, -1): 3 * np.pi / 4}
    for offset, angle in angles.items():
        ref = graycomatrix(image.astype(np.uint8), [1], [angle], levels=6, symmetric=True)[:, :, 0, 0]
        ours = mats[glcm.directions(2).index(offset)]
        np.testing.assert_array_equal(ours, ref)
        f = glcm.glcm_features(ours)
        ref4 = ref[:, :, None, None].astype(float)
        assert f["contrast"] == pytest.approx(graycoprops(ref4, "contrast")[0, 0])
        assert f["inverse_difference_moment"] == pytest.approx(graycoprops(ref4, "homogeneity")[0, 0])
        assert f["correlation"] == pytest.approx(graycoprops(ref4, "correlation")[0, 0])
        assert f["angular_second_moment"] == pytest.approx(graycoprops(ref4, "ASM")[0, 0])


def test_glcm_counts_only_pairs_inside_the_mask():
    levels = np.array([[1, 2, 1], [2, 1, 2], [1, 2, 1]])
    mask = np.zeros((3, 3), bool)
    mask[0, :2] = True  # one horizontal pair (1, 2)
    mats = glcm.glcm_matrices(levels, mask, 2)
    assert mats.sum() == 2  # the pair, counted both ways
    assert mats[glcm.directions(2).index((0, 1))].tolist() == [[0, 1], [1, 0]]


def test_3d_has_13_directions_and_merged_differs_from_averaged():
    assert len(glcm.directions(3)) == 13 and len(glcm.directions(2)) == 4
    mask, image = ellipsoid((6, 5, 4), (1.0, 1.0, 1.0))
    avg, _ = run_stage(image, mask, (1, 1, 1), groups=["glcm"])
    merged, _ = run_stage(image, mask, (1, 1, 1), groups=["glcm"], glcm_aggregation="merged")
    assert avg["glcm.contrast"] > 0 and merged["glcm.contrast"] > 0
    assert avg["glcm.joint_entropy"] != pytest.approx(merged["glcm.joint_entropy"], rel=1e-6)


def test_2d_disc_area_perimeter_circularity():
    r = 20.0
    mask, image = ellipsoid((r, r), (0.5, 0.5))
    f, _ = run_stage(image, mask, (0.5, 0.5))
    assert f["shape.area_mm2"] == pytest.approx(math.pi * r * r, rel=0.02)
    assert f["shape.perimeter_mm"] == pytest.approx(2 * math.pi * r, rel=0.03)
    assert f["shape.circularity"] == pytest.approx(1.0, abs=0.05)
    assert all(np.isfinite(list(f.values())))


def test_bad_inputs_are_one_line_errors():
    from voxpipe_plugins.common.checks import StageInputError

    mask, image = ellipsoid((4, 4, 4), (1.0, 1.0, 1.0))
    with pytest.raises(StageInputError, match="0 voxels with value 2"):
        run_stage(image, mask, (1, 1, 1), label_value=2)
    stage = RadiomicsExtractor()
    with pytest.raises(StageInputError, match="no `label`"):
        stage({"image": torch.zeros(1, 4, 4, 4)})
    with pytest.raises(StageInputError, match="shape"):
        stage({"image": torch.zeros(1, 4, 4, 4), "label": torch.ones(1, 4, 4, 5)})


def test_params_refuse_both_binnings():
    with pytest.raises(ValueError, match="not both"):
        RadiomicsParams(bin_count=16, bin_width=25)
    with pytest.raises(ValueError, match="needs `bin_width`"):
        RadiomicsParams(bin_lower=-1000)
    assert RadiomicsParams(bin_width=25, bin_lower=-1000).bin_width == 25


@pytest.mark.parametrize("region", ["voxel", "line", "constant"])
def test_tiny_thin_or_constant_regions_give_finite_vectors(region):
    """Smoothing would erase a one-voxel object (no surface at 0.5): the binary mesh is kept instead."""
    image = np.random.default_rng(5).normal(100, 5, (10, 10, 10)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    if region == "voxel":
        mask[5, 5, 5] = True
    elif region == "line":
        mask[2:8, 5, 5] = True
    else:
        mask[3:7, 3:7, 3:7] = True
        image[:] = 7.0
    f, _ = run_stage(image, mask, (1.0, 1.0, 1.0))
    assert all(np.isfinite(list(f.values())))
    assert f["shape.surface_area_mm2"] > 0 and f["shape.volume_mm3"] > 0
    if region == "constant":
        assert f["firstorder.variance"] == 0 and f["glcm.contrast"] == 0 and f["glcm.correlation"] == 1


def test_the_report_shows_the_stages_own_choice_of_features_with_units():
    """radiomics.extract records its report metrics (the core names none); they equal the feature vector's values."""
    mask, image = ellipsoid((6.0, 5.0, 4.0), (1.0, 1.0, 2.0))
    features, case = run_stage(image, mask, (1.0, 1.0, 2.0))
    metrics = {m["name"]: m for m in case["report"]["metrics"]}
    assert set(metrics) == {
        f"feature_values.radiomics:{n}" for n in ("firstorder.mean", "firstorder.entropy", "shape.volume_mm3", "glcm.contrast")
    }
    for name, metric in metrics.items():
        element = name.split(":", 1)[1]
        assert metric["value"] == pytest.approx(features[element], abs=1e-4)
        assert metric["label"] == f"radiomics:{element}"
    assert metrics["feature_values.radiomics:shape.volume_mm3"]["unit"] == "mm³"
    assert "pictures" in case["report"] and case["report"]["pictures"] == []
    only_glcm = run_stage(image, mask, (1.0, 1.0, 2.0), groups=["glcm"])[1]
    assert [m["name"] for m in only_glcm["report"]["metrics"]] == ["feature_values.radiomics:glcm.contrast"]

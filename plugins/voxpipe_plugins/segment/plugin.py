"""Registers the classical segmenters: `segment.otsu`, `segment.multiotsu`, `segment.threshold`,
`segment.region_grow`, `segment.watershed`, `segment.kmeans`, `segment.gmm` and `segment.tissue`.

Light on purpose (pydantic + voxpipe only): the implementations, and NumPy, scipy and
scikit-image with them, are imported when a pipeline is built. docs/segmentation.md
describes every stage and the recipes in configs/.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import CaseKey, ImageKeyParams
from voxpipe_plugins.segment.brain_mask_spec import register_brain_mask


class OtsuParams(ImageKeyParams):
    output_key: CaseKey = Field("label", description="Case key for the label map (1 = foreground).")
    nbins: int = Field(256, ge=8, le=65536, description="Histogram bins for Otsu's method.")
    invert: bool = Field(False, description="Foreground is *below* the threshold (dark objects).")


class _SegmentParams(ImageKeyParams):
    output_key: CaseKey = Field("label", description="Case key for the label map.")


class _MaskParams(_SegmentParams):
    mask_key: CaseKey | None = Field(
        None,
        json_schema_extra={"shown": {"type": "str | None"}},
        description="Case key of a mask or label map (e.g. `body`): only its non-zero voxels (or `mask_labels`) are segmented.",
    )
    mask_labels: list[int] | None = Field(
        None, min_length=1, max_length=256, description="Values of `mask_key` that form the mask; unset: any non-zero."
    )

    @model_validator(mode="after")
    def _labels_need_key(self):
        if self.mask_labels is not None and self.mask_key is None:
            raise ValueError("`mask_labels` needs `mask_key`")
        return self


def _names_match(names, classes):
    if names is not None and len(names) != classes:
        raise ValueError(f"`names` has {len(names)} entries; give one per class ({classes})")


class MultiOtsuParams(_MaskParams):
    classes: int = Field(3, ge=2, le=5, description="Number of intensity classes (thresholds = classes - 1).")
    nbins: int = Field(256, ge=8, le=4096, description="Histogram bins for the threshold search.")
    names: list[str] | None = Field(
        None,
        description="Class names, darkest first, one per class. Without a mask the darkest "
        "class is value 0 (default name `background`); with a mask classes are 1..classes and 0 is outside.",
    )

    @model_validator(mode="after")
    def _names(self):
        _names_match(self.names, self.classes)
        return self


class Range(BaseModel):
    """One named intensity interval (inclusive); unset ends are open."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$", description="Label name (written to the label table)."
    )
    min: float | None = Field(None, description="Lowest intensity included (HU on CT); unset: no lower bound.")
    max: float | None = Field(None, description="Highest intensity included; unset: no upper bound.")
    value: int | None = Field(None, ge=1, le=65535, description="Label value; unset: the range's position (1, 2, ...).")

    @model_validator(mode="after")
    def _bounds(self):
        if self.min is None and self.max is None:
            raise ValueError(f"range `{self.name}` needs `min` and/or `max`")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"range `{self.name}`: min ({self.min}) is above max ({self.max})")
        return self


class ThresholdParams(_MaskParams):
    ranges: list[Range] = Field(
        min_length=1,
        max_length=255,
        description="Named intensity ranges, e.g. "
        "[{name: lung, min: -1000, max: -400}, {name: bone, min: 250}]; each becomes a label "
        "(value 1, 2, ... or `value`). Where ranges overlap the first one wins.",
    )

    @model_validator(mode="after")
    def _unique(self):
        values = [r.value or i + 1 for i, r in enumerate(self.ranges)]
        if len(set(values)) != len(values):
            raise ValueError(f"label values repeat: {values}")
        return self


class RegionGrowParams(_SegmentParams):
    seeds: list[list[float]] = Field(
        min_length=1,
        max_length=1000,
        description="Seed points, each [i, j(, k)] voxel indices or [x, y(, z)] RAS mm scanner coordinates (see `seed_space`).",
    )
    seed_space: Literal["voxel", "world"] = Field(
        "voxel", description="`voxel`: array indices (0-based); `world`: RAS millimetres, mapped through the image's affine."
    )
    method: Literal["connected", "confidence"] = Field(
        "connected",
        description="`connected`: voxels in [lower, upper] connected "
        "to a seed; `confidence`: ITK's confidence connected (mean ± multiplier·std of the region, iterated).",
    )
    lower: float | None = Field(None, description="connected: lowest intensity accepted.")
    upper: float | None = Field(None, description="connected: highest intensity accepted.")
    multiplier: float = Field(2.5, gt=0, le=20, description="confidence: interval half-width in standard deviations.")
    iterations: int = Field(4, ge=0, le=50, description="confidence: times the statistics are re-estimated from the grown region.")
    initial_radius: int = Field(
        1, ge=0, le=10, description="confidence: half-width (voxels) of the neighbourhood of each seed for the first statistics."
    )
    mask_key: CaseKey | None = Field(None, description="Case key of a mask: growth stays inside its non-zero voxels.")
    name: str = Field("region", min_length=1, max_length=64, description="Name of label 1 in the label table.")

    @model_validator(mode="after")
    def _method(self):
        if any(len(s) not in (2, 3) for s in self.seeds):
            raise ValueError("each seed needs 2 (2D) or 3 (3D) coordinates")
        if self.method == "connected" and self.lower is None and self.upper is None:
            raise ValueError("method `connected` needs `lower` and/or `upper`")
        if self.method == "confidence" and (self.lower is not None or self.upper is not None):
            raise ValueError("`lower`/`upper` apply to method `connected` only")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) is above upper ({self.upper})")
        return self


class WatershedParams(_SegmentParams):
    surface: Literal["gradient", "distance", "image", "inverted"] = Field(
        "gradient",
        description="The relief that is flooded: `gradient` (Gaussian gradient magnitude), `distance` (minus the "
        "distance in mm to the mask's edge: splits touching round objects), `image`, or `inverted` (bright objects become basins).",
    )
    sigma_mm: float = Field(1.0, gt=0, le=50, description="gradient: Gaussian sigma in mm (pixels for 2D photos).")
    markers: Literal["h_maxima", "threshold", "label"] = Field(
        "h_maxima",
        description="Where basins start: `h_maxima` (maxima of the inverted relief at least `h` deep), `threshold` "
        "(connected components of [marker_lower, marker_upper]), or `label` (the non-zero values of `marker_key`).",
    )
    marker_key: CaseKey | None = Field(None, description="label: case key of the marker label map.")
    marker_lower: float | None = Field(None, description="threshold: lowest marker intensity.")
    marker_upper: float | None = Field(None, description="threshold: highest marker intensity.")
    h: float = Field(1.0, gt=0, le=1e6, description="h_maxima: minimum depth of a basin, in relief units (mm for `distance`).")
    mask_key: CaseKey | None = Field(None, description="Case key of a mask: only its non-zero voxels are flooded.")
    mask_threshold: float | None = Field(None, description="Also (or only) restrict flooding to intensities above this value.")
    min_marker_voxels: int = Field(1, ge=1, le=10_000_000, description="threshold/h_maxima: drop marker components smaller than this.")
    watershed_line: bool = Field(False, description="Leave a one-voxel line (value 0) between regions.")
    names: list[str] | None = Field(
        None, max_length=255, description="Region names for values 1, 2, ...; `label` markers keep their own names."
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.markers == "label" and self.marker_key is None:
            raise ValueError("markers `label` needs `marker_key`")
        if self.markers == "threshold" and self.marker_lower is None and self.marker_upper is None:
            raise ValueError("markers `threshold` needs `marker_lower` and/or `marker_upper`")
        if self.surface == "distance" and self.mask_key is None and self.mask_threshold is None:
            raise ValueError("surface `distance` needs `mask_key` or `mask_threshold`")
        return self


class TissueParams(_MaskParams):
    classes: int = Field(3, ge=2, le=10, description="Number of tissue classes, numbered 1..classes by increasing mean intensity.")
    mask_threshold: float | None = Field(
        None, description="Also (or only) use voxels above this intensity (e.g. 0 for an MR's non-zero region)."
    )
    names: list[str] | None = Field(None, description="Class names, darkest first (T1 brain: [csf, gray_matter, white_matter]).")
    max_samples: int = Field(
        200_000,
        ge=1000,
        le=100_000_000,
        description="Voxels (drawn with `seed`) the model is fitted on; all voxels in the mask are then classified.",
    )
    seed: int = Field(0, ge=0, description="Random seed for the sample: results are reproducible.")

    @model_validator(mode="after")
    def _names(self):
        _names_match(self.names, self.classes)
        return self


class BrainTissueParams(_MaskParams):
    classes: int = Field(3, ge=2, le=6, description="Number of pure tissue classes, numbered 1..classes by increasing mean intensity.")
    mask_threshold: float | None = Field(
        None, description="Also (or only) use voxels above this intensity. Without `mask_key` and this: the non-zero voxels."
    )
    names: list[str] | None = Field(
        None,
        description="Class names, darkest first; unset: [csf, gray_matter, white_matter] for 3 classes (T1), class_<v> otherwise.",
    )
    prob_keys: list[CaseKey] = Field(
        ["csf_prob", "gm_prob", "wm_prob"],
        max_length=6,
        description="Case keys for the classes' probability maps (float32 on the image grid, 0 outside the mask), "
        "darkest class first: one per class, or [] for none.",
    )
    beta: float = Field(
        2.0,
        ge=0,
        le=20,
        description="Strength of the spatial (hidden MRF) prior: the log-prior of a class grows by beta times the "
        "1/distance-weighted share of the neighbours in it; 0: intensities only.",
    )
    neighbours: Literal[6, 18, 26] = Field(
        26, description="Neighbourhood of the spatial prior in 3D (faces, + edges, + corners); in 2D 6 means 4 and 18/26 mean 8."
    )
    partial_volume: bool = Field(
        True, description="Model voxels that mix two neighbouring classes (CSF/GM, GM/WM) and fold them back into the pure classes."
    )
    variance: Literal["shared", "per_class"] = Field(
        "shared", description="One noise variance for all classes (default: keeps the GM/WM boundary in place) or one per class."
    )
    iterations: int = Field(10, ge=0, le=100, description="EM rounds with the spatial prior (stops early once the labels settle).")
    bias_fwhm_mm: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="Also estimate a smooth multiplicative bias field inside EM (FAST-style), smoothed with a Gaussian of "
        "this FWHM in mm (e.g. 60); unset: none (run `enhance.bias_n4` first instead, or not at all on a corrected T1).",
    )
    max_samples: int = Field(200_000, ge=1000, le=100_000_000, description="Voxels (drawn with `seed`) the starting mixture is fitted on.")
    seed: int = Field(0, ge=0, description="Random seed for that sample: results are reproducible.")

    @model_validator(mode="after")
    def _per_class(self):
        _names_match(self.names, self.classes)
        if self.prob_keys and len(self.prob_keys) != self.classes:
            raise ValueError(f"`prob_keys` has {len(self.prob_keys)} entries; give one per class ({self.classes}) or []")
        keys = [self.output_key, *self.prob_keys]
        if len(set(keys)) != len(keys) or self.key in keys:
            raise ValueError(f"`output_key` and `prob_keys` must be distinct case keys, other than `key`: {keys}")
        return self


def _spec(id, summary, params, factory, description, reads=("{key}",)):
    return StageSpec(
        id=id,
        kind=StageKind.SEGMENTER,
        summary=summary,
        params=params,
        factory=factory,
        reads=reads,
        writes=("{output_key}",),
        description=description,
    )


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="segment.otsu",
            kind=StageKind.SEGMENTER,
            summary="Two-class segmentation with Otsu's threshold (scikit-image); writes a 0/1 label map.",
            description="The threshold maximises the between-class variance of the intensity histogram. "
            "The label map keeps the image's affine and carries a label table {0: background, 1: foreground}.",
            params=OtsuParams,
            factory="voxpipe_plugins.segment.otsu:OtsuSegmenter",
            reads=("{key}",),
            writes=("{output_key}",),
        )
    )
    register(
        _spec(
            "segment.multiotsu",
            "Several intensity classes with multi-Otsu thresholds (scikit-image), darkest first.",
            MultiOtsuParams,
            "voxpipe_plugins.segment.threshold:MultiOtsuSegmenter",
            "Thresholds maximise the between-class variance of the histogram (of the masked voxels when `mask_key` is set).",
            reads=("{key}", "{mask_key}"),
        )
    )
    register(
        _spec(
            "segment.threshold",
            "Fixed intensity ranges (HU on CT) -> named labels.",
            ThresholdParams,
            "voxpipe_plugins.segment.threshold:ThresholdSegmenter",
            "Each named range [min, max] (inclusive) becomes one label; the first matching range wins; `mask_key` restricts it.",
            reads=("{key}", "{mask_key}"),
        )
    )
    register(
        _spec(
            "segment.region_grow",
            "Region growing from seeds (voxel or world mm): connected threshold or confidence connected.",
            RegionGrowParams,
            "voxpipe_plugins.segment.region_grow:RegionGrowSegmenter",
            "The grown region is face-connected to a seed; `confidence` re-estimates mean ± k·std from the region a few times (ITK's ConfidenceConnected).",
            reads=("{key}", "{mask_key}"),
        )
    )
    register(
        _spec(
            "segment.watershed",
            "Marker-based watershed (scikit-image) on the gradient, a distance map or the image.",
            WatershedParams,
            "voxpipe_plugins.segment.watershed:WatershedSegmenter",
            "Markers come from h-maxima, an intensity threshold or another label map; flooding can be limited to a mask.",
            reads=("{key}", "{mask_key}", "{marker_key}"),
        )
    )
    register(
        _spec(
            "segment.kmeans",
            "Tissue classes by k-means on the intensities inside a mask (NumPy), ordered by mean.",
            TissueParams,
            "voxpipe_plugins.segment.tissue:KMeansSegmenter",
            "1D k-means (Lloyd, quantile start) fitted on a seeded sample of the masked voxels; classes 1..k darkest first, 0 outside.",
            reads=("{key}", "{mask_key}"),
        )
    )
    register(
        _spec(
            "segment.gmm",
            "Tissue classes by a Gaussian mixture on the intensities inside a mask (NumPy EM), ordered by mean.",
            TissueParams,
            "voxpipe_plugins.segment.tissue:GMMSegmenter",
            "1D Gaussian mixture fitted by EM from a k-means start; each voxel gets its most probable class; 1..k darkest first.",
            reads=("{key}", "{mask_key}"),
        )
    )
    register(
        StageSpec(
            id="segment.tissue",
            kind=StageKind.SEGMENTER,
            summary="Brain tissue classes (CSF, GM, WM) with probability maps: Gaussian mixture EM, partial volume, hidden-MRF prior.",
            description="For a skull-stripped T1 (or one masked by `segment.brain_mask`). scikit-learn fits a Gaussian mixture "
            "(shared variance by default) to the masked intensities; EM then refines it with partial-volume classes "
            "(CSF/GM, GM/WM, folded back into the pure classes) and a mean-field hidden Markov random field whose "
            "neighbours are weighted by 1/distance in mm. Writes the label map (1..k darkest first, 0 outside the mask) "
            "and one probability map per class (`prob_keys`). docs/brain-tissue.md has the method and the benchmark.",
            params=BrainTissueParams,
            factory="voxpipe_plugins.segment.tissue_hmrf:TissueSegmenter",
            reads=("{key}", "{mask_key}"),
            writes=("{output_key}", "{prob_keys}"),
        )
    )
    register_brain_mask(register)

"""Registers the `enhance.*` stages: CT windowing, normalisation, histogram equalisation,
CLAHE, gamma, unsharp masking, N4 bias-field correction, resampling and reorientation.

Light on purpose (pydantic and voxpipe only): the implementations are imported from the
`factory` strings when a pipeline is built. docs/enhancement.md describes every stage.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import CaseKey, ImageKeyParams, StageParams
from voxpipe_plugins.enhance.presets import WINDOW_PRESETS

PresetName = Literal["brain", "subdural", "stroke", "lung", "mediastinum", "abdomen", "liver", "bone"]
assert set(PresetName.__args__) == set(WINDOW_PRESETS)  # one list of names

_PRESET_TEXT = ", ".join(f"{name} {level:g}/{width:g}" for name, (level, width, _) in WINDOW_PRESETS.items())


def _set_outside(model, allowed_for: dict[str, str], mode: str) -> None:
    """Refuse parameters that belong to another mode (they would be silently ignored).

    A value equal to the default passes: a resolved config (the manifest's, or the one sent
    to batch workers) writes every default out, and must validate again as it is.
    """
    for name in sorted(model.model_fields_set):
        owner = allowed_for.get(name)
        if owner is not None and owner != mode and getattr(model, name) != type(model).model_fields[name].default:
            raise ValueError(f"`{name}` applies to mode `{owner}` only (mode is `{mode}`)")


# --------------------------------------------------------------------------- window


class WindowParams(ImageKeyParams):
    preset: PresetName | None = Field(
        None,
        json_schema_extra={"shown": {"type": "str | None (a preset name)"}},
        description=f"Named CT window, level/width in HU: {_PRESET_TEXT} (sources in docs/enhancement.md). "
        "Set either `preset` or both `level` and `width`.",
    )
    level: float | None = Field(None, ge=-1e6, le=1e6, description="Window level (centre) in HU (image units).")
    width: float | None = Field(None, gt=0, le=1e6, description="Window width in HU (image units).")
    out_min: float = Field(0.0, description="Output value for intensities at or below the window's lower edge.")
    out_max: float = Field(1.0, description="Output value for intensities at or above the window's upper edge.")
    function: Literal["linear_exact", "linear"] = Field(
        "linear_exact",
        description="DICOM VOI LUT function (PS3.3 C.11.2.1.2): `linear_exact` maps "
        "[level - width/2, level + width/2] onto [out_min, out_max]; `linear` is DICOM's default LINEAR with its "
        "half-unit offsets, [level - 0.5 - (width-1)/2, level - 0.5 + (width-1)/2], as viewers display it.",
    )

    @model_validator(mode="after")
    def _window(self):
        explicit = (self.level is not None, self.width is not None)
        if self.preset is not None and any(explicit):
            raise ValueError("set either `preset` or `level` and `width`, not both")
        if self.preset is None and not all(explicit):
            if any(explicit):
                raise ValueError("set both `level` and `width` (or a `preset`)")
            raise ValueError(f"set `preset` (one of {', '.join(WINDOW_PRESETS)}) or both `level` and `width`")
        if not self.out_min < self.out_max:
            raise ValueError(f"out_min ({self.out_min}) must be below out_max ({self.out_max})")
        if self.function == "linear" and self.width is not None and self.width < 1:
            raise ValueError("function `linear` needs width >= 1 (DICOM); use `linear_exact` for narrower windows")
        return self


# --------------------------------------------------------------------------- masks


class MaskParams(ImageKeyParams):
    mask_key: CaseKey | None = Field(
        None,
        json_schema_extra={"shown": {"type": "str | None"}},
        description="Case key of a mask or label map (e.g. `label`): statistics use its voxels > 0, "
        "or those in `mask_labels`. Same spatial shape as the image.",
    )
    mask_labels: list[int] | None = Field(
        None, min_length=1, max_length=256, description="Label values of `mask_key` that form the mask; unset: any non-zero."
    )
    mask_threshold: float | None = Field(
        None,
        description="Also (or only) use voxels whose intensity is above this value, e.g. -500 for the body "
        "in CT (HU) or 0 for the non-zero region of an MR volume.",
    )

    @model_validator(mode="after")
    def _labels_need_key(self):
        if self.mask_labels is not None and self.mask_key is None:
            raise ValueError("`mask_labels` needs `mask_key`")
        return self


# --------------------------------------------------------------------------- normalize

_NORMALIZE_FIELDS = {
    "target_mean": "zscore",
    "target_std": "zscore",
    "lower": "percentile",
    "upper": "percentile",
    "out_min": "percentile",
    "out_max": "percentile",
}


class NormalizeParams(MaskParams):
    mode: Literal["zscore", "percentile"] = Field(
        "zscore",
        description="`zscore`: shift and scale so that the voxels in the mask (all voxels without one) have "
        "mean `target_mean` and standard deviation `target_std`; `percentile`: clip to the lower/upper percentiles "
        "of the masked voxels and rescale to [out_min, out_max].",
    )
    target_mean: float = Field(0.0, ge=-1e6, le=1e6, description="zscore: mean of the masked voxels after normalisation.")
    target_std: float = Field(
        1.0, gt=0, le=1e6, description="zscore: population standard deviation (ddof 0) of the masked voxels after normalisation."
    )
    lower: float = Field(0.5, ge=0, le=100, description="percentile: lower percentile (0-100), mapped to out_min.")
    upper: float = Field(99.5, ge=0, le=100, description="percentile: upper percentile (0-100), mapped to out_max.")
    out_min: float = Field(0.0, description="percentile: output value for the lower percentile.")
    out_max: float = Field(1.0, description="percentile: output value for the upper percentile.")
    fill_outside: float | None = Field(
        None, description="Set voxels outside the mask to this value; unset: the same linear map is applied everywhere."
    )

    @model_validator(mode="after")
    def _consistent(self):
        _set_outside(self, _NORMALIZE_FIELDS, self.mode)
        if not self.lower < self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        if not self.out_min < self.out_max:
            raise ValueError(f"out_min ({self.out_min}) must be below out_max ({self.out_max})")
        if self.fill_outside is not None and self.mask_key is None and self.mask_threshold is None:
            raise ValueError("`fill_outside` needs a mask (`mask_key` or `mask_threshold`)")
        return self


# --------------------------------------------------------------------------- histeq, clahe


class HistEqParams(MaskParams):
    nbins: int = Field(256, ge=16, le=65536, description="Histogram bins between the image's minimum and maximum.")


class ClaheParams(ImageKeyParams):
    kernel_mm: float | None = Field(
        None,
        gt=0,
        le=2000,
        description="Size of the contextual regions (tiles) in mm along every axis, converted to "
        "voxels with the spacing; unset: 1/8 of the image along each axis (scikit-image's default).",
    )
    clip_limit: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Normalised clip limit (scikit-image): higher gives more contrast; 0 disables clipping (plain adaptive equalisation).",
    )
    nbins: int = Field(256, ge=16, le=16384, description="Grey-level bins of each tile's histogram.")
    per_slice: bool = Field(
        False,
        description="3D volumes: equalise each slice along the last array axis (axial for "
        "RAS volumes) with 2D CLAHE instead of running 3D CLAHE. Ignored for 2D images.",
    )


# --------------------------------------------------------------------------- gamma, unsharp


class GammaParams(ImageKeyParams):
    gamma: float = Field(
        ...,
        gt=0,
        le=10,
        description="Exponent: out = lower + (upper - lower) * t**gamma with "
        "t = (x - lower) / (upper - lower); below 1 brightens mid-tones, above 1 darkens them.",
    )
    lower: float | None = Field(None, description="Intensity mapped to t = 0; unset: the image's own minimum. Values below are clipped.")
    upper: float | None = Field(None, description="Intensity mapped to t = 1; unset: the image's own maximum. Values above are clipped.")
    preserve_range: bool = Field(
        True, description="Output in [lower, upper] (MONAI AdjustContrast's convention); false: output t**gamma in [0, 1]."
    )

    @model_validator(mode="after")
    def _bounds(self):
        if (self.lower is None) != (self.upper is None):
            raise ValueError("set both `lower` and `upper`, or neither")
        if self.lower is not None and not self.lower < self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


class UnsharpParams(ImageKeyParams):
    radius_mm: float = Field(
        1.0,
        gt=0,
        le=50,
        description="Standard deviation of the Gaussian blur in mm (scikit-image "
        "calls it radius), converted per axis with the voxel spacing (pixels for 2D photos).",
    )
    amount: float = Field(1.0, ge=0, le=20, description="Strength: out = x + amount * (x - blurred).")
    truncated: float = Field(4.0, gt=0, le=10, description="Gaussian kernel half-width in standard deviations.")
    clip: bool = Field(False, description="Clip the result to the input's [min, max] (no overshoot beyond the original range).")


# --------------------------------------------------------------------------- geometry

_LIST_OF_KEYS = {"shown": {"type": "list[str]"}}  # how `voxpipe plugins show` names the type


class ResampleParams(StageParams):
    spacing_mm: list[float] = Field(
        ...,
        min_length=1,
        max_length=3,
        description="Target voxel spacing in mm, one value per spatial array axis, or "
        "one value for all axes; 0 keeps that axis's current spacing.",
    )
    keys: list[CaseKey] = Field(["image"], min_length=1, description="Images to resample with `mode`.", json_schema_extra=_LIST_OF_KEYS)
    label_keys: list[CaseKey] = Field(
        [],
        description="Label maps to resample with nearest-neighbour interpolation onto the same grid (e.g. [label]); their dtype is kept.",
        json_schema_extra=_LIST_OF_KEYS,
    )
    mode: Literal["bilinear", "bicubic", "nearest"] = Field(
        "bilinear", description="Interpolation for `keys`: bilinear (trilinear in 3D), bicubic (2D only) or nearest."
    )
    padding_mode: Literal["border", "zeros", "reflection"] = Field("border", description="Values for samples outside the input grid.")

    @field_validator("spacing_mm")
    @classmethod
    def _spacing(cls, value: list[float]) -> list[float]:
        for v in value:
            if not 0 <= v <= 100:
                raise ValueError(f"spacing values must lie in [0, 100] mm (0 keeps an axis), got {v}")
        if all(v == 0 for v in value):
            raise ValueError("at least one spacing value must be positive")
        return value

    @model_validator(mode="after")
    def _keys(self):
        both = set(self.keys) & set(self.label_keys)
        if both:
            raise ValueError(f"{sorted(both)} listed in both `keys` and `label_keys`")
        return self


class ReorientParams(StageParams):
    axcodes: str = Field(
        "RAS",
        min_length=2,
        max_length=3,
        description="Target orientation: where each array axis points, e.g. RAS "
        "(nibabel/MONAI) or LPS (DICOM/ITK). 2D images use the first two letters.",
    )
    keys: list[CaseKey] = Field(
        ["image"],
        min_length=1,
        description="Images and label maps to reorient (an exact flip/permutation: no interpolation, dtype kept).",
        json_schema_extra=_LIST_OF_KEYS,
    )

    @field_validator("axcodes")
    @classmethod
    def _codes(cls, value: str) -> str:
        value = value.upper()
        pairs = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}
        seen = [pairs.get(c) for c in value]
        if None in seen:
            raise ValueError(f"axcodes letters must be from L/R, P/A, I/S, got {value!r}")
        if len(set(seen)) != len(seen):
            raise ValueError(f"axcodes {value!r} names an axis twice (use one of L/R, one of P/A, one of I/S)")
        return value


# --------------------------------------------------------------------------- bias_n4


class BiasN4Params(MaskParams):
    shrink_factor: int | list[int] = Field(
        4,
        description="Downsampling of the image the field is fitted on (the correction is applied at full resolution). "
        "One number: the finest axis is shrunk by it and coarser axes proportionally less (about the same mm per "
        "shrunk voxel on every axis); a list: the factor per spatial array axis, as given. Each factor is capped so "
        "that at least 8 voxels remain along an axis.",
    )
    iterations: list[int] = Field(
        [50, 50, 50, 50],
        min_length=1,
        max_length=10,
        description="Maximum iterations per fitting level, coarse to fine; the number of levels is the list's "
        "length (each level doubles the B-spline mesh).",
    )
    convergence_threshold: float = Field(
        0.001, gt=0, le=1, description="A level stops when the change of the field's coefficient of variation falls below this."
    )
    spline_distance_mm: float | None = Field(
        200.0,
        gt=0,
        le=10000,
        description="Distance between B-spline knots at the first level, in mm (ANTs' `-b [200]`): the control "
        "points per axis are ceil(extent / distance) + spline_order. Unset it to give `control_points` instead.",
    )
    control_points: int | list[int] | None = Field(
        None,
        description="Control points at the first level, one number or one per spatial axis (at least spline_order + 1); "
        "only without `spline_distance_mm`.",
    )
    spline_order: int = Field(3, ge=1, le=5, description="Order of the B-spline that models the log bias field.")
    histogram_bins: int = Field(200, ge=16, le=4096, description="Bins of the log-intensity histogram that N4 sharpens.")
    bias_fwhm: float = Field(
        0.15, gt=0, le=2, description="Full width at half maximum of the Gaussian that models the bias in the log histogram."
    )
    wiener_noise: float = Field(0.01, gt=0, le=1, description="Wiener filter noise used to deconvolve the log histogram.")
    auto_mask: Literal["otsu", "none"] = Field(
        "otsu",
        description="Without `mask_key` and `mask_threshold`: `otsu` fits the field on the voxels above Otsu's threshold "
        "(the head or object, not the background noise); `none` uses every voxel. Voxels <= 0 are never used (N4 works on log intensities).",
    )
    bias_key: CaseKey | None = Field(
        None,
        json_schema_extra={"shown": {"type": "str | None"}},
        description="Also write the estimated log bias field (natural log, float32, on the image grid) to this case key; "
        "the corrected image is the input divided by exp(field).",
    )

    @field_validator("shrink_factor", "control_points")
    @classmethod
    def _per_axis(cls, value, info):
        if value is None:
            return value
        values = value if isinstance(value, list) else [value]
        low, high = (1, 64) if info.field_name == "shrink_factor" else (2, 1000)
        if not 1 <= len(values) <= 3:
            raise ValueError(f"give one number or one per spatial axis (2 or 3), got {len(values)}")
        for v in values:
            if not low <= v <= high:
                raise ValueError(f"values must lie in [{low}, {high}], got {v}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _points_replace_distance(cls, data):
        """`control_points` given alone replaces the default `spline_distance_mm`."""
        if isinstance(data, dict) and data.get("control_points") is not None and "spline_distance_mm" not in data:
            data = {**data, "spline_distance_mm": None}
        return data

    @model_validator(mode="after")
    def _mesh(self):
        if self.control_points is not None and self.spline_distance_mm is not None:
            raise ValueError("set either `spline_distance_mm` or `control_points`, not both")
        if self.control_points is None and self.spline_distance_mm is None:
            raise ValueError("set `spline_distance_mm` or `control_points`")
        if self.control_points is not None:
            values = self.control_points if isinstance(self.control_points, list) else [self.control_points]
            if min(values) < self.spline_order + 1:
                raise ValueError(f"control_points must be at least spline_order + 1 ({self.spline_order + 1})")
        if self.bias_key is not None and self.bias_key == self.key:
            raise ValueError("`bias_key` must differ from `key` (the corrected image)")
        return self


# --------------------------------------------------------------------------- registration


def _spec(id_, summary, params, factory, description="", reads=("{key}",), writes=("{key}",)):
    return StageSpec(
        id=id_,
        kind=StageKind.ENHANCER,
        summary=summary,
        description=description,
        params=params,
        factory=f"voxpipe_plugins.enhance.{factory}",
        reads=reads,
        writes=writes,
    )


@hookimpl
def voxpipe_register_stages(register):
    register(
        _spec(
            "enhance.window",
            "CT windowing: a named preset (brain, lung, bone, ...) or level/width in HU mapped linearly "
            "onto [out_min, out_max] with clipping.",
            WindowParams,
            "window:Window",
            description="Exact DICOM VOI LUT windowing (LINEAR_EXACT by default). Presets (level/width in HU): "
            f"{_PRESET_TEXT}; sources in docs/enhancement.md. Runs where the image lives (CPU or GPU).",
        )
    )
    register(
        _spec(
            "enhance.normalize",
            "Intensity normalisation inside an optional mask: z-score to a stated mean/std, or percentile clip-and-rescale.",
            NormalizeParams,
            "normalize:Normalize",
            description="The mask is a label map (`mask_key`, optionally `mask_labels`) and/or an intensity threshold. "
            "Without a mask, mode `percentile` is `intensity.scale` (mode percentile); both use MONAI's "
            "ScaleIntensityRange. Statistics are per channel.",
            reads=("{key}", "{mask_key}"),
        )
    )
    register(
        _spec(
            "enhance.histeq",
            "Histogram equalisation (scikit-image equalize_hist; torch on the GPU), optionally with the "
            "histogram taken inside a mask; output in [0, 1].",
            HistEqParams,
            "histeq:HistogramEqualize",
            reads=("{key}", "{mask_key}"),
        )
    )
    register(
        _spec(
            "enhance.clahe",
            "CLAHE, contrast-limited adaptive histogram equalisation in 2D or 3D (scikit-image), tile size in mm; output in [0, 1].",
            ClaheParams,
            "clahe:Clahe",
            description="3D volumes get true 3D CLAHE (or slice-wise 2D with per_slice). The input is rescaled from its "
            "own min-max, so window CT first. CPU only: neither MONAI nor torch provides CLAHE.",
        )
    )
    register(
        _spec(
            "enhance.gamma",
            "Gamma correction on the image's own range (or lower/upper): brightens (gamma < 1) or darkens (gamma > 1) mid-tones.",
            GammaParams,
            "gamma:Gamma",
        )
    )
    register(
        _spec(
            "enhance.unsharp",
            "Unsharp masking with the blur radius in mm: out = x + amount * (x - gaussian(x)); MONAI "
            "separable filtering, on the GPU when there is one.",
            UnsharpParams,
            "unsharp:Unsharp",
        )
    )
    register(
        _spec(
            "enhance.bias_n4",
            "Bias-field (intensity inhomogeneity) correction with N4 (SimpleITK), fitted on a shrunk image inside a mask; float32 out.",
            BiasN4Params,
            "bias_n4:BiasN4",
            description="SimpleITK's N4BiasFieldCorrectionImageFilter (Tustison 2010) on each channel: a smooth multiplicative "
            "field is fitted as a B-spline of log intensity on a shrunk copy, in physical space (spacing and direction "
            "from the affine, RAS turned into ITK's LPS), then divided out at full resolution. Mask: `mask_key`/`mask_labels`, "
            "`mask_threshold`, or Otsu's foreground by default. 2D and 3D; the affine and metadata are kept.",
            reads=("{key}", "{mask_key}"),
            writes=("{key}", "{bias_key}"),
        )
    )
    register(
        _spec(
            "enhance.resample",
            "Resample to a target spacing in mm (MONAI Spacingd): images interpolated, label maps "
            "nearest; the affine and world positions are kept.",
            ResampleParams,
            "geometry:Resample",
            reads=("{keys}", "{label_keys}"),
            writes=("{keys}", "{label_keys}"),
        )
    )
    register(
        _spec(
            "enhance.reorient",
            "Reorient to axis codes such as RAS or LPS (MONAI Orientationd): an exact flip/permutation with the affine updated.",
            ReorientParams,
            "geometry:Reorient",
            reads=("{keys}",),
            writes=("{keys}",),
        )
    )

"""Registers `radiomics.extract`: IBSI-style first-order, shape and GLCM features inside a mask.

Light on purpose (pydantic + voxpipe only); NumPy, scipy and scikit-image are imported
when the stage is built. docs/matching.md gives every definition.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import CaseKey, StageParams

FeatureSetName = CaseKey  # same rules: a short identifier (it names files and CSV columns)


class RadiomicsParams(StageParams):
    key: CaseKey = Field("image", description="Case key of the image (intensities as loaded: HU on CT).")
    mask_key: CaseKey = Field("label", description="Case key of the label map or mask that defines the region of interest.")
    label_value: int | None = Field(
        1,
        ge=1,
        le=65535,
        json_schema_extra={"shown": {"type": "int | None"}},
        description="Label value of the region; null: every non-zero voxel.",
    )
    name: FeatureSetName = Field("radiomics", description="Feature-set name: the key in `case['features']`, the store and exports.")
    bin_count: int = Field(
        32,
        ge=2,
        le=4096,
        description="Fixed bin number (IBSI FBN): grey levels over the region's own range. Ignored when `bin_width` is set.",
    )
    bin_width: float | None = Field(
        None, gt=0, description="Fixed bin size (IBSI FBS) in image units (e.g. 25 HU); comparable across images with calibrated units."
    )
    bin_lower: float | None = Field(
        None, description="With `bin_width`: lower edge of the first bin (e.g. -1000 HU); unset: the region's minimum."
    )
    glcm_distance: int = Field(1, ge=1, le=8, description="GLCM neighbour distance in voxels (Chebyshev).")
    glcm_aggregation: Literal["averaged", "merged"] = Field(
        "averaged",
        description="`averaged`: features per direction, then the mean (IBSI 3D averaged); `merged`: one matrix summed over directions.",
    )
    surface: Literal["smoothed", "mesh"] = Field(
        "smoothed",
        description="Surface area from a mesh of the mask smoothed by "
        "0.75 voxels (within 3 % on digital spheres) or IBSI's binary-mask mesh (8-14 % high).",
    )
    groups: list[Literal["firstorder", "shape", "glcm"]] = Field(
        ["firstorder", "shape", "glcm"], min_length=1, description="Feature groups to compute."
    )
    min_voxels: int = Field(1, ge=1, description="Fewer voxels in the region than this is an error for the case.")

    @model_validator(mode="after")
    def _bins(self):
        if self.bin_width is not None and "bin_count" in self.model_fields_set:
            raise ValueError("give `bin_count` (fixed bin number) or `bin_width` (fixed bin size), not both")
        if self.bin_lower is not None and self.bin_width is None:
            raise ValueError("`bin_lower` needs `bin_width`")
        return self


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="radiomics.extract",
            kind=StageKind.EXTRACTOR,
            summary="Radiomics features inside a mask (IBSI): first-order statistics, shape in mm, GLCM texture.",
            description=(
                "First-order statistics of the raw intensities in the region (mean, variance, skewness, excess kurtosis, "
                "percentiles, MAD, energy, entropy, ...); shape from marching-cubes meshes with the voxel spacing applied "
                "(volume, surface, sphericity, maximum diameter, PCA axes, extents in mm; area, perimeter and circularity "
                "in 2D); GLCM texture over 13 directions (4 in 2D) after fixed-bin-number or fixed-bin-size "
                "discretisation. Writes case['features'][name] and case['feature_names'][name]."
            ),
            params=RadiomicsParams,
            factory="voxpipe_plugins.radiomics.extract:RadiomicsExtractor",
            reads=("{key}", "{mask_key}"),
            writes=("features", "feature_names"),
        )
    )

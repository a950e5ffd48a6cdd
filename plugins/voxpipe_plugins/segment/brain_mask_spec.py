"""The ``segment.brain_mask`` stage spec and its parameters (registered by the segment family's plugin)."""

from __future__ import annotations

from pydantic import Field, model_validator

from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import CaseKey, ImageKeyParams


class BrainMaskParams(ImageKeyParams):
    output_key: CaseKey = Field("brain", description="Case key for the 0/1 brain mask (uint8, label table {0: background, 1: brain}).")
    threshold_fraction: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="Brain voxels are at or above background + fraction x (brain level - background), the brain level being the "
        "median intensity near the head's centre (like BET's f): lower keeps darker grey matter (and more bridges to the skull).",
    )
    background_fraction: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="The head is what lies above p2 + fraction x (p98 - p2) of the image's 2nd/98th percentiles (BET's rule).",
    )
    erosion_mm: float = Field(
        4.0,
        ge=0.0,
        le=20.0,
        description="Erosion (mm ball) that cuts the bright bridges across the dark CSF/skull gap before the central part is kept.",
    )
    reconstruct_mm: float = Field(
        6.0,
        ge=0.0,
        le=40.0,
        description="Geodesic dilation (mm) back through the thresholded voxels only; at least erosion_mm, less than the gap to the scalp.",
    )
    closing_mm: float = Field(
        8.0, ge=0.0, le=30.0, description="Closing (mm ball) that takes in sulcal CSF and smooths the surface; 0: none."
    )
    centre_radius_mm: float = Field(
        30.0,
        gt=0.0,
        le=200.0,
        description="The kept part is the one with most voxels within this distance of the centre of the head's top 130 mm.",
    )
    stem_cut_fraction: float = Field(
        0.05,
        ge=0.0,
        le=0.5,
        description="Cut the brainstem/spinal cord where, going inferiorly from the widest axial slice, the mask's area first falls "
        "below this fraction of the widest (the skull base); 0: no cut. The superior direction comes from the affine.",
    )
    fill_holes: bool = Field(
        True, description="Fill the ventricles and other enclosed CSF (holes that do not reach the air around the head)."
    )
    masked_key: CaseKey | None = Field(
        None,
        json_schema_extra={"shown": {"type": "str | None"}},
        description="Also write the image with everything outside the brain set to `fill_value` to this key (may be `key` itself).",
    )
    fill_value: float = Field(0.0, description="Value outside the brain in `masked_key`.")

    @model_validator(mode="after")
    def _consistent(self):
        if self.reconstruct_mm < self.erosion_mm:
            raise ValueError(f"reconstruct_mm ({self.reconstruct_mm}) must be at least erosion_mm ({self.erosion_mm})")
        if self.masked_key is not None and self.masked_key == self.output_key:
            raise ValueError("`masked_key` must differ from `output_key` (the mask)")
        return self


def register_brain_mask(register) -> None:
    """Register ``segment.brain_mask`` (brain extraction for whole-head T1)."""
    register(
        StageSpec(
            id="segment.brain_mask",
            kind=StageKind.SEGMENTER,
            summary="Brain extraction for a whole-head T1 MRI: intensity model + mm-aware morphology; writes a 0/1 mask (default key `brain`).",
            description="Robust thresholds from the head's histogram (BET's 2nd/98th percentile rules), an erosion that cuts the "
            "brain from skull and scalp through the dark CSF/skull gap, the part at the head's centre, a geodesic dilation back, "
            "a closing, a cut of the brainstem at the skull base and hole filling. 3D only; run enhance.bias_n4 first on "
            "strongly shaded scans. docs/brain-extraction.md gives the method, the phantom Dice and the limits.",
            params=BrainMaskParams,
            factory="voxpipe_plugins.segment.brain_mask:BrainMask",
            reads=("{key}",),
            writes=("{output_key}", "{masked_key}"),
        )
    )

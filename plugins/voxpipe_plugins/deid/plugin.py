"""Registers `deid.dicom`, the PS3.15 Annex E Basic Profile as a pipeline stage, and `voxpipe deid`.

Light on purpose (pydantic + voxpipe only); pydicom and the engine are imported when the
stage is built. docs/security.md describes every option and what is guaranteed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from voxpipe.commands_spec import CommandSpec
from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import StageParams


class DeidOptionParams(StageParams):
    """The profile's options (PS3.15 E.3); shared by the stage and `voxpipe deid`."""

    retain_long_dates: Literal["off", "full", "modified"] = Field(
        "modified",
        description="Retain Longitudinal Temporal Information: `modified` shifts dates back by a keyed per-patient "
        "offset (intervals kept), `full` keeps them, `off` removes them as the Basic Profile does.",
    )
    retain_patient_chars: bool = Field(False, description="Retain Patient Characteristics (sex, age, size, weight, ...).")
    retain_device: bool = Field(False, description="Retain Device Identity (serial numbers, station names, ...).")
    retain_institution: bool = Field(False, description="Retain Institution Identity (institution name, address, department).")
    retain_uids: bool = Field(False, description="Retain UIDs (no remapping): outputs can then be linked to the originals by anyone.")
    safe_private: list[str] = Field(
        [],
        max_length=1000,
        description="Retain Safe Private: private elements to keep, each "
        "`GGGG,CREATOR,EE` (group, private creator, element byte in hex), e.g. `0019,SIEMENS MR HEADER,0C`. "
        "Every other private element is removed.",
    )
    clean_descriptors: bool = Field(
        False,
        description="Clean Descriptors: keep descriptions and comments with identifying "
        "values of the same data set and date-like text removed (instead of removing them).",
    )
    clean_structured: bool = Field(
        False,
        description="Clean Structured Content: keep SR content trees, processed item by item; "
        "their text values are kept with identifying values and date-like text removed.",
    )
    clean_graphics: bool = Field(False, description="Clean Graphics: keep graphic annotations and overlays, processed item by item.")
    burned_in: Literal["quarantine", "blank"] = Field(
        "quarantine",
        description="Images flagged BurnedInAnnotation YES, and US / secondary capture without the flag: "
        "`quarantine` refuses them with a reason; `blank` blanks `blank_regions` and keeps them.",
    )
    blank_regions: list[list[int]] = Field(
        [],
        max_length=64,
        description="Rectangles to blank with `burned_in: blank`, each "
        "[row0, col0, row1, col1] in pixels, end exclusive, the same in every frame.",
    )
    max_depth: int = Field(16, ge=1, le=128, description="Deepest sequence nesting accepted; deeper data sets are refused.")
    max_shift_days: int = Field(3650, ge=1, le=36500, description="Largest date shift in days (each patient's offset is 1..this).")

    @field_validator("safe_private")
    @classmethod
    def _safe_private(cls, values: list[str]) -> list[str]:
        import re

        for value in values:
            parts = [p.strip() for p in value.split(",")]
            if (
                len(parts) != 3
                or not re.fullmatch(r"[0-9A-Fa-f]{4}", parts[0])
                or int(parts[0], 16) % 2 == 0
                or not 0 < len(parts[1]) <= 64
                or not re.fullmatch(r"[0-9A-Fa-f]{2}", parts[2])
            ):
                raise ValueError(f"`{value}`: expected GGGG,CREATOR,EE with an odd group, e.g. 0019,SIEMENS MR HEADER,0C")
        return values

    @field_validator("blank_regions")
    @classmethod
    def _regions(cls, values: list[list[int]]) -> list[list[int]]:
        for region in values:
            if len(region) != 4 or any(v < 0 for v in region) or region[2] <= region[0] or region[3] <= region[1]:
                raise ValueError(f"{region}: expected [row0, col0, row1, col1] with row1 > row0 and col1 > col0")
        return values

    def engine_options(self):
        from voxpipe_plugins.deid.engine import DeidOptions

        return DeidOptions(
            retain_long_dates=self.retain_long_dates,
            retain_patient_chars=self.retain_patient_chars,
            retain_device=self.retain_device,
            retain_institution=self.retain_institution,
            retain_uids=self.retain_uids,
            safe_private=tuple(self.safe_private),
            clean_descriptors=self.clean_descriptors,
            clean_structured=self.clean_structured,
            clean_graphics=self.clean_graphics,
            burned_in=self.burned_in,
            blank_regions=tuple(tuple(r) for r in self.blank_regions),
            max_depth=self.max_depth,
            max_shift_days=self.max_shift_days,
        )


class DeidParams(DeidOptionParams):
    key_file: str | None = Field(
        None,
        description="The key file (64 hex digits; created 0600 when missing), relative to the "
        "config file; must lie outside the output folder. Unset: `$VOXPIPE_DEID_KEY_FILE`, else "
        "~/.config/voxpipe/deid.key.",
    )
    folder: str = Field(
        "dicom",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Folder in the case output for the de-identified source series (DICOM cases).",
    )
    max_gib: float = Field(16.0, gt=0, le=1024, description="Refuse source files that are, or inflate to, more than this many GiB.")


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="deid.dicom",
            kind=StageKind.TRANSFORM,
            summary="De-identify: DICOM PS3.15 Annex E Basic Profile with keyed UIDs and date shifts; clean image metadata.",
            description=(
                "Driven by the standard's attribute table (Table E.1-1, every row mapped to an action). On a DICOM case the "
                "source series is de-identified into the case folder (`folder`) and later stages (write.dicom_seg) reference "
                "the de-identified copies; DICOM files already written to the case folder are de-identified in place. On any "
                "case, image metadata is reduced to technical facts. UIDs become keyed `2.25.` UIDs and dates move by a keyed "
                "per-patient offset, the same in every run and order; private tags go unless listed in `safe_private`; images "
                "that may carry burned-in text are quarantined (the case fails with the reason) unless `burned_in: blank`."
            ),
            params=DeidParams,
            factory="voxpipe_plugins.deid.stage:DeidStage",
            reads=(),
            writes=(),
        )
    )


@hookimpl
def voxpipe_register_commands(register):
    register(
        CommandSpec(
            name="deid",
            summary="De-identify every DICOM file under INPUT into OUTPUT (PS3.15 Annex E Basic Profile, keyed).",
            factory="voxpipe_plugins.deid.commands:deid",
        )
    )

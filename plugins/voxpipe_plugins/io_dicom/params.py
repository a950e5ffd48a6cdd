"""Parameter models for DICOM loading (pydantic only: imported when the registry loads)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from voxpipe_plugins.common.params import CaseKey, StageParams
from voxpipe_plugins.deid.plugin import DeidOptionParams

Orientation = Literal["axial", "coronal", "sagittal", "oblique", "none"]


class SeriesSelect(StageParams):
    """Which series to process; every rule given must match. Others are skipped and counted."""

    modality: list[str] = Field([], description="Keep series of these modalities (e.g. [CT]); empty keeps all.")
    description: str | None = Field(
        None, max_length=200, description="Regular expression searched in SeriesDescription, e.g. '(?i)axial|ax '."
    )
    min_slices: int = Field(1, ge=1, le=100000, description="Skip series with fewer slices (drops stray single images).")
    orientation: list[Orientation] = Field([], description="Keep series with these slice orientations; empty keeps all.")

    @field_validator("description")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class DicomOptionsParams(StageParams):
    dtype: Literal["auto", "float32"] = Field(
        "auto",
        description="`auto`: exact stored type after rescale (int16/int32 when slopes are 1 and intercepts whole, "
        "float32 otherwise); `float32`: always float32.",
    )
    irregular: Literal["refuse", "resample"] = Field(
        "refuse",
        description="Series with missing slices, uneven spacing or gantry tilt: `refuse` fails the case with a "
        "clear reason; `resample` interpolates onto a uniform grid and records a warning.",
    )
    spacing_tolerance: float = Field(0.05, gt=0, le=0.5, description="Allowed relative deviation of a slice step from the median step.")
    max_gib: float = Field(16.0, gt=0, le=1024, description="Refuse series whose declared size exceeds this many GiB, before allocating.")
    select: SeriesSelect = Field(default_factory=SeriesSelect, description="Series selection rules.")
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description=(
            "Processes for decoding compressed frames when loading in the main process (`--workers 0`, `convert`); "
            "pipeline workers decode serially. 0 = one per CPU core (max 8)."
        ),
    )


class DicomLoadParams(DicomOptionsParams):
    key: str = Field("image", min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Case key of the loaded image.")


class DicomSegParams(StageParams):
    label_key: CaseKey = Field("label", description="Case key of the label map (integer values = segments).")
    image_key: CaseKey = Field("image", description="Case key of the image loaded from the source series.")
    filename: str = Field("segmentation.dcm", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.dcm$", description="File name inside the case folder.")
    series_description: str = Field("VoxPipe segmentation", max_length=64, description="SeriesDescription of the SEG series.")
    series_number: int = Field(9001, ge=1, le=2**31 - 1, description="SeriesNumber of the SEG series.")
    algorithm: str = Field("VoxPipe", min_length=1, max_length=64, description="Algorithm name recorded in each segment.")
    identity: Literal["deidentified", "source"] = Field(
        "deidentified",
        description="Whose identity the SEG carries. `deidentified` (default): patient, study, frame of "
        "reference and referenced instances come from de-identified copies of the source headers, keyed with `key_file` "
        "and `deid` exactly as `deid.dicom` / `voxpipe deid` key them, so the SEG lines up with the source series "
        "de-identified with the same key and options (a source that `deid.dicom` already de-identified is used as it is). "
        "`source`: the SEG keeps the source's patient and study identity and UIDs (and, as highdicom records in any "
        "derived object, the acquisition equipment: institution, station, device serial), for sending it back to the "
        "PACS it came from; it then identifies the patient.",
    )
    key_file: str | None = Field(
        None,
        description="`identity: deidentified`: the de-identification key, as for deid.dicom "
        "(relative to the config; must lie outside the output folder). Unset: "
        "`$VOXPIPE_DEID_KEY_FILE`, else ~/.config/voxpipe/deid.key.",
    )
    deid: DeidOptionParams = Field(
        default_factory=DeidOptionParams,
        description="`identity: deidentified`: the profile "
        "options, the same as deid.dicom's; give the ones the source series is de-identified with.",
    )

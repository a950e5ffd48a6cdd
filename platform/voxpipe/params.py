"""Parameter-model building blocks for stages (pydantic only, no heavy imports): core API for plugin authors."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

CaseKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
FileName = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="A plain file name (no folders)."),
]


class StageParams(BaseModel):
    """Base for parameter models: unknown fields are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)


class ImageKeyParams(StageParams):
    key: CaseKey = Field("image", description="Case key of the image to process.")

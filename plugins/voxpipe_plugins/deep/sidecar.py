"""Checkpoint sidecars validated like config parameters, before any network is built from them.

A sidecar (``best.json`` beside ``best.safetensors``) comes with the weights, from wherever
the weights came from, and it decides what gets built: ``"logits": 4000000`` in a head's
sidecar allocated 1.45 GiB of classifier before the weights were even compared. So a
sidecar is parsed into a pydantic model with the same kind of bounds as a stage's
parameters (strict types: no strings for numbers, no floats for counts, no booleans for
either; finite numbers; unknown keys refused) and refused with one line that names the
sidecar and the field. Models here are for ``segment.deep``; heads have theirs in
:mod:`voxpipe_plugins.heads.sidecar`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from voxpipe_plugins.deep.weights import WeightsError, read_sidecar, sidecar_path

Model = TypeVar("Model", bound=BaseModel)

Name = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]  # an identifier: no dots, no paths
Text = Annotated[StrictStr, Field(max_length=256)]
Count = Annotated[StrictInt, Field(ge=0, le=10**6)]
Score = Annotated[StrictFloat, Field(ge=-1.0, le=1.0)]


class Sidecar(BaseModel):
    """Base of sidecar models: unknown keys are refused, numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class DeepSidecar(Sidecar):
    """What `voxpipe train` (task segmentation) writes beside `segment.deep` weights; every key optional."""

    network: Name | None = None
    args: dict[Name, Any] | None = Field(None, max_length=64)  # compared with the config's, shown in messages, never built
    epoch: Count | None = None
    best_epoch: Count | None = None
    best_dice: Score | None = None
    val_dice: Score | None = None
    label_names: dict[Annotated[StrictStr, Field(pattern=r"^[0-9]{1,5}$")], Annotated[StrictStr, Field(max_length=128)]] | None = Field(
        None, max_length=1024
    )
    roi_size: list[Annotated[StrictInt, Field(ge=1, le=4096)]] | None = Field(None, min_length=1, max_length=3)
    output: Literal["argmax", "threshold"] | None = None
    config: Annotated[StrictStr, Field(max_length=4096)] | None = None
    task: Literal["segmentation"] | None = None
    saved: Annotated[StrictStr, Field(max_length=32)] | None = None


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validated(model: type[Model], data: dict[str, Any], weights: Path) -> Model:
    """``data`` (read from ``weights``' sidecar) as ``model``, or one line naming the sidecar, the field and the rule."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        shown = error["type"] not in ("missing", "extra_forbidden", "value_error") and error["loc"]
        got = f" = {_shown(error.get('input'))}" if shown else ""
        message = error["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise WeightsError(
            f"checkpoint sidecar {sidecar_path(weights).name}: refused before building the network: "
            f"`{_where(error['loc'])}`{got}: {message}{more}; use the .json that `voxpipe train` wrote beside "
            f"{weights.name}"
        ) from None


def read_deep_sidecar(weights: Path) -> DeepSidecar:
    """The validated sidecar of `segment.deep` weights (all fields unset when there is none)."""
    return validated(DeepSidecar, read_sidecar(weights), weights)

"""A head checkpoint's sidecar, bounded exactly like the head stages' own parameters.

The architecture fields take their bounds from :class:`VGGRNNHeadParams` (the stage's
parameter model), so a sidecar can ask for nothing a config could not: ``logits`` is bounded
by the classes a stage may have (1000), ``hidden`` by its 8192, and so on. Input options
(``size``, ``slice_axis``, ...) are bounded as :class:`VGGInputParams` bounds them, because
they decide how large the network's input is made. Cross-checks (logits against classes,
RNN against slice mode) catch sidecars that were edited by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from voxpipe_plugins.deep.sidecar import Count, Name, Sidecar, Text, validated
from voxpipe_plugins.deep.weights import read_sidecar
from voxpipe_plugins.features.architectures import ARCHITECTURES
from voxpipe_plugins.heads.plugin import VGGHeadParams, VGGRNNHeadParams

MAX_CLASSES = VGGHeadParams.model_fields["classes"].metadata[-1].max_length  # the stage's own bound (1000)
Finite = Annotated[StrictFloat, Field(ge=-1e12, le=1e12)]


def _bounded(kind, name: str):
    """``kind`` with the bounds the head stages put on their parameter ``name`` (one source of truth)."""
    return Annotated[kind, *VGGRNNHeadParams.model_fields[name].metadata]


class HeadArchitectureSidecar(Sidecar):
    """``architecture`` (and its copy ``args``): every field of :class:`HeadArchitecture`, bounded."""

    arch: Literal[tuple(ARCHITECTURES)] = "vgg16"  # type: ignore[valid-type]
    width: _bounded(StrictFloat, "width") = 1.0  # type: ignore[valid-type]
    in_channels: Literal[1, 3] = 3
    task: Literal["multitask", "classification", "regression"] = "multitask"
    logits: Annotated[StrictInt, Field(ge=1, le=MAX_CLASSES)] = 2
    hidden: _bounded(StrictInt, "hidden") = 0  # type: ignore[valid-type]
    dropout: _bounded(StrictFloat, "dropout") = 0.0  # type: ignore[valid-type]
    rnn: Literal["gru", "lstm"] | None = None
    rnn_hidden: _bounded(StrictInt, "rnn_hidden") = 128  # type: ignore[valid-type]
    rnn_layers: _bounded(StrictInt, "rnn_layers") = 1  # type: ignore[valid-type]
    bidirectional: StrictBool = False


class InputSidecar(Sidecar):
    """``input``: how images were prepared in training, passed to ``features.inputs.prepare`` as keywords."""

    mode: Literal["2d", "slices"]
    slice_axis: Annotated[StrictInt, Field(ge=0, le=2)] = 2
    in_channels: Literal[1, 3] = 3
    intensity: Literal["minmax", "none"] = "minmax"
    normalise: StrictBool = False
    size: list[Annotated[StrictInt, Field(ge=32, le=4096)]] | None = Field(None, min_length=2, max_length=2)


class HeadSidecar(Sidecar):
    """What `voxpipe train` (task heads) writes beside a head checkpoint."""

    architecture: HeadArchitectureSidecar
    network: Literal["voxpipe.heads"] | None = None
    args: HeadArchitectureSidecar | None = None
    stage: Literal["head.vgg", "head.vgg_rnn"] | None = None
    classes: list[Annotated[StrictStr, Field(min_length=1, max_length=256)]] | None = Field(None, min_length=2, max_length=MAX_CLASSES)
    target_mean: Finite = 0.0
    target_std: Annotated[StrictFloat, Field(gt=0, le=1e12)] = 1.0
    target_name: Name = "regression"
    classification_loss: Literal["ce", "bce", "focal"] = "ce"
    input: InputSidecar | None = None
    epoch: Count | None = None
    best_epoch: Count | None = None
    best_val_loss: float | None = Field(None, allow_inf_nan=True)  # informational; +inf before the first validation
    seed: Annotated[StrictInt, Field(ge=0)] | None = None
    split: dict[Literal["train", "val", "test"], Annotated[StrictInt, Field(ge=0, le=10**9)]] | None = None
    config: Text | None = None
    task: Literal["heads"] | None = None
    notes: list[Text] | None = Field(None, max_length=64)
    saved: Annotated[StrictStr, Field(max_length=32)] | None = None

    @model_validator(mode="after")
    def _consistent(self):
        arch = self.architecture
        if self.args is not None and self.args != arch:
            raise ValueError("`args` differs from `architecture`")
        if arch.task in ("multitask", "classification") and self.classes is not None:
            expected = {len(self.classes)} | ({1} if self.classification_loss == "bce" and len(self.classes) == 2 else set())
            if arch.logits not in expected:
                raise ValueError(f"architecture.logits {arch.logits} does not fit {len(self.classes)} classes")
        if self.input is not None:
            if (self.input.mode == "slices") != (arch.rnn is not None):
                raise ValueError(f"input.mode `{self.input.mode}` does not fit architecture.rnn {arch.rnn!r}")
            if self.input.in_channels != arch.in_channels:
                raise ValueError("input.in_channels differs from architecture.in_channels")
        return self

    def input_options(self) -> dict[str, Any]:
        return self.input.model_dump() if self.input is not None else {}


def read_head_sidecar(weights: Path) -> HeadSidecar | None:
    """The validated sidecar of a head checkpoint; ``None`` when there is no sidecar at all."""
    data = read_sidecar(weights)
    return validated(HeadSidecar, data, weights) if data else None

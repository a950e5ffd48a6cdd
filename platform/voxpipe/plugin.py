"""The author's kit: the one public module a VoxPipe plugin needs (docs/writing-plugins.md).

Everything a plugin imports from VoxPipe comes from here; the rest of ``voxpipe`` is private
and may change. Registering is light: ``from voxpipe.plugin import hookimpl, StageSpec`` imports
pydantic and pluggy only. The MetaTensor helpers, the report items and the test helper are
imported on first use (torch and MONAI come with the MetaTensor helpers), so a plugin's
registration module never pays for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from voxpipe.atomic import atomic_path
from voxpipe.hookspecs import hookimpl
from voxpipe.params import CaseKey, FileName, ImageKeyParams, StageParams
from voxpipe.stage import StageContext, StageKind, StageSpec, TrainerSpec, record

if TYPE_CHECKING:  # imported on first use, see __getattr__
    from voxpipe.commands_spec import CommandSpec
    from voxpipe.image_checks import StageInputError
    from voxpipe.input_sources import InputSourceError, InputSourceSpec, open_input, redacted_source
    from voxpipe.metatensors import (
        affine_of,
        as_image,
        as_label,
        label_names,
        make_metatensor,
        spacing,
    )
    from voxpipe.plugin_testing import run_stage, synthetic_case
    from voxpipe.report_items import report_metric, report_picture

__all__ = [
    "CaseKey",
    "CommandSpec",
    "FileName",
    "ImageKeyParams",
    "InputSourceError",
    "InputSourceSpec",
    "StageContext",
    "StageInputError",
    "StageKind",
    "StageParams",
    "StageSpec",
    "TrainerSpec",
    "affine_of",
    "as_image",
    "as_label",
    "atomic_path",
    "hookimpl",
    "label_names",
    "make_metatensor",
    "open_input",
    "record",
    "redacted_source",
    "report_metric",
    "report_picture",
    "run_stage",
    "spacing",
    "synthetic_case",
]

_LAZY = {
    "CommandSpec": "voxpipe.commands_spec",
    "report_metric": "voxpipe.report_items",
    "report_picture": "voxpipe.report_items",
    "spacing": "voxpipe.metatensors",
    "affine_of": "voxpipe.metatensors",
    "as_image": "voxpipe.metatensors",
    "as_label": "voxpipe.metatensors",
    "label_names": "voxpipe.metatensors",
    "make_metatensor": "voxpipe.metatensors",
    "StageInputError": "voxpipe.image_checks",
    "InputSourceSpec": "voxpipe.input_sources",
    "InputSourceError": "voxpipe.input_sources",
    "open_input": "voxpipe.input_sources",
    "redacted_source": "voxpipe.input_sources",
    "run_stage": "voxpipe.plugin_testing",
    "synthetic_case": "voxpipe.plugin_testing",
}


def __getattr__(name: str) -> Any:
    """Import the heavier helpers when a plugin first uses them (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'voxpipe.plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

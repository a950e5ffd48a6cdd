"""The stage contract: what a plugin declares about a stage, and how the stage is built.

A :class:`StageSpec` is pure data. Declaring one imports nothing heavy: the parameter
model is a small pydantic class and the factory may be a ``"module:attribute"`` string
that is imported only when the stage is built. This keeps ``voxpipe --help``,
``voxpipe plugins`` and ``voxpipe validate`` free of torch and MONAI.

A built stage is a callable ``stage(case: dict) -> dict`` -- the calling convention of a
MONAI dictionary transform -- so the same object works inside a plain
``monai.transforms.Compose``.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGE_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
"""Stage ids are lower-case dotted names: ``family.name`` (``denoise.nlm``)."""


class StageKind(str, enum.Enum):
    """What a stage does in a pipeline; used for grouping, docs and order checks."""

    LOADER = "loader"
    DENOISER = "denoiser"
    ENHANCER = "enhancer"
    SEGMENTER = "segmenter"
    EXTRACTOR = "extractor"
    MATCHER = "matcher"
    HEAD = "head"
    WRITER = "writer"
    TRANSFORM = "transform"


Factory = Callable[..., Callable[[dict], dict]]


@dataclass(frozen=True)
class StageSpec:
    """Everything the registry needs to know about a stage, without building it.

    Attributes:
        id: dotted registry id, ``family.name``.
        kind: the stage's :class:`StageKind`.
        summary: one line shown by ``voxpipe plugins``.
        params: pydantic model of the stage's parameters (``extra="forbid"``).
        factory: callable, or ``"module:attribute"`` imported at build time. It is called
            with the validated parameters as keyword arguments, plus ``device`` and/or
            ``context`` if its signature names them, and returns the stage callable.
        reads: case keys the stage needs (``image``); a string naming a parameter in
            braces (``"{key}"``) is resolved from the stage's parameters.
        writes: case keys the stage produces, same rules as ``reads``.
        discover: loaders only: callable or ``"module:attribute"`` returning the cases
            under an input path (see :mod:`voxpipe.cases`).
        description: longer help text for ``voxpipe plugins show``.
        content_files: names of parameters that name files whose *contents* determine the
            results (weights, lookup tables). Their sha256 goes into the config hash, so
            retrained weights saved under the same name make a rerun redo its cases.
        check: optional callable or ``"module:attribute"`` that ``voxpipe validate`` calls as
            ``check(params, config_dir)`` (or ``check(params, config_dir, earlier)``, with
            ``earlier`` the (stage id, params) of the stages before it) after the parameters validate, returning problems
            (one line each, empty when fine) about what the parameters name: a missing or
            mismatched weights file is reported before any case runs. It must stay light
            (no torch): validation never imports heavy code.
    """

    id: str
    kind: StageKind
    summary: str
    params: type
    factory: Factory | str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    discover: Callable[..., Any] | str | None = None
    description: str = ""
    content_files: tuple[str, ...] = ()
    check: Callable[..., list[str]] | str | None = None
    # Filled in by the registry: which plugin and distribution registered the spec.
    plugin: str = ""
    distribution: str = ""
    version: str = ""

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]

    def resolve_keys(self, keys: tuple[str, ...], params: Any) -> list[str]:
        """Expand ``"{param}"`` placeholders in ``reads``/``writes`` from parameter values."""
        resolved: list[str] = []
        for key in keys:
            if key.startswith("{") and key.endswith("}"):
                value = getattr(params, key[1:-1], None)
                if value is None or not isinstance(value, (str, list, tuple)):  # unset, or left to a library default
                    continue
                if isinstance(value, (list, tuple)):
                    resolved.extend(str(v) for v in value)
                else:
                    resolved.append(str(value))
            else:
                resolved.append(key)
        return resolved


@dataclass(frozen=True)
class TrainerSpec:
    """A trainer for ``voxpipe train``, chosen by the config's ``training.task``.

    Attributes:
        task: the name configs use (``segmentation``, ``classification``, ...).
        summary: one line for ``voxpipe plugins``.
        params: pydantic model of the ``training:`` section (``extra="forbid"``), light to import.
        factory: callable or ``"module:attribute"``; called as
            ``factory(params=..., config=ValidatedConfig, context=StageContext)`` and returning an
            object with ``run(output_dir: Path, resume: bool) -> dict`` (a summary of the run).
    """

    task: str
    summary: str
    params: type
    factory: Callable[..., Any] | str
    description: str = ""
    plugin: str = ""
    distribution: str = ""
    version: str = ""


@dataclass
class StageContext:
    """What a stage may know about the run it is built for."""

    device: str = "cpu"
    config_dir: Path = field(default_factory=Path.cwd)
    stage_id: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def resolve_path(self, path: str | Path) -> Path:
        """Paths in configs (weights, tables) are relative to the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.config_dir / p)


def import_object(ref: str) -> Any:
    """Import ``"package.module:attribute"``; used only for references in plugin code, never configs."""
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected 'module:attribute', got {ref!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def build_stage(spec: StageSpec, params: Any, context: StageContext) -> Callable[[dict], dict]:
    """Build a stage from its spec and validated parameters (imports its heavy code)."""
    factory = import_object(spec.factory) if isinstance(spec.factory, str) else spec.factory
    kwargs = {name: getattr(params, name) for name in type(params).model_fields}
    kwargs.update(params.model_extra or {})
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    if "device" in accepted:
        kwargs["device"] = context.device
    if "context" in accepted:
        kwargs["context"] = context
    return factory(**kwargs)


def record(case: dict, op: str, **details: Any) -> None:
    """Add what a stage did to the case's history (written to ``case.json``).

    Copy-on-write: ``case["history"]`` becomes a new list, so after the documented
    ``out = dict(case); record(out, ...)`` the input case's history is unchanged (a shallow
    copy shares the list). Values should be small and JSON-friendly: thresholds, sigmas,
    chosen devices.
    """
    case["history"] = [*case.get("history", ()), {"op": op, **details}]


def build_trainer(spec: TrainerSpec, params: Any, config: Any, context: StageContext):
    """Build a trainer from its spec (imports its heavy code)."""
    factory = import_object(spec.factory) if isinstance(spec.factory, str) else spec.factory
    return factory(params=params, config=config, context=context)

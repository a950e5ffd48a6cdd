"""Pipeline configs: read safely, override from the command line, validate completely.

A config is YAML holding registry ids and literal values only::

    version: 1
    name: demo
    device: auto
    stages:
      - use: load.auto
      - use: denoise.gaussian
        with: {sigma_mm: 1.0}

Validation happens before anything heavy is imported or any file is written, and reports
*every* problem at once, one line each: file and line, stage index and id, field, what
was expected, and the closest valid name. Nothing in a config is ever executed or
imported: YAML tags, MONAI-bundle style ``$`` expressions and ``_target_`` keys are
refused outright, and ``use`` must name a registered stage.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxpipe import safe_yaml
from voxpipe.errors import ConfigError, Problem
from voxpipe.registry import Registry
from voxpipe.stage import StageKind, StageSpec, import_object
from voxpipe.suggest import did_you_mean

SCHEMA_VERSION = 1
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
_RESERVED_KEY = re.compile(r"^_.*_$")  # MONAI bundle / Hydra style: _target_, _requires_, ...
_IMPORT_REF = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_][\w.]*$")  # "package.module:attr"


class StageEntry(BaseModel):
    """One stage in a config: which registered stage to use, and its parameters."""

    model_config = ConfigDict(extra="forbid")

    use: str = Field(description="Registry id of the stage, e.g. `denoise.gaussian` or `monai.ScaleIntensityRanged`.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="The stage's parameters.")
    id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z][A-Za-z0-9_-]*$",
        description="Optional short name for the stage, used by `--set ID.FIELD=VALUE` and in manifests.",
    )


class InputsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, description="Default input path (relative to the config file) when -i is not given.")


class OutputsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, description="Default output folder (relative to the config file) when -o is not given.")


class PipelineConfig(BaseModel):
    """The top level of a config file."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(description="Config schema version; currently 1.")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64, description="Pipeline name (letters, digits, _ . -).")
    description: str = Field(default="", description="Free text for people reading the config.")
    device: str = Field(default="auto", pattern=DEVICE_PATTERN, description="auto, cpu, cuda or cuda:N.")
    inputs: InputsSection = Field(default_factory=InputsSection)
    outputs: OutputsSection = Field(default_factory=OutputsSection)
    stages: list[StageEntry] = Field(min_length=1, description="The stages, run in order on every case.")
    training: dict[str, Any] | None = Field(
        default=None, description="For `voxpipe train`: `task` names a registered trainer; the other fields are its parameters."
    )


@dataclass
class PlannedStage:
    """A validated stage: its position, spec and parameter values."""

    index: int  # 1-based, as shown to users
    label: str  # the config's `id`, or the registry id
    spec: StageSpec
    params: BaseModel

    @property
    def reads(self) -> list[str]:
        return self.spec.resolve_keys(self.spec.reads, self.params)

    @property
    def writes(self) -> list[str]:
        return self.spec.resolve_keys(self.spec.writes, self.params)

    def resolved(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"use": self.spec.id}
        if self.label != self.spec.id:
            entry["id"] = self.label
        entry["with"] = _jsonable(self.params)
        return entry


@dataclass
class ValidatedConfig:
    """A config that passed every check, ready to be built into a pipeline."""

    source: str  # file name shown in messages
    config_dir: Path
    config: PipelineConfig
    stages: list[PlannedStage]
    overrides: list[str] = field(default_factory=list)
    training: Any = None  # the trainer's validated parameters, when the config has a `training:` section
    trainer: Any = None  # its TrainerSpec

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in: what actually runs."""
        resolved = {
            "version": self.config.version,
            "name": self.config.name,
            "device": self.config.device,
            "stages": [stage.resolved() for stage in self.stages],
        }
        if self.training is not None:
            resolved["training"] = {"task": self.trainer.task, **json.loads(json.dumps(self.training.model_dump(mode="json")))}
        return resolved

    @property
    def hash(self) -> str:
        """sha256 of what determines the results: stages, their parameters, versions and code.

        The device is left out (the same processing on CPU or GPU is the same result, up to
        floating-point noise); a new version of a stage's distribution counts as a change, and
        so does an edit to the source of a plugin package the config uses (an editable
        install changes without a new version; :mod:`voxpipe.plugin_code`).
        """
        resolved = self.resolved()
        resolved.pop("device", None)
        resolved.pop("training", None)  # training settings do not change what `run` does to a case
        resolved.pop("name", None)
        resolved["versions"] = [f"{s.spec.distribution} {s.spec.version}" for s in self.stages]
        resolved["files"] = self._content_digests()
        from voxpipe.plugin_code import code_digests

        resolved["code"] = code_digests(s.spec for s in self.stages)
        canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _content_digests(self) -> list[str]:
        """sha256 of every existing file a stage declares as content (``StageSpec.content_files``).

        A file that does not exist yet (weights before ``voxpipe train``) counts as its name only;
        ``voxpipe run`` reports it missing when the stage is built.
        """
        digests = []
        for stage in self.stages:
            for name in stage.spec.content_files:
                value = getattr(stage.params, name, None)
                if not isinstance(value, str) or not value:
                    continue
                path = Path(value).expanduser()
                path = path if path.is_absolute() else self.config_dir / path
                if path.is_file():
                    from voxpipe.digest import file_sha256

                    digests.append(f"{stage.index}.{name}:{file_sha256(path)}")
        return digests


def _jsonable(params: BaseModel) -> dict[str, Any]:
    from voxpipe.monai_adapter import MONAI_DEFAULT

    data = {k: v for k, v in params if v is not MONAI_DEFAULT}
    data.update(params.model_extra or {})
    return json.loads(json.dumps(data, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "value"):
        return value.value
    return str(value)


# ----------------------------------------------------------------------------- loading


def load_config(
    path: str | Path,
    registry: Registry,
    overrides: list[str] | tuple[str, ...] = (),
    device: str | None = None,
) -> ValidatedConfig:
    """Read, override and validate a config file. Raises :class:`ConfigError` listing every problem."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: config file not found; check the path"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{source}: is a folder, expected a YAML config file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: cannot read config: {type(exc).__name__}"]) from None
    return validate_text(text, registry, source=source, config_dir=path.resolve().parent, overrides=overrides, device=device)


def validate_text(
    text: str,
    registry: Registry,
    source: str = "<config>",
    config_dir: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    device: str | None = None,
) -> ValidatedConfig:
    """Validate config text; see :func:`load_config`."""
    try:
        document = safe_yaml.load(text)
    except safe_yaml.YamlProblem as problem:
        raise ConfigError([f"{_where(source, problem.line)}: {problem.message}"]) from None
    if not isinstance(document.data, dict):
        raise ConfigError([f"{source}: expected a mapping with `version`, `name` and `stages`, got {_type_name(document.data)}"])
    data = document.data
    set_paths: set[tuple] = set()
    problems = apply_overrides(data, overrides, source, applied=set_paths)
    if device is not None:
        data["device"] = device
    problems += _code_like_values(document, source, set_paths)  # after --set: overrides are checked too
    if problems:
        raise ConfigError(problems)
    checker = _Checker(source, document, registry, set_paths=set_paths)
    return checker.check(data, config_dir or Path.cwd(), list(overrides))


def _where(source: str, line: int) -> str:
    return f"{source}:{line}" if line else source


def _located(source: str, document: safe_yaml.LocatedDocument, path: tuple, set_paths: set[tuple]) -> str:
    """``file:line`` of a value, or ``file (--set)`` when a ``--set`` override put it there."""
    if any(path[: len(p)] == p for p in set_paths):
        return f"{source} (--set)"
    return _where(source, document.line_of(path))


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}.get(type(value), type(value).__name__)


def _code_like_values(document: safe_yaml.LocatedDocument, source: str, set_paths: set[tuple] = frozenset()) -> list[str]:
    """Refuse anything that looks like a request to run or import code."""
    problems: list[str] = []

    def walk(value: Any, path: tuple) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and _RESERVED_KEY.match(key):
                    problems.append(
                        f"{_located(source, document, path + (key,), set_paths)}: key `{key}` is not allowed: "
                        "configs name registered stages with `use:` and never import code"
                    )
                walk(item, path + (key,))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, path + (i,))
        elif isinstance(value, str):
            text = value.strip()
            free_text = path in (("description",), ("name",))
            if text.startswith("$") or (not free_text and _IMPORT_REF.match(text)) or "__" in text and "(" in text:
                problems.append(
                    f"{_located(source, document, path, set_paths)}: value {text[:40]!r} looks like code or an import path; "
                    "configs hold literal values only"
                )

    walk(document.data, ())
    return problems


# ----------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"stage.field=value"`` -> (``"stage.field"``, parsed YAML scalar/list value)."""
    target, sep, raw = text.partition("=")
    if not sep or not target.strip():
        raise ValueError(f"--set {_shown(text)}: expected STAGE.FIELD=VALUE")
    if target.count(".") >= safe_yaml.MAX_DEPTH:
        raise ValueError(f"--set {_shown(text)}: field path nested more than {safe_yaml.MAX_DEPTH} levels")
    try:
        value = safe_yaml.load(raw).data if raw.strip() else ""
    except safe_yaml.YamlProblem as problem:
        raise ValueError(f"--set {_shown(text)}: {problem.message}") from None
    return target.strip(), value


def _shown(text: str, limit: int = 60) -> str:
    """An override as quoted in a message: one line, at most ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _stage_refs(stages: list[Any]) -> dict[str, int]:
    """Names a `--set` may use for a stage: its `id`, its `use` id if unique, its 1-based index."""
    refs: dict[str, int] = {}
    uses: dict[str, list[int]] = {}
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            continue
        refs[str(i + 1)] = i
        if isinstance(stage.get("use"), str):
            uses.setdefault(stage["use"], []).append(i)
    for use, positions in uses.items():
        if len(positions) == 1:
            refs[use] = positions[0]
    for i, stage in enumerate(stages):
        if isinstance(stage, dict) and isinstance(stage.get("id"), str):
            refs[stage["id"]] = i
    return refs


def _resolve_target(data: dict, target: str) -> tuple[int | None, list[str]]:
    """Split ``a.b.field`` into a stage position (or None for top level) and a field path."""
    top_level = {"name", "description", "device", "version"}
    head = target.split(".", 1)[0]
    if head in top_level or head in {"inputs", "outputs", "training"}:
        return None, target.split(".")
    refs = _stage_refs(data.get("stages") or [])
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # longest stage reference first: `denoise.gaussian.sigma_mm`
        ref = ".".join(parts[:cut])
        if ref in refs:
            return refs[ref], parts[cut:]
    raise LookupError(did_you_mean(".".join(parts[:-1]), refs) or f"; stages are: {', '.join(sorted(refs, key=str)) or 'none'}")


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...], source: str, applied: set[tuple] | None = None) -> list[str]:
    """Apply ``--set`` overrides in place; return problems (one line each).

    The document path of every value set is added to ``applied``, so messages about it say
    ``(--set)`` instead of pointing at a line of the file it never came from.
    """
    problems: list[str] = []
    for text in overrides:
        try:
            target, value = parse_override(text)
            position, field_path = _resolve_target(data, target)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        except LookupError as exc:
            problems.append(f"--set {text}: no stage `{target.rsplit('.', 1)[0]}` in {source}{exc.args[0]}")
            continue
        if position is None:
            node = data
        else:
            stage = data["stages"][position]
            node = stage.setdefault("with", {}) if isinstance(stage.get("with", {}), dict) else None
            if node is None:
                problems.append(f"--set {text}: stage {position + 1} has a `with` that is not a mapping")
                continue
        for part in field_path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"--set {text}: `{part}` is not a mapping")
                break
        else:
            node[field_path[-1]] = value
            if applied is not None:
                applied.add(tuple(field_path) if position is None else ("stages", position, "with", *field_path))
    return problems


# ----------------------------------------------------------------------------- checking


class _Checker:
    """Collects every problem in a config; one line each."""

    def __init__(self, source: str, document: safe_yaml.LocatedDocument, registry: Registry, set_paths: set[tuple]) -> None:
        self.source = source
        self.document = document
        self.registry = registry
        self.set_paths = set_paths
        self.problems: list[str | Problem] = []
        self.config_dir = Path.cwd()

    def where(self, path: tuple) -> str:
        if any(path[: len(p)] == p for p in self.set_paths):
            return f"{self.source} (--set)"
        return _where(self.source, self.document.line_of(path))

    def check(self, data: dict, config_dir: Path, overrides: list[str]) -> ValidatedConfig:
        top = dict(data)
        self.config_dir = config_dir
        raw_stages = top.get("stages")
        try:
            config = PipelineConfig.model_validate(top)
        except ValidationError as exc:
            config = None
            for error in exc.errors():
                loc = tuple(error["loc"])
                if loc[:1] == ("stages",) and len(loc) >= 2 and isinstance(loc[1], int):
                    continue  # stage entries are checked one by one below, with better messages
                self.problems.append(f"{self.where(loc)}: {self._describe(error, PipelineConfig, loc)}")
        planned: list[PlannedStage] = []
        if isinstance(raw_stages, list):
            seen_ids: dict[str, int] = {}
            for i, raw in enumerate(raw_stages):
                stage = self._check_stage(i, raw, seen_ids, planned)
                if stage is not None:
                    planned.append(stage)
            if planned and len(planned) == len(raw_stages):
                self._check_flow(planned)
        trainer, training = self._check_training(data.get("training"))
        if self.problems or config is None:
            raise ConfigError(self.problems or [f"{self.source}: invalid config"])
        return ValidatedConfig(self.source, config_dir, config, planned, overrides, training, trainer)

    def _check_training(self, section: Any):
        """Validate a `training:` section against its trainer's parameter model."""
        if section is None:
            return None, None
        path = ("training",)
        if not isinstance(section, dict) or not isinstance(section.get("task"), str):
            self.problems.append(
                f"{self.where(path)}: training: expected a mapping with `task:` (one of {', '.join(sorted(self.registry.trainers)) or 'none installed'})"
            )
            return None, None
        task = section["task"]
        spec = self.registry.trainers.get(task)
        if spec is None:
            hint = did_you_mean(task, list(self.registry.trainers))
            self.problems.append(
                f"{self.where(path + ('task',))}: training: unknown task `{task}`{hint or '; installed: ' + (', '.join(sorted(self.registry.trainers)) or 'none')}"
            )
            return None, None
        fields = {k: v for k, v in section.items() if k != "task"}
        try:
            return spec, spec.params.model_validate(fields)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                self.problems.append(f"{self.where(path + loc)}: training: {self._describe(error, spec.params, loc)}")
            return None, None

    def _check_stage(self, i: int, raw: Any, seen_ids: dict[str, int], earlier: list[PlannedStage] = ()) -> PlannedStage | None:
        path = ("stages", i)
        if not isinstance(raw, dict):
            self.problems.append(f"{self.where(path)}: stage {i + 1}: expected a mapping with `use:`, got {_type_name(raw)}")
            return None
        use, given_id = raw.get("use"), raw.get("id")
        label = f"stage {i + 1}" + (f' "{given_id}"' if isinstance(given_id, str) else "") + (f" ({use})" if isinstance(use, str) else "")
        try:
            entry = StageEntry.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors():
                loc = path + tuple(error["loc"])
                self.problems.append(f"{self.where(loc)}: {label}: {self._describe(error, StageEntry, tuple(error['loc']))}")
            return None
        if entry.id is not None:
            if entry.id in seen_ids:
                self.problems.append(
                    f"{self.where(path + ('id',))}: {label}: id `{entry.id}` is already used by stage {seen_ids[entry.id]}"
                )
            seen_ids[entry.id] = i + 1
        spec = self.registry.get(entry.use)
        if spec is None:
            self.problems.append(Problem("unknown_stage", f"{self.where(path + ('use',))}: {label}: {self._unknown_stage(entry.use)}"))
            return None
        try:
            params = spec.params.model_validate(entry.with_)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                self.problems.append(f"{self.where(path + ('with',) + loc)}: {label}: {self._describe(error, spec.params, loc)}")
            return None
        if spec.check is not None:
            check = import_object(spec.check) if isinstance(spec.check, str) else spec.check
            wants_earlier = len(inspect.signature(check).parameters) >= 3
            found = (
                check(params, self.config_dir, [(s.spec.id, s.params) for s in earlier])
                if wants_earlier
                else check(params, self.config_dir)
            )
            for problem in found:
                self.problems.append(f"{self.where(path + ('with',))}: {label}: {problem}")
        return PlannedStage(i + 1, entry.id or spec.id, spec, params)

    def _unknown_stage(self, use: str) -> str:
        if use.startswith("monai."):
            from voxpipe import monai_adapter

            return monai_adapter.why_not(use)
        hint = did_you_mean(use, list(self.registry.stages))
        return f"unknown stage `{use}`{hint or '; run `voxpipe plugins` to list stages'}"

    def _describe(self, error: dict, model: type[BaseModel], loc: tuple) -> str:
        field_name = ".".join(str(p) for p in loc) or "value"
        kind = error.get("type", "")
        if kind == "extra_forbidden":
            known = _field_names(model, loc[:-1])
            hint = did_you_mean(str(loc[-1]), known)
            valid = "" if hint else f" (valid: {', '.join(known) or 'none'})"
            return f"unknown field `{field_name}`{hint}{valid}"
        if kind == "missing":
            return f"field `{field_name}` is required"
        message = error.get("msg", "invalid value")
        message = message.removeprefix("Value error, ")
        if not loc:
            return f"parameters: {message}"
        if kind == "literal_error" and loc == ("version",):
            message = f"unsupported config version; this VoxPipe reads version {SCHEMA_VERSION}"
        value = error.get("input")
        shown = "" if isinstance(value, (dict, list)) else f", got {value!r}"
        return f"field `{field_name}`: {message}{shown}"

    def _check_flow(self, planned: list[PlannedStage]) -> None:
        """The first stage must load; each stage's inputs must have been produced earlier."""
        first = planned[0]
        if first.spec.kind != StageKind.LOADER:
            self.problems.append(
                f"{self.where(('stages', 0))}: stage 1 ({first.spec.id}): the first stage must be a loader "
                "(e.g. `load.auto`), which reads each case from the input"
            )
            return
        for stage in planned[1:]:
            if stage.spec.kind == StageKind.LOADER:
                self.problems.append(
                    f"{self.where(('stages', stage.index - 1))}: stage {stage.index} ({stage.spec.id}): only the first stage may be a loader"
                )
        available: set[str] = set()
        for stage in planned:
            for key in stage.reads:
                if key not in available:
                    producers = ", ".join(sorted(available)) or "nothing yet"
                    self.problems.append(
                        f"{self.where(('stages', stage.index - 1))}: stage {stage.index} ({stage.label}): reads `{key}`, "
                        f"which no earlier stage writes (available: {producers})"
                    )
            available.update(stage.writes)


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (possibly nested) model at ``loc``, by their config names (aliases)."""
    current: Any = model
    for part in loc:
        info = getattr(current, "model_fields", {}).get(part)
        annotation = getattr(info, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return [info.alias or name for name, info in current.model_fields.items()]

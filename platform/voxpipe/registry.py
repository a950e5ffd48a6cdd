"""Discover plugins through the ``voxpipe`` entry-point group and index their stages.

There is one discovery path: entry points. The built-in plugins are registered in
VoxPipe's own ``pyproject.toml`` exactly as a third party's are, so the path users
depend on is the one the tests exercise.

Each plugin is loaded and asked to register its stages, trainers and commands in
isolation: a plugin that fails to import, raises while registering, registers a malformed
spec or one id twice is reported (plugin, distribution, reason) and skipped as a whole, and
the others keep working. A plugin that registers nothing gets a warning saying why (an
entry point naming a function, hooks without ``@hookimpl``, a hook returning its specs).
Two plugins claiming one stage id, training task or command name (or a plugin command
named like a core one) is a conflict naming both: the contested name is left out, and
using it is an error, but everything else works, so ``voxpipe plugins --json`` can still
list the problems. Every problem is collected in one pass; ``strict`` turns them all into
one :class:`~voxpipe.errors.PluginError`.
"""

from __future__ import annotations

import os
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from voxpipe import hookspecs
from voxpipe.commands_spec import CORE_COMMANDS, CommandSpec, checked_command
from voxpipe.errors import PluginError
from voxpipe.stage import STAGE_ID_PATTERN, StageKind, StageSpec, TrainerSpec

ALLOW_ENV = "VOXPIPE_PLUGINS_ALLOW"
BLOCK_ENV = "VOXPIPE_PLUGINS_BLOCK"
STRICT_ENV = "VOXPIPE_STRICT"


@dataclass(frozen=True)
class PluginProblem:
    """Something wrong with a plugin: skipped whole, a name two plugins claim, or a plugin that registers nothing.

    ``kind`` is ``skipped`` (the plugin is not used), ``conflict`` (the contested id or name
    is left out; ``plugin`` and ``distribution`` name every claimant) or ``warning`` (the
    plugin loaded but registered nothing, or returned specs instead of registering them).
    ``details`` holds the plugin's traceback, shown only under ``--debug``.
    """

    plugin: str
    distribution: str
    reason: str
    kind: str = "skipped"
    details: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        if self.kind == "conflict":
            return self.reason
        who = f"plugin `{self.plugin}` (distribution {self.distribution})"
        return f"{who} skipped: {self.reason}" if self.kind == "skipped" else f"{who} {self.reason}"


@dataclass(frozen=True)
class PluginInfo:
    """A plugin that loaded, with what it registered."""

    name: str
    distribution: str
    version: str
    stage_ids: tuple[str, ...]
    trainer_tasks: tuple[str, ...] = ()
    command_names: tuple[str, ...] = ()
    input_schemes: tuple[str, ...] = ()


@dataclass
class PluginSelection:
    """Which plugins may load, by entry-point name. Block wins over allow."""

    allow: frozenset[str] = frozenset()
    block: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, allow: tuple[str, ...] = (), block: tuple[str, ...] = ()) -> PluginSelection:
        """Merge CLI options with ``VOXPIPE_PLUGINS_ALLOW`` / ``VOXPIPE_PLUGINS_BLOCK`` (comma-separated)."""
        return cls(
            allow=frozenset(_split(os.environ.get(ALLOW_ENV, "")) | set(_flatten(allow))),
            block=frozenset(_split(os.environ.get(BLOCK_ENV, "")) | set(_flatten(block))),
        )

    def permits(self, name: str) -> bool:
        if name in self.block:
            return False
        return not self.allow or name in self.allow


def _split(text: str) -> set[str]:
    return {part.strip() for part in text.split(",") if part.strip()}


def _flatten(values: tuple[str, ...]) -> set[str]:
    return set().union(*(_split(v) for v in values)) if values else set()


def strict_from_env() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class _Hook:
    """One registration hook: what it registers, the key that must be unique, how a spec is checked."""

    name: str
    noun: str  # "stage id", "training task", "command"
    key: Callable[[Any], str]
    check: Callable[[object], Any]


def _hooks() -> tuple[_Hook, ...]:
    return (
        _Hook("voxpipe_register_stages", "stage id", lambda s: s.id, _checked_stage),
        _Hook("voxpipe_register_trainers", "training task", lambda s: s.task, _checked_trainer),
        _Hook("voxpipe_register_commands", "command", lambda s: s.name, checked_command),
        _Hook("voxpipe_register_input_sources", "input scheme", lambda s: s.scheme, _checked_input_source),
    )


def _checked_input_source(spec: object):
    from voxpipe.input_sources import checked_input_source

    return checked_input_source(spec)


@dataclass
class Registry:
    """The stages, trainers and commands known to this process, with the plugins that provided them."""

    stages: dict[str, StageSpec] = field(default_factory=dict)
    trainers: dict[str, TrainerSpec] = field(default_factory=dict)
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    input_sources: dict[str, Any] = field(default_factory=dict)  # URL scheme -> InputSourceSpec
    plugins: list[PluginInfo] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)
    skipped_by_selection: list[str] = field(default_factory=list)
    contested: dict[tuple[str, str], str] = field(default_factory=dict)  # (noun, key) -> the conflict, for lookups

    @classmethod
    def load(cls, selection: PluginSelection | None = None, strict: bool = False) -> Registry:
        """Load every permitted plugin of the ``voxpipe`` entry-point group; report every problem at once."""
        selection = selection or PluginSelection.from_env()
        registry = cls()
        manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        manager.add_hookspecs(hookspecs)
        owners: dict[str, dict[str, list]] = {hook.noun: {} for hook in _hooks()}
        for entry_point in sorted(entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda e: e.name):
            if not selection.permits(entry_point.name):
                registry.skipped_by_selection.append(entry_point.name)
                continue
            registry._load_plugin(manager, entry_point, owners)
        registry._settle(owners)
        if strict:
            registry.raise_for_problems()
        return registry

    def raise_for_problems(self) -> None:
        """``--strict``: every problem, in one error."""
        if self.problems:
            raise PluginError(
                "strict mode: " + "; ".join(str(p) for p in self.problems) + " (fix or block these plugins, or drop --strict)"
            )

    def _load_plugin(self, manager: pluggy.PluginManager, entry_point: EntryPoint, owners: dict) -> None:
        dist_name, dist_version = _distribution_of(entry_point)
        dist_label = f"{dist_name} {dist_version}".strip()
        try:
            plugin = entry_point.load()
            manager.register(plugin, name=entry_point.name)
        except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, report it
            self.problems.append(PluginProblem(entry_point.name, dist_label, f"cannot load: {_describe(exc)}", details=_trace(exc)))
            return
        found: dict[str, list] = {}
        returned: list[str] = []
        implemented = 0
        try:
            for hook in _hooks():
                specs: list = []
                for impl in getattr(manager.hook, hook.name).get_hookimpls():
                    if impl.plugin_name == entry_point.name:
                        implemented += 1
                        result = impl.function(register=specs.append)
                        if result is not None:
                            returned.append(f"{hook.name} returned {_what(result)} instead of calling register(spec) for each")
                checked = [hook.check(spec) for spec in specs]
                keys = [hook.key(spec) for spec in checked]
                twice = sorted({key for key in keys if keys.count(key) > 1})
                if twice:
                    raise ValueError(f"it registers {hook.noun} {', '.join(f'`{k}`' for k in twice)} twice; register each once")
                found[hook.noun] = [
                    replace(spec, plugin=entry_point.name, distribution=dist_name, version=dist_version) for spec in checked
                ]
        except Exception as exc:  # noqa: BLE001
            manager.unregister(name=entry_point.name)
            self.problems.append(PluginProblem(entry_point.name, dist_label, _describe(exc), details=_trace(exc)))
            return
        for noun, specs in found.items():
            for spec in specs:
                owners[noun].setdefault(_key(noun, spec), []).append(spec)
        if returned:
            self.problems.append(PluginProblem(entry_point.name, dist_label, "; ".join(returned), kind="warning"))
        elif not any(found.values()):
            self.problems.append(
                PluginProblem(entry_point.name, dist_label, _registers_nothing(entry_point, plugin, implemented), kind="warning")
            )
        self.plugins.append(
            PluginInfo(
                entry_point.name,
                dist_name,
                dist_version,
                tuple(s.id for s in found["stage id"]),
                tuple(t.task for t in found["training task"]),
                tuple(c.name for c in found["command"]),
                tuple(i.scheme for i in found["input scheme"]),
            )
        )

    def _settle(self, owners: dict[str, dict[str, list]]) -> None:
        """Keep what one plugin alone claims; leave out, and report, every id or name claimed twice."""
        tables = {"stage id": self.stages, "training task": self.trainers, "command": self.commands, "input scheme": self.input_sources}
        for noun, claims in owners.items():
            for key, specs in sorted(claims.items()):
                if noun == "command" and key in CORE_COMMANDS:
                    self._conflict(
                        noun, key, [f"the core command `voxpipe {key}`"] + [_owner(s) for s in specs], specs, "rename the plugin's command"
                    )
                elif len(specs) > 1:
                    self._conflict(noun, key, [_owner(s) for s in specs], specs, f"block one with --block-plugin NAME or {BLOCK_ENV}")
                else:
                    tables[noun][key] = specs[0]

    def _conflict(self, noun: str, key: str, who: list[str], specs: list, fix: str) -> None:
        message = f"{noun} `{key}` is registered by both {' and '.join(who)}; neither is used: {fix}"
        self.contested[(noun, key)] = message
        self.problems.append(
            PluginProblem(
                ", ".join(s.plugin for s in specs),
                ", ".join(f"{s.distribution} {s.version}".strip() for s in specs),
                message,
                kind="conflict",
            )
        )

    def get(self, stage_id: str) -> StageSpec | None:
        """Look up a stage id; ``monai.<Transform>d`` ids are resolved by the MONAI adapter.

        Raises:
            PluginError: two plugins claim the id (the message names both).
        """
        if stage_id in self.stages:
            return self.stages[stage_id]
        if ("stage id", stage_id) in self.contested:
            raise PluginError(self.contested[("stage id", stage_id)])
        if stage_id.startswith("monai."):
            from voxpipe import monai_adapter

            return monai_adapter.spec_for(stage_id)
        return None

    def command(self, name: str) -> CommandSpec | None:
        """The plugin command called ``name``, or None.

        Raises:
            PluginError: two plugins claim the name (the message names both).
        """
        if ("command", name) in self.contested and name not in CORE_COMMANDS:
            raise PluginError(self.contested[("command", name)])
        return self.commands.get(name)

    def trainer(self, task: str) -> TrainerSpec | None:
        """The trainer for ``task``, or None; raises PluginError when two plugins claim it."""
        if ("training task", task) in self.contested:
            raise PluginError(self.contested[("training task", task)])
        return self.trainers.get(task)

    def by_kind(self) -> dict[StageKind, list[StageSpec]]:
        grouped: dict[StageKind, list[StageSpec]] = {}
        for spec in sorted(self.stages.values(), key=lambda s: s.id):
            grouped.setdefault(spec.kind, []).append(spec)
        return {kind: grouped[kind] for kind in StageKind if kind in grouped}

    def versions(self) -> dict[str, str]:
        """Distribution name -> version of every loaded plugin (for run manifests)."""
        return {p.distribution: p.version for p in self.plugins}


def _checked_stage(spec: object) -> StageSpec:
    """Reject malformed registrations with a reason the plugin author can act on."""
    from pydantic import BaseModel

    if not isinstance(spec, StageSpec):
        raise TypeError(f"registered {type(spec).__name__}, expected voxpipe.stage.StageSpec")
    if not STAGE_ID_PATTERN.match(spec.id or ""):
        raise ValueError(f"stage id {spec.id!r} is not a lower-case dotted name like 'family.name'")
    if spec.id.startswith("monai."):
        raise ValueError(f"stage id {spec.id!r}: the `monai.` namespace is reserved for MONAI transforms")
    try:
        kind = StageKind(spec.kind)
    except ValueError:
        kinds = ", ".join(k.value for k in StageKind)
        raise ValueError(f"stage {spec.id}: kind {spec.kind!r} is not one of {kinds}") from None
    if not (isinstance(spec.summary, str) and spec.summary.strip()):
        raise ValueError(f"stage {spec.id}: summary must be a non-empty line")
    if not (isinstance(spec.params, type) and issubclass(spec.params, BaseModel)):
        raise TypeError(f"stage {spec.id}: params must be a pydantic BaseModel subclass")
    if spec.params.model_config.get("extra") != "forbid":
        raise ValueError(f"stage {spec.id}: params model must set extra='forbid' so typos are caught")
    if not (callable(spec.factory) or (isinstance(spec.factory, str) and ":" in spec.factory)):
        raise TypeError(f"stage {spec.id}: factory must be a callable or a 'module:attribute' string")
    unknown = [name for name in spec.content_files if name not in spec.params.model_fields]
    if unknown:
        raise ValueError(f"stage {spec.id}: content_files names {', '.join(unknown)}, which are not parameters")
    return replace(spec, kind=kind, reads=tuple(spec.reads), writes=tuple(spec.writes), content_files=tuple(spec.content_files))


def _checked_trainer(spec: object) -> TrainerSpec:
    from pydantic import BaseModel

    if not isinstance(spec, TrainerSpec):
        raise TypeError(f"registered {type(spec).__name__} as a trainer, expected voxpipe.stage.TrainerSpec")
    if not (isinstance(spec.task, str) and spec.task.isidentifier() and spec.task.islower()):
        raise ValueError(f"trainer task {spec.task!r} must be a lower-case name like 'segmentation'")
    if not (isinstance(spec.params, type) and issubclass(spec.params, BaseModel)) or spec.params.model_config.get("extra") != "forbid":
        raise TypeError(f"trainer {spec.task}: params must be a pydantic model with extra='forbid'")
    if not (callable(spec.factory) or (isinstance(spec.factory, str) and ":" in spec.factory)):
        raise TypeError(f"trainer {spec.task}: factory must be a callable or a 'module:attribute' string")
    return spec


def _key(noun: str, spec: Any) -> str:
    return next(hook.key(spec) for hook in _hooks() if hook.noun == noun)


def _owner(spec: Any) -> str:
    return f"plugin `{spec.plugin}` ({spec.distribution} {spec.version})".replace(" )", ")")


def _registers_nothing(entry_point: EntryPoint, plugin: object, implemented: int) -> str:
    """Why a plugin that loaded registered nothing, in words its author can act on."""
    module, _, attribute = entry_point.value.partition(":")
    if attribute and not isinstance(plugin, types.ModuleType):
        return (
            f"registers nothing: its entry point `{entry_point.value}` names a {type(plugin).__name__}, not a module; "
            f"point it at the module that holds the @hookimpl functions (`{module.strip()}`)"
        )
    if implemented:
        return "registers nothing: its hooks never call register(spec)"
    undecorated = [hook.name for hook in _hooks() if callable(getattr(plugin, hook.name, None))]
    if undecorated:
        return f"registers nothing: {', '.join(undecorated)} lack the @hookimpl decorator (from voxpipe.plugin import hookimpl)"
    return "registers nothing: it has no @hookimpl functions (" + ", ".join(hook.name for hook in _hooks()) + ")"


def _what(result: object) -> str:
    if isinstance(result, (list, tuple, set)):
        return f"{len(result)} item(s)"
    return f"a {type(result).__name__}"


def _trace(exc: BaseException) -> str:
    """The plugin's traceback (its own frames included), for ``--debug``."""
    return "".join(traceback.format_exception(exc))


def _distribution_of(entry_point: EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown", ""
    return dist.metadata["Name"] or dist.name, dist.version or ""


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""Discover plugins through the ``voxpipe`` entry-point group and index their stages.

There is one discovery path: entry points. The built-in plugins are registered in
VoxPipe's own ``pyproject.toml`` exactly as a third party's are, so the path users
depend on is the one the tests exercise.

Each plugin is loaded and asked to register its stages in isolation: a plugin that fails
to import, raises while registering, or registers a malformed spec is reported (plugin,
distribution, reason) and skipped as a whole, and the others keep working. ``strict``
turns any such problem into a :class:`~voxpipe.errors.PluginError`. Two plugins that
claim one stage id are always an error naming both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from importlib.metadata import EntryPoint, entry_points

import pluggy

from voxpipe import hookspecs
from voxpipe.errors import PluginError
from voxpipe.stage import STAGE_ID_PATTERN, StageKind, StageSpec, TrainerSpec

ALLOW_ENV = "VOXPIPE_PLUGINS_ALLOW"
BLOCK_ENV = "VOXPIPE_PLUGINS_BLOCK"
STRICT_ENV = "VOXPIPE_STRICT"


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that was skipped, and why."""

    plugin: str
    distribution: str
    reason: str

    def __str__(self) -> str:
        return f"plugin `{self.plugin}` (distribution {self.distribution}) skipped: {self.reason}"


@dataclass(frozen=True)
class PluginInfo:
    """A plugin that loaded, with the stage ids it registered."""

    name: str
    distribution: str
    version: str
    stage_ids: tuple[str, ...]


@dataclass
class PluginSelection:
    """Which plugins may load, by entry-point name. Block wins over allow."""

    allow: frozenset[str] = frozenset()
    block: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, allow: tuple[str, ...] = (), block: tuple[str, ...] = ()) -> "PluginSelection":
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


@dataclass
class Registry:
    """The stages known to this process, with the plugins that provided them."""

    stages: dict[str, StageSpec] = field(default_factory=dict)
    trainers: dict[str, TrainerSpec] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)
    skipped_by_selection: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, selection: PluginSelection | None = None, strict: bool = False) -> "Registry":
        """Load every permitted plugin of the ``voxpipe`` entry-point group."""
        selection = selection or PluginSelection.from_env()
        registry = cls()
        manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        manager.add_hookspecs(hookspecs)
        owners: dict[str, list[StageSpec]] = {}
        trainer_owners: dict[str, list[TrainerSpec]] = {}
        for entry_point in sorted(entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda e: e.name):
            if not selection.permits(entry_point.name):
                registry.skipped_by_selection.append(entry_point.name)
                continue
            registry._load_plugin(manager, entry_point, owners, trainer_owners)
        registry._check_conflicts(owners)
        registry._check_trainer_conflicts(trainer_owners)
        if strict and registry.problems:
            raise PluginError(
                "strict mode: " + "; ".join(str(p) for p in registry.problems)
                + " (fix or block these plugins, or drop --strict)"
            )
        return registry

    def _load_plugin(self, manager: pluggy.PluginManager, entry_point: EntryPoint, owners: dict, trainer_owners: dict) -> None:
        dist_name, dist_version = _distribution_of(entry_point)
        dist_label = f"{dist_name} {dist_version}".strip()
        try:
            plugin = entry_point.load()
            manager.register(plugin, name=entry_point.name)
        except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, report it
            self.problems.append(PluginProblem(entry_point.name, dist_label, f"cannot load: {_describe(exc)}"))
            return
        collected: list[StageSpec] = []
        trainers: list[TrainerSpec] = []
        try:
            for impl in manager.hook.voxpipe_register_stages.get_hookimpls():
                if impl.plugin_name == entry_point.name:
                    impl.function(register=collected.append)
            for impl in manager.hook.voxpipe_register_trainers.get_hookimpls():
                if impl.plugin_name == entry_point.name:
                    impl.function(register=trainers.append)
            specs = [self._checked(spec) for spec in collected]
            trainers = [self._checked_trainer(spec) for spec in trainers]
        except Exception as exc:  # noqa: BLE001
            manager.unregister(name=entry_point.name)
            self.problems.append(PluginProblem(entry_point.name, dist_label, _describe(exc)))
            return
        stamped = [replace(s, plugin=entry_point.name, distribution=dist_name, version=dist_version) for s in specs]
        for spec in stamped:
            owners.setdefault(spec.id, []).append(spec)
        for trainer in trainers:
            stamped_trainer = replace(trainer, plugin=entry_point.name, distribution=dist_name, version=dist_version)
            trainer_owners.setdefault(trainer.task, []).append(stamped_trainer)
        self.plugins.append(PluginInfo(entry_point.name, dist_name, dist_version, tuple(s.id for s in stamped)))

    @staticmethod
    def _checked(spec: object) -> StageSpec:
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

    @staticmethod
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

    def _check_trainer_conflicts(self, owners: dict[str, list[TrainerSpec]]) -> None:
        for task, specs in sorted(owners.items()):
            if len(specs) > 1:
                who = " and ".join(f"plugin `{s.plugin}` ({s.distribution} {s.version})" for s in specs)
                raise PluginError(f"training task `{task}` is registered by both {who}; block one with --block-plugin NAME")
            self.trainers[task] = specs[0]

    def _check_conflicts(self, owners: dict[str, list[StageSpec]]) -> None:
        for stage_id, specs in sorted(owners.items()):
            if len(specs) > 1:
                who = " and ".join(f"plugin `{s.plugin}` ({s.distribution} {s.version})" for s in specs)
                raise PluginError(
                    f"stage id `{stage_id}` is registered by both {who}; "
                    f"block one with --block-plugin NAME or {BLOCK_ENV}"
                )
            self.stages[stage_id] = specs[0]

    def get(self, stage_id: str) -> StageSpec | None:
        """Look up a stage id; ``monai.<Transform>d`` ids are resolved by the MONAI adapter."""
        if stage_id in self.stages:
            return self.stages[stage_id]
        if stage_id.startswith("monai."):
            from voxpipe import monai_adapter

            return monai_adapter.spec_for(stage_id)
        return None

    def by_kind(self) -> dict[StageKind, list[StageSpec]]:
        grouped: dict[StageKind, list[StageSpec]] = {}
        for spec in sorted(self.stages.values(), key=lambda s: s.id):
            grouped.setdefault(spec.kind, []).append(spec)
        return {kind: grouped[kind] for kind in StageKind if kind in grouped}

    def versions(self) -> dict[str, str]:
        """Distribution name -> version of every loaded plugin (for run manifests)."""
        return {p.distribution: p.version for p in self.plugins}


def _distribution_of(entry_point: EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown", ""
    return dist.metadata["Name"] or dist.name, dist.version or ""


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""``voxpipe plugins check [NAME]``: find what ``validate`` cannot, before a real run does.

``validate`` never imports factories (it must stay light), so a misspelt module, a factory
whose signature does not take the parameters, or a stage that hands on a NumPy array would
only show up in ``voxpipe run``, one case at a time. This imports every factory of the
plugin(s), builds every stage with its defaults and runs it on a tiny synthetic case of its
kind through the case contract (:mod:`voxpipe.plugin_testing`), and reports each problem in
one line.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voxpipe.errors import one_line
from voxpipe.stage import StageKind, StageSpec, import_object


def check_plugins(registry: Any, name: str | None = None, notes: list[str] | None = None) -> list[str]:
    """Problems of the loaded plugin ``name`` (every loaded plugin when ``None``), one line each.

    Args:
        registry: a loaded :class:`~voxpipe.registry.Registry`.
        name: a plugin's entry-point name, as ``voxpipe plugins`` shows it.
        notes: if given, receives one line per stage that could not be run (it needs config
            values or inputs a synthetic case does not have): not problems, but not checked.
    """
    notes = notes if notes is not None else []
    problems = [str(p) for p in getattr(registry, "problems", []) if name is None or p.plugin == name]
    plugins = [p for p in registry.plugins if name is None or p.name == name]
    if name is not None and not plugins and not problems:
        known = ", ".join(sorted(p.name for p in registry.plugins)) or "none"
        return [f"no loaded plugin `{name}` (loaded: {known}); check the name with `voxpipe plugins`"]
    with tempfile.TemporaryDirectory(prefix="voxpipe-check-") as scratch:
        for plugin in plugins:
            for stage_id in plugin.stage_ids:
                spec = registry.stages.get(stage_id)
                if spec is not None:
                    line = _check_stage(spec, Path(scratch) / stage_id, notes)
                    if line:
                        problems.append(f"plugin `{plugin.name}`: stage `{stage_id}`: {line}")
        for what, spec in _other_contributions(registry, {p.name for p in plugins}):
            line = _importable(spec.factory)
            if line:
                problems.append(f"plugin `{spec.plugin}`: {what}: factory {line}")
    return problems


def _other_contributions(registry: Any, plugins: set[str]):
    """Trainers and commands of the checked plugins: their factories must import."""
    for task, spec in sorted(getattr(registry, "trainers", {}).items()):
        if spec.plugin in plugins:
            yield f"trainer `{task}`", spec
    for command, spec in sorted((getattr(registry, "commands", None) or {}).items()):
        if getattr(spec, "plugin", None) in plugins:
            yield f"command `{command}`", spec


def _importable(ref: Any) -> str | None:
    if not isinstance(ref, str):
        return None
    try:
        import_object(ref)
    except Exception as exc:  # noqa: BLE001 - whatever the import raises is the plugin's problem
        return f"`{ref}` cannot be imported: {one_line(exc)}"
    return None


def _check_stage(spec: StageSpec, scratch: Path, notes: list[str]) -> str | None:
    """One stage: import, defaults, build, one synthetic case through the contract."""
    from voxpipe import plugin_testing
    from voxpipe.image_checks import StageInputError

    for ref in (spec.factory, spec.discover):
        line = _importable(ref)
        if line:
            return f"{'factory' if ref is spec.factory else 'discover'} {line}"
    try:
        params = spec.params.model_validate({})
    except ValidationError as exc:
        errors = exc.errors()
        required = [".".join(map(str, e["loc"])) for e in errors if e.get("type") == "missing"]
        if required or all(not e["loc"] for e in errors):  # required fields, or a validator asking for values
            wanted = f"{', '.join(required)} required" if required else errors[0].get("msg", "").removeprefix("Value error, ")
            notes.append(f"stage `{spec.id}`: not run: needs config ({wanted})")
            return None
        return f"its parameter defaults do not validate: {one_line(exc)}"
    unset = [name for name in spec.content_files if not getattr(params, name, None)]
    if unset:
        notes.append(f"stage `{spec.id}`: not run: needs config (its content file {', '.join(unset)} is not set)")
        return None
    reads = spec.resolve_keys(spec.reads, params)
    missing = [key for key in reads if key not in plugin_testing.SYNTHETIC_KEYS]
    if missing and spec.kind != StageKind.LOADER:
        notes.append(f"stage `{spec.id}`: not run: reads {', '.join(f'`{k}`' for k in missing)}, which a synthetic case lacks")
        return None
    from voxpipe.stage import StageContext, build_stage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = build_stage(spec, params, StageContext(device="cpu", config_dir=Path.cwd(), stage_id=spec.id))
    except Exception as exc:  # noqa: BLE001
        return f"cannot build with its defaults: {one_line(exc)}"
    try:
        if spec.kind == StageKind.LOADER:
            case = plugin_testing.loader_case(spec, params, scratch)
            if case is None:
                notes.append(f"stage `{spec.id}`: not run: its discover finds no case in a synthetic NIfTI or PNG file")
                return None
        else:
            case = plugin_testing.synthetic_case(scratch, reads=tuple(reads))
        before = dict(case)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = built(case)
        plugin_testing.check_contract(result, before, spec.resolve_keys(spec.writes, params), "on a synthetic case")
    except plugin_testing.ContractViolation as exc:
        return str(exc)
    except StageInputError as exc:  # a deliberate refusal of this input (a DICOM-only writer), not a fault
        notes.append(f"stage `{spec.id}`: not run: refuses the synthetic case: {one_line(exc)}")
        return None
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return f"fails on a synthetic {'input' if spec.kind == StageKind.LOADER else 'case'}: {one_line(exc)}"
    return None

"""Text and JSON renderings of the registry for ``voxpipe plugins``: stages, trainers, commands, input sources, problems."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from voxpipe.errors import UsageError
from voxpipe.registry import Registry
from voxpipe.stage import StageSpec
from voxpipe.suggest import did_you_mean

_PROBLEM_TITLES = {"skipped": "Skipped", "conflict": "Conflict", "warning": "Warning"}
_BOUND_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "min length", "max_length": "max length"}


def render_list(registry: Registry) -> str:
    lines: list[str] = []
    width = max((len(s.id) for s in registry.stages.values()), default=10) + 2
    for kind, specs in registry.by_kind().items():
        lines.append(f"{kind.value}s:".capitalize())
        for spec in specs:
            lines.append(f"  {spec.id:<{width}}{spec.summary}  [{spec.distribution}]")
        lines.append("")
    lines.append("Transforms from MONAI:")
    lines.append(
        f"  {'monai.<Name>':<{width}}a reviewed monai.transforms dictionary transform (docs/configs.md), e.g. monai.ScaleIntensityRanged  [monai]"
    )
    lines.append("")
    if registry.trainers:
        lines.append("Trainers (voxpipe train, `training.task`):")
        for task, trainer in sorted(registry.trainers.items()):
            lines.append(f"  {task:<{width}}{trainer.summary}  [{trainer.distribution}]")
        lines.append("")
    if registry.commands:
        lines.append("Commands (voxpipe NAME):")
        for name, command in sorted(registry.commands.items()):
            lines.append(f"  {name:<{width}}{command.summary}  [{command.plugin}]")
        lines.append("")
    if registry.input_sources:
        lines.append("Input sources (-i SCHEME://...):")
        for scheme, source in sorted(registry.input_sources.items()):
            lines.append(f"  {scheme + '://':<{width}}{source.summary}  [{source.plugin}]")
        lines.append("")
    plugins = ", ".join(f"{p.name} ({p.distribution} {p.version})" for p in registry.plugins) or "none"
    lines.append(f"Plugins: {plugins}")
    if registry.skipped_by_selection:
        lines.append(f"Not loaded (allow/block list): {', '.join(registry.skipped_by_selection)}")
    for problem in registry.problems:
        lines.append(f"{_PROBLEM_TITLES.get(problem.kind, 'Problem')}: {problem}")
    lines.append("Details: voxpipe plugins show STAGE_ID")
    return "\n".join(lines)


def render_json(registry: Registry) -> str:
    data = {
        "stages": [
            {
                "id": s.id,
                "kind": s.kind.value,
                "summary": s.summary,
                "plugin": s.plugin,
                "distribution": s.distribution,
                "version": s.version,
                "parameters": parameter_rows(s),
            }
            for s in sorted(registry.stages.values(), key=lambda s: s.id)
        ],
        "trainers": [
            {"task": t.task, "summary": t.summary, "plugin": t.plugin, "distribution": t.distribution, "version": t.version}
            for t in sorted(registry.trainers.values(), key=lambda t: t.task)
        ],
        "commands": [
            {"name": c.name, "summary": c.summary, "plugin": c.plugin, "distribution": c.distribution, "version": c.version}
            for c in sorted(registry.commands.values(), key=lambda c: c.name)
        ],
        "input_sources": [
            {"scheme": i.scheme, "summary": i.summary, "plugin": i.plugin, "distribution": i.distribution, "version": i.version}
            for i in sorted(registry.input_sources.values(), key=lambda i: i.scheme)
        ],
        "plugins": [
            {
                "name": p.name,
                "distribution": p.distribution,
                "version": p.version,
                "stages": list(p.stage_ids),
                "trainers": list(p.trainer_tasks),
                "commands": list(p.command_names),
                "input_schemes": list(p.input_schemes),
            }
            for p in registry.plugins
        ],
        "problems": [
            {"kind": p.kind, "plugin": p.plugin, "distribution": p.distribution, "reason": p.reason, "message": str(p)}
            for p in registry.problems
        ],
    }
    return json.dumps(data, indent=2)


def parameter_rows(spec: StageSpec) -> list[dict[str, Any]]:
    """One row per parameter: name, type (as a person reads it), required, default (the value itself), bounds, description."""
    from pydantic_core import PydanticUndefined

    from voxpipe.param_types import plain, type_text

    rows = []
    for name, info in spec.params.model_fields.items():
        bounds = []
        for item in info.metadata:
            for attr, symbol in _BOUND_SYMBOLS.items():
                value = getattr(item, attr, None)
                if value is not None:
                    bounds.append(f"{symbol} {value}")
        shown = (info.json_schema_extra or {}).get("shown", {}) if isinstance(info.json_schema_extra, dict) else {}
        if "default" in shown:  # a MONAI transform's argument: its signature's default, or "required"
            required, default = (
                shown["default"] == "required",
                (None if shown["default"] == "required" else _source_value(shown["default"])),
            )
        elif info.default is not PydanticUndefined:
            required, default = False, info.default
        elif info.default_factory is not None:
            required, default = False, info.default_factory()
        else:
            required, default = True, None
        computed, shown_type = type_text(info.annotation), shown.get("type")
        if isinstance(shown_type, str) and ("any" in computed or "default" in computed):  # MONAI: the signature says more
            computed = shown_type
        rows.append(
            {
                "name": info.alias or name,
                "type": computed,
                "required": required,
                "default": plain(default),
                "bounds": ", ".join(bounds),
                "description": info.description or "",
            }
        )
    return rows


def _source_value(text: Any) -> Any:
    """A default written as Python source in a signature (``None``, ``'False'``) as the value it is, else the text."""
    import ast

    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def stage_json(registry: Registry, stage_id: str) -> str:
    """``plugins show STAGE --json``: the stage and its parameter rows, as valid JSON."""
    spec = _stage(registry, stage_id)
    data = {
        "id": spec.id,
        "kind": spec.kind.value,
        "summary": spec.summary,
        "plugin": spec.plugin,
        "distribution": spec.distribution,
        "version": spec.version,
        "reads": list(spec.reads),
        "writes": list(spec.writes),
        "parameters": parameter_rows(spec),
    }
    return json.dumps(data, indent=2, default=str)


def _stage(registry: Registry, stage_id: str) -> StageSpec:
    spec = registry.get(stage_id)
    if spec is None:
        raise UsageError(f"unknown stage `{stage_id}`{did_you_mean(stage_id, registry.stages) or '; run `voxpipe plugins` to list stages'}")
    return spec


def render_stage(registry: Registry, stage_id: str) -> str:
    """``plugins show STAGE``: what a person needs to write the stage's ``with:`` block."""
    from voxpipe.param_types import value_text

    spec = _stage(registry, stage_id)
    lines = [f"{spec.id}  ({spec.kind.value})  from plugin `{spec.plugin}`, {spec.distribution} {spec.version}".rstrip(), spec.summary]
    description = textwrap.dedent(spec.description).strip()
    if description.startswith(spec.summary):
        description = description[len(spec.summary) :].strip()
    if description:
        lines.append("")
        for paragraph in description.split("\n\n"):
            lines += textwrap.wrap(" ".join(paragraph.split()), 96) + [""]
        lines.pop()
    lines += ["", f"Reads: {', '.join(spec.reads) or '-'}    Writes: {', '.join(spec.writes) or '-'}", "", "Parameters:"]
    rows = parameter_rows(spec)
    if not rows:
        lines.append("  (none)")
    width = max((len(r["name"]) for r in rows), default=4) + 2
    for row in rows:
        extra = f"  [{row['bounds']}]" if row["bounds"] else ""
        default = "required" if row["required"] else f"default {value_text(row['default'])}"
        lines.append(f"  {row['name']:<{width}}{row['type']}, {default}{extra}")
        if row["description"]:
            for wrapped in textwrap.wrap(row["description"], 88):
                lines.append(f"  {'':<{width}}{wrapped}")
    example = {r["name"]: "..." for r in rows if r["required"]}
    lines += ["", "Example:", f"  - use: {spec.id}"]
    if example:
        lines.append("    with:")
        lines += [f"      {name}: {value}" for name, value in example.items()]
    return "\n".join(lines)

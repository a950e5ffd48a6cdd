"""The imported config written as YAML (literals only), atomically, with where it came from in a comment."""

from __future__ import annotations

from pathlib import Path

import yaml

from voxpipe.atomic import atomic_path


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no aliases (a config is read by people), lists of numbers on one line."""

    def ignore_aliases(self, data) -> bool:
        return True


def _flow_short_lists(dumper: yaml.SafeDumper, data: list):
    flow = len(data) <= 16 and all(isinstance(v, (int, float, str, bool)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _flow_short_lists)


def render(imported, root: Path) -> str:
    header = [
        f"# Imported from the MONAI bundle folder {root.name} by `voxpipe bundle import`; nothing of the bundle was run.",
        "# Registry ids and literal values only: edit, validate (`voxpipe validate`) and run it like any config.",
    ]
    header += [f"# note: {n}" for n in imported.notes]
    body = yaml.dump(imported.config, Dumper=_Dumper, sort_keys=False, allow_unicode=False, width=140)
    return "\n".join(header) + "\n" + body


def write_config(path: Path, imported, root: Path) -> None:
    text = render(imported, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)

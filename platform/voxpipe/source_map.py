"""Reading the private case id -> input TSV that ``voxpipe run --source-map`` writes.

Outputs carry only pseudonymous case ids; users know their inputs by file name. The source
map is the user's own private link between the two, so commands that take inputs by name
(`features collect --labels`, `match --query`, `evaluate --pred`) translate through it instead
of writing names into any output.
"""

from __future__ import annotations

import csv
from pathlib import Path

from voxpipe.errors import UsageError


def read_source_map(path: Path, option: str = "--source-map") -> dict[str, str]:
    """Case id -> input path, from the TSV of ``voxpipe run --source-map``; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{option} {path}: no such file; write it with `voxpipe run ... --source-map {path}`")
    mapping: dict[str, str] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle, delimiter="\t"):
                if len(row) >= 2 and row[0].startswith("case-"):
                    mapping[row[0]] = row[1]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} {path}: cannot read it ({type(exc).__name__})") from None
    if not mapping:
        raise UsageError(f"{option} {path}: no `case-...<TAB>path` lines (expected the TSV of `voxpipe run --source-map`)")
    return mapping


def case_for_input(mapping: dict[str, str], given: str) -> str | None:
    """The case id whose input is ``given``: the same path (as written or resolved), else a unique file name."""
    for cid, source in mapping.items():
        if source == given:
            return cid
    try:
        resolved = Path(given).resolve()
    except (OSError, RuntimeError):
        resolved = None
    for cid, source in mapping.items():
        if resolved is not None and Path(source).resolve() == resolved:
            return cid
    named = [cid for cid, source in mapping.items() if Path(source).name == Path(given).name]
    return named[0] if len(named) == 1 else None

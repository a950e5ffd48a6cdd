"""What a stage asks the run report to show: named metrics with units, and pictures it wrote.

A stage calls :func:`report_metric` / :func:`report_picture` on the case it returns; the
worker copies the items into ``case.json`` (redacted like every other case text) and
``report.html`` shows them per case. The core names no metric and no file: whatever stages
record is what the report shows (docs/report.md).

Items live in ``case["report"] = {"metrics": [...], "pictures": [...]}``. Every call stores
a new dict with new lists, so ``out = dict(case); report_metric(out, ...)`` never changes
the input case. Recording the same metric name (or picture path) again replaces the entry.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path, PurePosixPath
from typing import Any

REPORT_KEY = "report"
MAX_TEXT = 200
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ReportItemError(ValueError):
    """A stage recorded a report item the report cannot show safely (fails that case, one line)."""


def report_metric(case: dict, name: str, value: float | str, unit: str = "", label: str | None = None) -> None:
    """Record a number (or a short text) for the report and ``case.json``.

    Args:
        case: the case dict the stage returns.
        name: a stable key, e.g. ``lesion.diameter_mm``; a dotted name ``group.key`` appears in
            ``case.json``'s ``metrics`` as ``metrics[group][key]``.
        value: an int, a finite float or a short string (NumPy scalars are converted).
        unit: shown after the name (``mL``, ``mm³``, ``HU``); empty for none.
        label: what the report calls it; defaults to ``name``.

    Raises:
        ReportItemError: an empty or over-long name, a value that is not a finite number or a
            short string.
    """
    name = _text(name, "metric name", required=True)
    entry: dict[str, Any] = {"name": name, "value": _value(name, value), "unit": _text(unit, f"unit of metric `{name}`")}
    if label is not None:
        entry["label"] = _text(label, f"label of metric `{name}`")
    _store(case, "metrics", "name", entry)


def report_picture(case: dict, path: str | os.PathLike, caption: str = "") -> None:
    """Record a picture the stage wrote inside the case folder (PNG or JPEG) for the report.

    Args:
        case: the case dict the stage returns.
        path: relative to the case folder (``case["output_dir"]``), e.g. ``histogram.png``;
            never absolute, never through ``..``. The report also refuses links at read time.
        caption: shown under the thumbnail.

    Raises:
        ReportItemError: an absolute path, ``..``, a backslash or an unsupported suffix.
    """
    relative = picture_path(path)
    entry = {"path": relative, "caption": _text(caption, f"caption of picture `{relative}`")}
    _store(case, "pictures", "path", entry)


def picture_path(path: str | os.PathLike) -> str:
    """``path`` as a clean relative POSIX path inside a case folder, or :class:`ReportItemError`."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text or _CONTROL.search(text) or "\\" in text or len(text) > MAX_TEXT:
        raise ReportItemError(
            f"report_picture: {_shown(path)} is not a file name inside the case folder; give a relative path such as `histogram.png`"
        )
    pure = PurePosixPath(text)
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", text) or ".." in pure.parts:
        raise ReportItemError(f"report_picture: {_shown(text)} leaves the case folder; give a path relative to it, without `..`")
    parts = [p for p in pure.parts if p != "."]
    if not parts or not parts[-1].lower().endswith(PICTURE_SUFFIXES):
        raise ReportItemError(f"report_picture: {_shown(text)} is not a picture; write a {'/'.join(PICTURE_SUFFIXES)} file")
    return "/".join(parts)


def items_of(case: dict) -> dict:
    """The case's recorded items as ``{"metrics": [...], "pictures": [...]}`` (empty lists when none)."""
    items = case.get(REPORT_KEY)
    items = items if isinstance(items, dict) else {}
    return {
        "metrics": [m for m in items.get("metrics", []) if isinstance(m, dict)],
        "pictures": [p for p in items.get("pictures", []) if isinstance(p, dict)],
    }


def metric_values(metrics: list[dict]) -> dict:
    """Name -> value, a dotted ``group.key`` nested as ``{group: {key: value}}`` (``case.json``'s ``metrics``)."""
    values: dict[str, Any] = {}
    for metric in metrics:
        name, value = str(metric.get("name", "")), metric.get("value")
        group, dot, key = name.partition(".")
        if dot and key and isinstance(values.setdefault(group, {}), dict):
            values[group][key] = value
        else:
            values[name] = value
    return values


def picture_file(folder: Path, relative: Any) -> Path | None:
    """The picture's file if it is a regular file inside ``folder`` reached without links, else None.

    Checked when the report is written, not only when recorded: ``case.json`` is a file on
    disk, and a link planted in a case folder must not pull another file into the report.
    """
    try:
        parts = picture_path(relative).split("/")
    except ReportItemError:
        return None
    current = Path(folder)
    for index, part in enumerate(parts):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            return None
        wanted = stat.S_ISREG if index == len(parts) - 1 else stat.S_ISDIR
        if not wanted(mode):  # a link (lstat does not follow it), a device, a folder named like a picture
            return None
    return current


def _store(case: dict, kind: str, key: str, entry: dict) -> None:
    items = items_of(case)
    entries = list(items[kind])
    for index, old in enumerate(entries):
        if old.get(key) == entry[key]:
            entries[index] = entry
            break
    else:
        entries.append(entry)
    items[kind] = entries
    case[REPORT_KEY] = items


def _value(name: str, value: Any) -> float | int | str:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "size", 1) == 1:
        value = value.item()  # NumPy / torch scalars
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ReportItemError(f"report_metric: `{name}` is {value}; record a finite number (or leave the metric out)")
        return value
    if isinstance(value, str):
        return _text(value, f"value of metric `{name}`")
    raise ReportItemError(f"report_metric: `{name}` is a {type(value).__name__}; record an int, a float or a short string")


def _text(value: Any, what: str, required: bool = False) -> str:
    if not isinstance(value, str) or (required and not value.strip()):
        raise ReportItemError(f"report item: the {what} must be a{' non-empty' if required else ''} string")
    if len(value) > MAX_TEXT or _CONTROL.search(value):
        raise ReportItemError(f"report item: the {what} is longer than {MAX_TEXT} characters or holds control characters; shorten it")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

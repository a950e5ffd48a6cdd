"""Errors a user can cause, each carrying the one line the CLI prints and its exit code.

Anything that is the user's to fix (a config, an input path, a plugin choice) raises a
:class:`VoxpipeError` subclass. The CLI prints ``error: <message>`` and exits with
``exit_code``; only ``--debug`` shows a traceback. Everything else is a bug and is
reported as such.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args


class VoxpipeError(Exception):
    """Base class for errors with a user-facing one-line message."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(VoxpipeError):
    """Bad command-line usage: missing paths, unwritable output, impossible device."""


ProblemKind = Literal["invalid", "unknown_stage", "plugins_differ"]
PROBLEM_KINDS: frozenset[str] = frozenset(get_args(ProblemKind))


@dataclass(frozen=True)
class Problem:
    """One config problem: a ``kind`` that code branches on, and the ``text`` a user reads.

    Callers test ``kind`` (a worker without a plugin is ``unknown_stage``) instead of
    searching the wording, so messages can be reworded without breaking anything.
    """

    kind: ProblemKind
    text: str

    def __post_init__(self) -> None:
        if self.kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}; one of {sorted(PROBLEM_KINDS)}")

    def __str__(self) -> str:
        return self.text


class ConfigError(VoxpipeError):
    """A pipeline config that cannot be read or does not validate.

    Holds every problem found, one line each, so a user fixes them in one pass. Each may be
    a :class:`Problem` or plain text (kind ``invalid``), so callers can move one at a time.
    """

    def __init__(self, problems: Iterable[Problem | str]) -> None:
        self.details = [p if isinstance(p, Problem) else Problem("invalid", str(p)) for p in problems]
        self.problems = [p.text for p in self.details]  # the lines, as before
        super().__init__("\n".join(self.problems))

    def of_kind(self, kind: ProblemKind) -> list[Problem]:
        """The problems of one kind, in the order found."""
        return [p for p in self.details if p.kind == kind]


class PluginError(VoxpipeError):
    """Plugins that cannot be loaded in strict mode, or two plugins claiming one stage id."""


class StageError(Exception):
    """A stage failed on one case; the runner records it and goes on with the next case."""


TRACEBACK = "Traceback (most recent call last):"
MAX_LINE = 500
"""Longest case error kept: a library that prints a whole object (MONAI prints its readers) is cut."""


_CHAINING = ("The above exception was the direct cause", "During handling of the above exception")


def one_line(exc: BaseException) -> str:
    """Render an exception as a single line: ``Type: message`` without newlines.

    Library messages can hold whole tracebacks (MONAI's LoadImage appends one per reader it
    tried; torch's DataLoader wraps a worker's): each is replaced by its last line, the
    exception it ended in, which is kept when the rest is cut to :data:`MAX_LINE` characters.
    """
    prefix = "" if isinstance(exc, (VoxpipeError, StageError)) else type(exc).__name__
    return flatten(str(exc), prefix) or type(exc).__name__


def flatten(text: str, prefix: str = "") -> str:
    """Any text as one line (see :func:`one_line`), after ``prefix: `` when given."""
    head, ends = _without_tracebacks(text)
    head = " ".join(head.split())
    tail = " ".join("; ".join(ends).split())
    if prefix:
        head = f"{prefix}: {head}" if head else prefix
    if not tail:
        return _cut(head, MAX_LINE)
    tail = _cut(tail, MAX_LINE // 2)
    return f"{_cut(head, MAX_LINE - len(tail) - 3)} [{tail}]" if head else tail


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 3, 0)].rstrip() + "..."


def _without_tracebacks(text: str) -> tuple[str, list[str]]:
    """The text before any traceback, and the exception line each traceback ended in."""
    if TRACEBACK not in text:
        return text, []
    head, *blocks = text.split(TRACEBACK)
    head = head.rstrip()
    if head.endswith("Original"):  # torch: "Original Traceback (most recent call last):"
        head = head[: -len("Original")].rstrip()
    ends: list[str] = []
    for block in blocks:
        lines = [line for line in block.splitlines() if line.strip() and not line.startswith((" ", "\t", *_CHAINING))]
        if lines and lines[-1].strip() not in ends:
            ends.append(lines[-1].strip())
    return head, ends

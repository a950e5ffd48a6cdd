"""Errors a user can cause, each carrying the one line the CLI prints and its exit code.

Anything that is the user's to fix (a config, an input path, a plugin choice) raises a
:class:`VoxpipeError` subclass. The CLI prints ``error: <message>`` and exits with
``exit_code``; only ``--debug`` shows a traceback. Everything else is a bug and is
reported as such.
"""

from __future__ import annotations


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


class ConfigError(VoxpipeError):
    """A pipeline config that cannot be read or does not validate.

    Holds every problem found, one line each, so a user fixes them in one pass.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PluginError(VoxpipeError):
    """Plugins that cannot be loaded in strict mode, or two plugins claiming one stage id."""


class StageError(Exception):
    """A stage failed on one case; the runner records it and goes on with the next case."""


def one_line(exc: BaseException) -> str:
    """Render an exception as a single line: ``Type: message`` without newlines."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if isinstance(exc, (VoxpipeError, StageError)):
        return text or name
    return f"{name}: {text}" if text else name

"""What a plugin registers to add a ``voxpipe <command>``: a name, a one-line summary, and where the command lives.

The summary is what ``voxpipe --help`` shows, so listing commands imports no plugin
command module: the ``factory`` (``"module:attribute"`` naming a :class:`click.Command`)
is imported only when that command runs or its own ``--help`` is shown. A hook rather
than a separate ``voxpipe.commands`` entry-point group because the registry already loads
every plugin module for its stages (one discovery path, one allow/block rule), and the
commands then cost nothing more to list (docs/architecture.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

CORE_COMMANDS = ("run", "validate", "plugins", "train")
"""The platform's own commands; no plugin may register these names."""

COMMAND_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$")


@dataclass(frozen=True)
class CommandSpec:
    """A command a plugin adds to ``voxpipe``.

    Attributes:
        name: the word after ``voxpipe`` (lower case, digits, ``_`` and ``-``: ``sample-data``).
        summary: one line for ``voxpipe --help``.
        factory: ``"module:attribute"`` of a :class:`click.Command` (or a group), imported
            only when the command runs or its ``--help`` is asked for; a click command
            object is accepted too.
    """

    name: str
    summary: str
    factory: Any
    # Filled in by the registry: which plugin and distribution registered the command.
    plugin: str = ""
    distribution: str = ""
    version: str = ""


def checked_command(spec: object) -> CommandSpec:
    """Reject malformed command registrations with a reason the plugin author can act on."""
    if not isinstance(spec, CommandSpec):
        raise TypeError(f"registered {type(spec).__name__} as a command, expected voxpipe.plugin.CommandSpec")
    if not (isinstance(spec.name, str) and COMMAND_NAME_PATTERN.match(spec.name)):
        raise ValueError(f"command name {spec.name!r} must be lower case letters, digits, '_' and '-', like 'sample-data'")
    if not (isinstance(spec.summary, str) and spec.summary.strip() and "\n" not in spec.summary.strip()):
        raise ValueError(f"command {spec.name}: summary must be one non-empty line")
    if isinstance(spec.factory, str):
        module, _, attribute = spec.factory.partition(":")
        if not (module and attribute):
            raise ValueError(f"command {spec.name}: factory {spec.factory!r} must be 'module:attribute'")
    else:
        import click

        if not isinstance(spec.factory, click.Command):
            raise TypeError(f"command {spec.name}: factory must be a 'module:attribute' string or a click command")
    return spec


def load_command(spec: CommandSpec):
    """Import the command's click object; a failure is the plugin's, said in one line (``--debug`` shows its frames)."""
    import click

    from voxpipe.errors import PluginError
    from voxpipe.stage import import_object

    who = f"plugin `{spec.plugin}` ({spec.distribution} {spec.version})".replace(" )", ")")
    try:
        command = import_object(spec.factory) if isinstance(spec.factory, str) else spec.factory
    except Exception as exc:
        text = " ".join(str(exc).split())
        raise PluginError(
            f"command `{spec.name}` from {who} cannot be loaded: {type(exc).__name__}"
            + (f": {text}" if text else "")
            + " (rerun with --debug for the plugin's traceback)"
        ) from exc
    if not isinstance(command, click.Command):
        raise PluginError(f"command `{spec.name}` from {who}: {spec.factory} is a {type(command).__name__}, not a click command")
    return command

"""Reading a ``voxpipe`` command line before click does: where the command is, and the global options anywhere on it.

The global options (``--debug``, ``--show-phi``, ``--strict``, ``--allow-plugin``,
``--block-plugin``) must be known before the command is resolved, since the plugins they
select decide which commands exist, and they are accepted after the command too. Light
(no click) so that :mod:`voxpipe.entry` can find a ``run`` before it starts the fork server.
"""

from __future__ import annotations

GLOBAL_FLAGS = ("--debug", "--show-phi", "--strict")
GLOBAL_VALUED = ("--allow-plugin", "--block-plugin")


def options_part(args: list[str]) -> list[str]:
    """``args`` up to ``--`` (after it everything is an argument)."""
    return args[: args.index("--")] if "--" in args else args


def split_command(args: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(global options before the command, the command's name, everything after it)."""
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == "--":
            break
        elif arg in GLOBAL_VALUED:
            skip = True
        elif not arg.startswith("-"):
            return args[:i], arg, args[i + 1 :]
    return args, None, []


def pull_globals(args: list[str], keep: set[str]) -> tuple[list[str], list[str]]:
    """Split a command's arguments into (its own, the global options among them); options in ``keep`` are its own."""
    own: list[str] = []
    pulled: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.partition("=")[0]
        if arg == "--":
            own += args[i:]
            break
        if name in keep:
            own.append(arg)
        elif arg in GLOBAL_FLAGS:
            pulled.append(arg)
        elif name in GLOBAL_VALUED:
            take = 1 if "=" in arg else 2
            pulled += args[i : i + take]
            i += take
            continue
        else:
            own.append(arg)
        i += 1
    return own, pulled

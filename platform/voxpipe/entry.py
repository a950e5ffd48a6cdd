"""The installed ``voxpipe`` command: run the CLI, then leave without the interpreter's teardown.

Once torch and MONAI are imported, Python's own shutdown (freeing thousands of modules
one by one) takes 1.1-1.3 s on the 2-core benchmark machine, after every file is written
and closed: a second of nothing at the end of every ``voxpipe run --workers 0``, ``train``
or ``test``. Even the parent of a worker pool, which never imports torch, spends ~0.13 s
on it. So the command runs what a normal exit runs that matters -- the atexit handlers
(temporary folders, logging, multiprocessing children) and a flush of stdout and stderr --
and then ends the process with ``os._exit``, unless another non-daemon thread is alive
(those would be waited for). Every file VoxPipe writes is closed before the command
returns (``with`` blocks and atomic writes), so nothing is left for teardown to flush.
:func:`voxpipe.cli.main`, which tests call in-process, is unchanged.

Before anything else, a ``voxpipe run`` that will fork local (or dask-local) workers starts
the fork server that imports torch and MONAI for them: that import (~1.6 s) is the longest
thing a batch waits for, and the CLI's own start (loading plugins, validating the config,
discovering cases, 0.2-0.4 s) then happens beside it on another core instead of before it.
The command line is only glanced at here; click still parses it, and the runner starts the
server itself (a no-op when it is already running) if this guess said no. The private
umask (:func:`voxpipe.atomic.private_umask`) is set before that, so workers create private
files too.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading


def run() -> None:
    from voxpipe.atomic import private_umask

    os.umask(private_umask())  # before the fork server starts: workers forked from it inherit it
    kind = forked_workers(sys.argv[1:])
    if kind:
        from voxpipe.executors import start_forkserver

        start_forkserver(dask=kind == "dask-local")
    from voxpipe.cli import main

    try:
        main()
    except SystemExit as exc:
        leave(_exit_status(exc.code))
    leave(0)


def forked_workers(args: list[str]) -> str | None:
    """``"local"`` or ``"dask-local"`` when ``args`` are a ``run`` that forks such workers, else None.

    The defaults are click's: the local executor, one worker. The command is found as the
    CLI finds it (global options and their values may come first); anything this does not
    follow counts as no.
    """
    from voxpipe.command_line import split_command

    _head, command, rest = split_command(args)
    if command != "run":
        return None
    if "-h" in rest or "--help" in rest:
        return None
    workers, executor = "1", "local"
    for i, arg in enumerate(rest):
        following = rest[i + 1] if i + 1 < len(rest) else ""
        if arg in ("-w", "--workers"):
            workers = following
        elif arg.startswith("--workers="):
            workers = arg.split("=", 1)[1]
        elif arg.startswith("-w") and arg[2:].isdigit():
            workers = arg[2:]
        elif arg == "--executor":
            executor = following
        elif arg.startswith("--executor="):
            executor = arg.split("=", 1)[1]
    if not workers.isdigit():
        return None  # click will say what is wrong
    from voxpipe.executors import forks_from_server

    return executor if forks_from_server(executor, int(workers)) else None


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # what SystemExit("message") would print
    return 1


def leave(status: int) -> None:
    """Exit with ``status``: quickly, unless another thread is still running."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if others:
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (voxpipe info | head): nothing left to say
            pass
    os._exit(status)

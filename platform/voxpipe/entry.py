"""The installed ``voxpipe`` command: run the CLI, then leave without the interpreter's teardown.

Once torch and MONAI are imported, Python's own shutdown (freeing thousands of modules
one by one) takes 1.1-1.3 s on the 2-core benchmark machine, after every file is written
and closed: a second of nothing at the end of every ``voxpipe run --workers 0``, ``train``
or ``test``. So the command runs what a normal exit runs that matters -- the atexit
handlers (temporary folders, logging, multiprocessing children) and a flush of stdout and
stderr -- and then ends the process with ``os._exit``. It does so only when torch was
imported (otherwise teardown is quick) and no other non-daemon thread is alive (those
would be waited for). :func:`voxpipe.cli.main`, which tests call in-process, is unchanged.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading


def run() -> None:
    from voxpipe.cli import main

    try:
        main()
    except SystemExit as exc:
        leave(_exit_status(exc.code))
    leave(0)


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # what SystemExit("message") would print
    return 1


def leave(status: int) -> None:
    """Exit with ``status``: quickly when torch is loaded and nothing else is running."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if "torch" not in sys.modules or others:
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (voxpipe info | head): nothing left to say
            pass
    os._exit(status)

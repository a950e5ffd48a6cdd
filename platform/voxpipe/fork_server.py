"""The fork server that every local worker process (ours or Dask's) is forked from.

Both executors need it -- :mod:`voxpipe.executors` for its pool, :mod:`voxpipe.dask_executor`
for ``dask-local`` -- so it lives here and imports neither: the executors depend on this
module, never on each other's internals. The server imports torch and MONAI once
(:mod:`voxpipe.preload`) and never computes, so forking from it is fork-safe and a worker
starts warm; docs/scaling.md has the measurements.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Iterator

PRELOAD = ["voxpipe.preload"]  # importing it imports torch, MONAI and the worker (see that module)
DASK_PRELOAD = [*PRELOAD, "voxpipe.preload_dask"]

WORKER_ENV = {"MPLBACKEND": "agg"}
"""Defaults for worker processes (the user's own settings win). Workers never open windows,
and naming matplotlib's backend spares it a search that costs ~0.2 s of MONAI's import."""


def usable_cores() -> int:
    """Cores this process may run on (its affinity, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Split the usable cores evenly between workers (at least one thread each)."""
    return max(1, usable_cores() // max(1, workers))


@contextlib.contextmanager
def worker_environment() -> Iterator[None]:
    """Start worker processes (which copy the environment) inside this block; ours is restored after."""
    added = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def forks_from_server(executor: str, workers: int) -> bool:
    """Whether a run's workers are forked from the fork server (local pool or ``dask-local``)."""
    return (executor == "local" and workers > 0) or executor == "dask-local"


def start_forkserver(dask: bool = False) -> None:
    """Start the fork server now, so it imports torch and MONAI while the caller discovers cases.

    Returns at once; workers requested later wait for the server to finish its imports. With
    ``dask``, it also imports Dask's worker code (for ``dask-local``). Once running, later
    calls change nothing.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(DASK_PRELOAD if dask else PRELOAD)
    from multiprocessing import forkserver

    with worker_environment():
        forkserver.ensure_running()
    end_forkserver_at_exit()


_ENDING_REGISTERED = False


def end_forkserver_at_exit() -> None:
    """At exit, SIGKILL the fork server instead of letting it tear torch and MONAI down.

    The server only ever imported modules: it never computes, and once the workers are
    done it holds no files and no children. Left alone, it spends ~1.2 s of CPU on
    Python's teardown after we exit, on a core the next program wants.
    """
    global _ENDING_REGISTERED
    if _ENDING_REGISTERED:
        return
    _ENDING_REGISTERED = True
    import atexit

    atexit.register(_kill_forkserver)


def _kill_forkserver() -> None:
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (OSError, ChildProcessError):  # already gone
        pass

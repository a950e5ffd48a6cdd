"""Where cases run: in this process, in a pool of local worker processes, or on Dask.

Every executor takes the same ``(source, case_id)`` tasks and reports one
:class:`~voxpipe.worker.CaseOutcome` per task through ``on_outcome``; the runner owns the
manifest, resume and the report, so outputs are the same whichever executor ran them.

Why a small pool of our own rather than :class:`concurrent.futures.ProcessPoolExecutor`:
a worker that segfaults breaks a ``ProcessPoolExecutor`` for good, and a task cannot be
stopped when it runs past its time. Here each worker is a process the parent watches:
a crash fails that case only (with the signal named) and a fresh worker takes its place;
a case past ``timeout`` has its worker killed. Workers are forked from the fork server
(:mod:`voxpipe.fork_server`), so a replacement worker starts in a fraction of a second.

Imports go one way: this module -> :mod:`voxpipe.fork_server`, and (lazily, for a Dask
spec) -> :mod:`voxpipe.dask_executor`, which imports only the fork server and the worker.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import wait

from voxpipe.errors import UsageError
from voxpipe.fork_server import (
    DASK_PRELOAD,
    PRELOAD,
    WORKER_ENV,
    end_forkserver_at_exit,
    forks_from_server,
    start_forkserver,
    threads_per_worker,
    usable_cores,
    worker_environment,
)
from voxpipe.worker import CaseOutcome, RunRecipe

OnOutcome = Callable[[CaseOutcome], None]
ShouldStop = Callable[[], bool]

# The fork server's names are re-exported while callers move to voxpipe.fork_server.
__all__ = [
    "DASK_PRELOAD",
    "PRELOAD",
    "WORKER_ENV",
    "InlineExecutor",
    "LocalPool",
    "forks_from_server",
    "make_executor",
    "start_forkserver",
    "threads_per_worker",
    "usable_cores",
    "worker_environment",
]


class InlineExecutor:
    """Cases one after another in this process: no isolation, for notebooks and debugging."""

    name = "inline"

    def __init__(self, recipe: RunRecipe, pipeline=None) -> None:
        from voxpipe.worker import build_pipeline

        self.recipe = recipe
        self.pipeline = pipeline if pipeline is not None else build_pipeline(recipe)

    def run(self, tasks: Iterable[tuple], on_outcome: OnOutcome, should_stop: ShouldStop) -> None:
        from voxpipe.worker import process_case

        for source, cid in tasks:
            if should_stop():
                return
            on_outcome(process_case(self.pipeline, source, cid, self.recipe, worker="main"))

    def close(self) -> None:
        pass


@dataclass
class _Slot:
    """One worker process and the case it is working on."""

    name: str
    process: multiprocessing.Process
    conn: object
    index: int = 0  # 0..workers-1: which GPU a worker takes on a multi-GPU host
    ready: bool = False
    task: tuple | None = None
    deadline: float | None = None
    started: float = 0.0


class LocalPool:
    """N isolated worker processes with per-case timeouts; crashes cost one case, not the run."""

    name = "local"

    def __init__(self, recipe: RunRecipe, workers: int, timeout: float | None = None) -> None:
        self.recipe, self.workers, self.timeout = recipe, max(1, workers), timeout
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.slots: list[_Slot] = []
        self._counter = 0

    # -- worker lifecycle

    def _start(self) -> _Slot:
        self._counter += 1
        from voxpipe.worker import worker_main

        parent, child = self.context.Pipe(duplex=True)
        name = f"worker-{self._counter}"
        index = min(set(range(self.workers)) - {s.index for s in self.slots})
        process = self.context.Process(target=worker_main, args=(child, self.recipe, name, index), name=f"voxpipe-{name}", daemon=True)
        with worker_environment():  # in case the fork server starts only now
            process.start()
        end_forkserver_at_exit()
        child.close()
        slot = _Slot(name, process, parent, index=index, started=time.monotonic())
        self.slots.append(slot)
        return slot

    def _stop(self, slot: _Slot, kill: bool = False) -> None:
        if kill and slot.process.is_alive():
            slot.process.kill()
        else:
            try:
                slot.conn.send(None)
            except (OSError, ValueError):
                pass
        slot.process.join(5)
        if slot.process.is_alive():
            slot.process.kill()
            slot.process.join(5)
        slot.conn.close()
        if slot in self.slots:
            self.slots.remove(slot)

    def close(self) -> None:
        for slot in self.slots:  # ask every idle worker to finish first, so they wind down together
            if slot.task is None:
                try:
                    slot.conn.send(None)
                except (OSError, ValueError):
                    pass
        for slot in list(self.slots):
            self._stop(slot, kill=slot.task is not None)

    # -- scheduling

    def run(self, tasks: Iterable[tuple], on_outcome: OnOutcome, should_stop: ShouldStop) -> None:
        pending = list(tasks)
        pending.reverse()  # pop() from the end keeps discovery order
        try:
            for _ in range(min(self.workers, len(pending))):
                self._start()
            while self.slots:
                self._dispatch(pending, should_stop)
                if not self.slots:
                    break
                self._wait_once(pending, on_outcome, should_stop)
        finally:
            self.close()

    def _dispatch(self, pending: list, should_stop: ShouldStop) -> None:
        for slot in list(self.slots):
            if not slot.ready or slot.task is not None:
                continue
            if not pending or should_stop():
                self._stop(slot)
                continue
            slot.task = pending.pop()
            slot.deadline = time.monotonic() + self.timeout if self.timeout else None
            slot.conn.send(slot.task)

    def _wait_once(self, pending: list, on_outcome: OnOutcome, should_stop: ShouldStop) -> None:
        deadlines = [s.deadline for s in self.slots if s.deadline is not None]
        wait_for = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 1.0
        handles = {}
        for slot in self.slots:
            handles[slot.conn] = slot
            handles[slot.process.sentinel] = slot
        ready = wait(list(handles), timeout=min(wait_for, 1.0))
        handled: set[str] = set()
        for handle in ready:
            slot = handles[handle]
            if slot.name in handled or slot not in self.slots:
                continue
            handled.add(slot.name)
            received = (handle is slot.conn or slot.conn.poll()) and self._receive(slot, on_outcome)
            if not received:
                slot.process.join(2)  # a closed pipe: the worker has died (or is about to)
                if not slot.process.is_alive():
                    self._crashed(slot, pending, on_outcome, should_stop)
        now = time.monotonic()
        for slot in list(self.slots):
            if slot.deadline is not None and now >= slot.deadline and slot.task is not None:
                self._timed_out(slot, pending, on_outcome, should_stop)

    def _receive(self, slot: _Slot, on_outcome: OnOutcome) -> bool:
        """Handle one message; False when the pipe is closed (the worker died)."""
        try:
            kind, payload = slot.conn.recv()
        except (EOFError, OSError):
            return False
        if kind == "fatal":
            self.close()
            raise UsageError(payload)
        if kind == "ready":
            slot.ready = True
            return True
        slot.task, slot.deadline = None, None
        on_outcome(payload)
        return True

    def _replace_if_needed(self, pending: list, should_stop: ShouldStop) -> None:
        if pending and not should_stop() and len(self.slots) < self.workers:
            self._start()

    def _crashed(self, slot: _Slot, pending: list, on_outcome: OnOutcome, should_stop: ShouldStop) -> None:
        code = slot.process.exitcode
        task = slot.task
        self._stop(slot, kill=True)
        if task is None:
            if not slot.ready:
                raise UsageError(
                    f"a worker process exited while starting ({_describe_exit(code)}); rerun with --workers 0 --debug to see why"
                )
            self._replace_if_needed(pending, should_stop)
            return
        _clean_staging(self.recipe, task[1])
        on_outcome(
            CaseOutcome(
                task[1],
                "failed",
                0.0,
                f"the worker process crashed ({_describe_exit(code)}); the rest of the run went on",
                worker=slot.name,
            )
        )
        self._replace_if_needed(pending, should_stop)

    def _timed_out(self, slot: _Slot, pending: list, on_outcome: OnOutcome, should_stop: ShouldStop) -> None:
        task = slot.task
        self._stop(slot, kill=True)
        _clean_staging(self.recipe, task[1])
        on_outcome(
            CaseOutcome(
                task[1],
                "failed",
                float(self.timeout or 0),
                f"timed out after {self.timeout:g} s (worker stopped); raise --timeout if this case is just large",
                worker=slot.name,
            )
        )
        self._replace_if_needed(pending, should_stop)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


def _clean_staging(recipe: RunRecipe, cid: str) -> None:
    """A killed worker leaves its half-written staging folder: remove it (never published)."""
    import shutil
    from pathlib import Path

    from voxpipe.worker import STAGING

    for leftover in (Path(recipe.output_dir) / STAGING).glob(f"{cid}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def make_executor(spec: str, recipe: RunRecipe, workers: int, timeout: float | None, pipeline=None):
    """``local`` (with ``workers`` 0 meaning this process), ``dask-local`` or ``tcp://HOST:PORT``."""
    if spec == "local":
        if workers == 0:
            if timeout:
                raise UsageError("--timeout needs worker processes: use --workers 1 or more (not 0)")
            return InlineExecutor(recipe, pipeline)
        return LocalPool(recipe, workers, timeout)
    if spec == "dask-local" or spec.startswith(("tcp://", "tls://")):
        from voxpipe.dask_executor import DaskExecutor

        return DaskExecutor(spec, recipe, workers, timeout)
    raise UsageError(f"unknown executor `{spec}`; use local, dask-local or tcp://HOST:PORT")

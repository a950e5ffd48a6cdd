"""Cases on Dask workers: a ``LocalCluster`` started here, or an existing scheduler.

The same :func:`voxpipe.worker.process_case` runs on every Dask worker as in a local
worker process, writing to the same output folder (which must therefore be shared
storage when the workers are on other machines), so the outputs, the manifest and resume
are identical. Before any case is sent, every worker is asked to validate the config
against its own installed plugins (``client.run``): a worker without a plugin, or with
another version of one, is named in one line instead of failing case after case.

What Dask does not give: a way to stop one running task. ``--timeout`` is therefore a
local-executor feature and is refused here; a case that crashes its Dask worker (a
segfault) fails as that one case once the scheduler gives up on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable

from voxpipe.errors import ConfigError, UsageError, VoxpipeError, one_line
from voxpipe.worker import CaseOutcome, RunRecipe, adopt_environment

CONNECT_TIMEOUT_ENV = "VOXPIPE_DASK_CONNECT_TIMEOUT"  # seconds; default 10
_PIPELINES: dict[str, object] = {}
_LOCK = threading.Lock()


def probe_worker(recipe: RunRecipe) -> str | None:
    """On a worker: ``None`` when it can run the config, else the one-line reason."""
    from pathlib import Path

    from voxpipe.registry import PluginSelection, Registry
    from voxpipe.worker import validate_recipe

    adopt_environment(recipe, same_machine=False)
    try:
        registry = Registry.load(PluginSelection.from_env())
        validated = validate_recipe(recipe, registry)
    except ConfigError as exc:
        first = next(iter(exc.of_kind("unknown_stage") or exc.details), None)  # the missing stage, by kind
        return f"plugin not installed: {first.text if first else exc}"
    except VoxpipeError as exc:  # strict plugin loading on the worker
        return "plugin not installed: " + str(exc).splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - anything else is still the worker's problem, in one line
        return one_line(exc)
    if validated.hash != recipe.config_hash:
        return "plugin versions differ: " + ", ".join(sorted({f"{s.spec.distribution} {s.spec.version}" for s in validated.stages}))
    if not Path(recipe.output_dir).is_dir():
        return f"cannot see the output folder {recipe.output_dir} (workers need it on shared storage)"
    return None


def run_case_task(recipe: RunRecipe, source, cid: str, threads: int) -> CaseOutcome:
    """On a worker: run one case with a pipeline built once per worker process and config."""
    from voxpipe.worker import build_pipeline, limit_threads, process_case

    with _LOCK:
        pipeline = _PIPELINES.get(recipe.config_hash)
        if pipeline is None:
            adopt_environment(recipe, same_machine=False)
            limit_threads(threads)
            try:
                pipeline = build_pipeline(recipe)
            except VoxpipeError as exc:
                return CaseOutcome(cid, "failed", 0.0, str(exc).splitlines()[0])
            _PIPELINES.clear()
            _PIPELINES[recipe.config_hash] = pipeline
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except Exception:  # noqa: BLE001
        name = None
    return process_case(pipeline, source, cid, recipe, worker=f"dask-{name}" if name is not None else "dask")


class DaskExecutor:
    """Submits each case to a Dask cluster and reports outcomes as they complete."""

    def __init__(self, spec: str, recipe: RunRecipe, workers: int, timeout: float | None) -> None:
        if timeout:
            raise UsageError(
                "--timeout works with the local executor only (Dask cannot stop a running task); drop --timeout or use --executor local"
            )
        self.spec, self.recipe, self.cluster, self.client = spec, recipe, None, None
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise UsageError("the Dask executors need the `distributed` package: pip install distributed") from None
        if spec == "dask-local":
            import dask

            count = workers or 2
            from voxpipe.fork_server import start_forkserver, worker_environment

            start_forkserver(dask=True)  # already running when the runner started it; preloads torch, MONAI, Dask

            settings = {
                "distributed.scheduler.allowed-failures": 0,
                # Worker processes fork from VoxPipe's fork server, which has imported torch
                # and MONAI once (started by the runner), instead of each importing them;
                # forked, they also exit without Python's teardown (1.1-1.3 s with torch).
                "distributed.worker.multiprocessing-method": "forkserver",
                # Housekeeping tuned for interactive clusters wakes every process up many
                # times a second; on a workstation that CPU is taken from the cases. Our
                # cluster runs no dashboard, holds no task data (a case returns a small
                # record), and gets independent cases already in order:
                "distributed.worker.profile.enabled": False,  # stack samples every 10 ms, for a dashboard
                "distributed.admin.tick.interval": "1s",  # event-loop health checks (20 ms)
                "distributed.admin.system-monitor.interval": "5s",  # CPU/memory/network history (500 ms)
                "distributed.worker.memory.monitor-interval": "1s",  # spill/pause/restart checks (100 ms)
                "distributed.scheduler.work-stealing": False,
            }  # rebalancing of equal, queued tasks
            # What they save: docs/benchmarks.md, "Batch runs".
            with dask.config.set(settings), worker_environment():
                self.cluster = LocalCluster(
                    n_workers=count,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    silence_logs=logging.ERROR,  # HTTP endpoint on loopback only
                )
            self.client = Client(self.cluster)
        else:
            try:
                seconds = float(os.environ.get(CONNECT_TIMEOUT_ENV) or 10)
                self.client = Client(spec, timeout=f"{seconds}s")
            except (OSError, TimeoutError):
                raise UsageError(
                    f"cannot reach the Dask scheduler at {spec} (no answer within {seconds:g} s); "
                    "check the address, or start one with `dask scheduler` and `dask worker`"
                ) from None
        try:
            self._check_workers()
        except BaseException:
            self.close()
            raise

    def _check_workers(self) -> None:
        info = self.client.scheduler_info()
        workers = info.get("workers", {})
        if not workers:
            raise UsageError(f"the Dask scheduler at {self.spec} has no workers; start some with `dask worker {self.spec}`")
        answers = self.client.run(probe_worker, self.recipe)
        bad = {address: reason for address, reason in answers.items() if reason}
        if bad:
            address, reason = min(bad.items())
            more = f" (and {len(bad) - 1} more workers)" if len(bad) > 1 else ""
            raise UsageError(f"Dask worker {address}{more}: {reason}; install the same plugins on every worker (pip install ...)")
        per_host: dict[str, int] = {}
        for worker in workers.values():
            host = worker.get("host", "")
            per_host[host] = per_host.get(host, 0) + int(worker.get("nthreads", 1))
        cores = {address: self.client.run(os.cpu_count, workers=[address])[address] for address in workers}
        # torch threads per case: the host's cores shared by every task slot on that host
        self.threads = {address: max(1, (cores[address] or 1) // per_host.get(w.get("host", ""), 1)) for address, w in workers.items()}

    def run(self, tasks: Iterable[tuple], on_outcome, should_stop) -> None:
        import uuid

        from distributed import as_completed

        futures = {}
        threads = min(self.threads.values()) if self.threads else 1
        run_tag = uuid.uuid4().hex[:8]  # keys unique per run: a scheduler never hands back an older run's result
        for priority, (source, cid) in enumerate(tasks):
            future = self.client.submit(
                run_case_task, self.recipe, source, cid, threads, key=f"voxpipe-{cid}-{run_tag}", pure=False, priority=-priority, retries=0
            )
            futures[future] = cid
        stopped = False
        for future in as_completed(list(futures)):
            cid = futures[future]
            if future.cancelled():
                continue
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker (a crash), CancelledError, communication loss
                outcome = CaseOutcome(
                    cid,
                    "failed",
                    0.0,
                    f"the Dask worker running this case died or was lost ({type(exc).__name__}); the rest of the run went on",
                )
            on_outcome(outcome)
            if not stopped and should_stop():
                stopped = True
                for other in futures:
                    if not other.done():
                        other.cancel()

    def close(self) -> None:
        for part in (self.client, self.cluster):
            if part is not None:
                with contextlib.suppress(Exception):  # already closed or unreachable: nothing left to free
                    part.close()
        self.client = self.cluster = None

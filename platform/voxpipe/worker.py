"""One case, start to finish, wherever it runs: in the calling process, a local worker
process or a Dask worker.

A worker is handed a :class:`RunRecipe` -- the resolved config as data, never a pickled
pipeline -- and rebuilds the registry, the validation and the stages itself. Rebuilding
checks what matters on a remote machine: that every plugin the config uses is installed
there, in the same version (the config hash would differ otherwise).

:func:`process_case` runs the stages in a private staging folder, writes ``case.json``
and publishes the folder with one rename, retrying only transient I/O errors (a flaky
network share), and says when the output disk is full so the runner can stop early.
Every case error and warning passes through :class:`voxpipe.redaction.CaseRedactor` here,
before it reaches ``case.json``, the manifest, the report or stderr: library messages quote
header values, and this is the one place all executors share.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxpipe.errors import ConfigError, Problem, VoxpipeError, one_line
from voxpipe.record_values import jsonable, utc_now
from voxpipe.redaction import CaseRedactor

CASE_RECORD = "case.json"
STAGING = ".voxpipe"

TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EIO",
        "EAGAIN",
        "EBUSY",
        "EINTR",
        "ETIMEDOUT",
        "ESTALE",
        "ECONNRESET",
        "ECONNABORTED",
        "ECONNREFUSED",
        "ENETDOWN",
        "ENETUNREACH",
        "EHOSTUNREACH",
        "EREMOTEIO",
    )
    if hasattr(errno, name)
)
"""I/O errors worth another try: network file systems and busy devices recover from these."""

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True)
class RunRecipe:
    """Everything a worker needs to rebuild the pipeline and place its outputs.

    Attributes:
        config: the resolved config (every default filled in), as plain data; used only when
            there is no ``config_text`` (a config given to the Python API as a dict).
        config_text: the config file's text, validated again on the worker with ``overrides``
            (the resolved form is an account of what ran, not always valid input).
        overrides: the ``--set`` overrides the parent applied.
        source: the config's file name, for messages.
        config_dir: where relative paths in the config (weights) are resolved.
        config_hash: what the parent validated; a worker that gets another hash has other plugins.
        device: the resolved device (``cpu``, ``cuda:1``, ...).
        output_dir: the run's output folder (shared storage when workers are remote).
        threads: torch / BLAS threads per worker, so N workers do not oversubscribe the cores.
        retries: extra attempts for a case that failed with a transient I/O error.
        env: ``VOXPIPE_*`` settings (plugin allow/block lists, id key file) for the worker.
        sys_path: the parent's import path, so plugins found there are found by local workers.
    """

    config: dict
    source: str
    config_dir: str
    config_hash: str
    device: str
    output_dir: str
    threads: int = 1
    retries: int = 2
    env: dict = field(default_factory=dict)
    sys_path: tuple[str, ...] = ()
    config_text: str | None = None
    overrides: tuple[str, ...] = ()


@dataclass
class CaseOutcome:
    """What happened to one case; ``fatal`` asks the runner to stop (the output disk is full)."""

    case_id: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    error: str | None = None
    stages: list[dict] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    attempts: int = 1
    fatal: str | None = None
    worker: str | None = None

    def as_dict(self) -> dict:
        entry: dict[str, Any] = {"case_id": self.case_id, "status": self.status, "seconds": round(self.seconds, 4)}
        if self.error:
            entry["error"] = self.error
        if self.attempts > 1:
            entry["attempts"] = self.attempts
        if self.warnings:
            entry["warnings"] = self.warnings
        if self.stages:
            entry["stages"] = self.stages
        if self.outputs:
            entry["outputs"] = self.outputs
        return entry


# ----------------------------------------------------------------------------- building


def build_pipeline(recipe: RunRecipe):
    """Validate the recipe's config against this process's plugins and build the stages.

    Raises:
        ConfigError: a stage the config uses is not installed here, or has another version.
    """
    from voxpipe.pipeline import Pipeline
    from voxpipe.registry import PluginSelection, Registry

    registry = Registry.load(PluginSelection.from_env())
    try:
        validated = validate_recipe(recipe, registry)
    except ConfigError as exc:
        detail = (exc.of_kind("unknown_stage") or exc.details)[0].text
        raise ConfigError(
            [
                Problem(
                    "plugins_differ",
                    f"worker on {_host()}: plugins differ from the submitting machine ({detail}); "
                    "install the same plugins on every worker (pip install ...)",
                )
            ]
        ) from None
    if validated.hash != recipe.config_hash:
        here = ", ".join(sorted({f"{s.spec.distribution} {s.spec.version}" for s in validated.stages}))
        raise ConfigError(
            [
                Problem(
                    "plugins_differ",
                    f"worker on {_host()}: plugin versions or code differ from the submitting machine "
                    f"(here: {here}); install the same plugin versions and code on every worker",
                )
            ]
        )
    return Pipeline(validated, recipe.device)


def validate_recipe(recipe: RunRecipe, registry):
    """The recipe's config validated against ``registry`` (this process's plugins)."""
    from voxpipe.config import validate_text

    if recipe.config_text is not None:
        text, overrides = recipe.config_text, recipe.overrides
    else:
        import yaml

        text, overrides = yaml.safe_dump(recipe.config, sort_keys=False), ()
    return validate_text(text, registry, source=recipe.source, config_dir=Path(recipe.config_dir), overrides=overrides)


def _host() -> str:
    import socket

    return socket.gethostname()


def limit_threads(threads: int) -> None:
    """Cap torch and BLAS/OpenMP pools at ``threads`` in this process."""
    threads = max(1, int(threads))
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except Exception:  # noqa: BLE001 - threadpoolctl is optional; the env vars still apply to new pools
        pass
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already fixed in this process (set once, or work already ran): fine
        pass


def die_with_parent() -> None:
    """Linux: ask the kernel to SIGKILL this process when its parent dies (no orphans after a kill -9)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; the pipe EOF check still stops idle workers
        pass


# What a worker on another machine takes from the submitting side: what decides which plugins
# run, how private outputs are and how much memory a case may take. Its other settings (key
# files, paths) are that machine's own.
SHARED_SETTINGS = ("VOXPIPE_PLUGINS_ALLOW", "VOXPIPE_PLUGINS_BLOCK", "VOXPIPE_FILE_MODE", "VOXPIPE_DIR_MODE", "VOXPIPE_MAX_GIB")


def adopt_environment(recipe: RunRecipe, same_machine: bool) -> None:
    """The one rule for what a worker adopts from the run that submitted it.

    On the same machine (the local pool's forked workers) every VOXPIPE_* setting and the
    import path are the parent's, since a fork server may predate them; on another machine
    (Dask) only :data:`SHARED_SETTINGS`.
    """
    if not same_machine:
        os.environ.update({name: recipe.env[name] for name in SHARED_SETTINGS if name in recipe.env})
        return
    for name in [n for n in os.environ if n.startswith("VOXPIPE_")]:
        if name not in recipe.env:
            del os.environ[name]
    os.environ.update(recipe.env)
    for entry in reversed(recipe.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)


# ----------------------------------------------------------------------------- one case


class _ExceptionTap:
    """Wraps a stage call to remember the exception it raised (the pipeline keeps only text)."""

    def __init__(self, call, holder: list) -> None:
        self.call, self.holder = call, holder

    def __call__(self, case: dict) -> dict:
        try:
            return self.call(case)
        except BaseException as exc:
            self.holder.append(exc)
            raise


def tap_exceptions(pipeline) -> list:
    """Make ``pipeline``'s stages record their exceptions in the returned list."""
    holder: list = []
    for stage in pipeline.stages:
        if not isinstance(stage.call, _ExceptionTap):
            stage.call = _ExceptionTap(stage.call, holder)
        else:
            holder = stage.call.holder
    return holder


def io_errno(exc: BaseException | None) -> int | None:
    """The errno of an OSError in ``exc``'s cause chain, if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def process_case(pipeline, source, cid: str, recipe: RunRecipe, worker: str | None = None) -> CaseOutcome:
    """Run one case with retries for transient I/O errors; publish it whole or not at all."""
    holder = tap_exceptions(pipeline)
    attempts = 0
    while True:
        attempts += 1
        holder.clear()
        outcome = _attempt(pipeline, source, cid, recipe, holder)
        outcome.attempts, outcome.worker = attempts, worker
        transient = outcome.fatal is None and _failure_errno(outcome, holder) in TRANSIENT_ERRNOS
        if transient and attempts <= recipe.retries:
            time.sleep(min(0.2 * 2 ** (attempts - 1), 5.0))
            continue
        return outcome


def _failure_errno(outcome: CaseOutcome, holder: list) -> int | None:
    if outcome.status != "failed":
        return None
    return io_errno(holder[-1]) if holder else None


def _attempt(pipeline, source, cid: str, recipe: RunRecipe, holder: list) -> CaseOutcome:
    output_dir = Path(recipe.output_dir)
    staging_root = output_dir / STAGING
    start = time.perf_counter()
    try:
        staging = Path(tempfile.mkdtemp(prefix=f"{cid}-", dir=staging_root))
    except OSError as exc:
        return _io_failure(cid, exc, time.perf_counter() - start, "cannot create the staging folder")
    try:
        result = pipeline.run_case(source, cid, staging)
        seconds = time.perf_counter() - start
        stages = [{"stage": label, "seconds": round(t, 4)} for label, t in result.timings]
        private = CaseRedactor(getattr(source, "paths", ()))  # the one place case texts are made safe to store and print
        warnings = [private(str(w)) for w in result.case.get("warnings", [])]
        if not result.ok:
            code = io_errno(holder[-1]) if holder else None
            fatal = disk_full_message(output_dir) if code in DISK_FULL_ERRNOS else None
            return CaseOutcome(cid, "failed", seconds, private(result.error), stages, warnings=warnings, fatal=fatal)
        outputs = sorted([p.name for p in staging.iterdir()] + [CASE_RECORD])
        record = case_record(result, cid, recipe.config_hash, seconds, stages, outputs, warnings, private, staging)
        from voxpipe.atomic import publish_dir, write_json

        try:
            write_json(staging / CASE_RECORD, record)
            publish_dir(staging, output_dir / cid, staging_root)
        except OSError as exc:
            holder.append(exc)
            return _io_failure(cid, exc, seconds, "cannot write the case's outputs", stages, warnings)
        return CaseOutcome(cid, "ok", seconds, None, stages, outputs, warnings)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _io_failure(cid, exc: OSError, seconds: float, what: str, stages=None, warnings=None) -> CaseOutcome:
    reason = exc.strerror or type(exc).__name__
    fatal = disk_full_message(None) if exc.errno in DISK_FULL_ERRNOS else None
    return CaseOutcome(cid, "failed", seconds, f"{what} ({reason})", stages or [], warnings=warnings or [], fatal=fatal)


def disk_full_message(output_dir: Path | None) -> str:
    where = f" under {output_dir}" if output_dir else ""
    return (
        f"the output disk is full{where}; the run stopped. Complete cases are kept: free some space "
        "(or choose another -o) and rerun the same command to finish the rest"
    )


def case_record(
    result,
    cid: str,
    config_hash: str,
    seconds: float,
    stages: list,
    outputs: list,
    warnings: list[str] | None = None,
    redact=str,
    folder: Path | None = None,
) -> dict:
    """``case.json``: what each stage did, plus what the stages recorded for the report.

    ``warnings`` come already redacted; ``redact`` makes the recorded report texts safe too,
    and with ``folder`` (the staging folder) pictures that are not plain files in it are dropped.
    """
    record = {
        "case_id": cid,
        "status": "ok",
        "config_hash": config_hash,
        "kind": result.case["source"].kind,
        "seconds": round(seconds, 4),
        "stages": stages,
        "history": jsonable(result.case.get("history", [])),
        "warnings": warnings if warnings is not None else [str(w) for w in result.case.get("warnings", [])],
        "outputs": outputs,
        "finished": utc_now("microseconds"),
    }
    items = report_record(result.case, redact, folder)
    if items["metrics"] or items["pictures"]:
        record["report"] = items
    metrics = case_metrics(result.case, items["metrics"])
    if metrics:
        record["metrics"] = metrics
    return record


def report_record(case: dict, redact=str, folder: Path | None = None) -> dict:
    """The report items stages recorded, as JSON, every text through ``redact``."""
    from voxpipe.report_items import items_of, picture_file

    items = items_of(case)
    metrics = []
    for metric in items["metrics"]:
        entry = {k: (redact(v) if isinstance(v, str) else v) for k, v in metric.items()}
        metrics.append(jsonable(entry))
    pictures = []
    for picture in items["pictures"]:
        path = picture.get("path")
        if not isinstance(path, str) or redact(path) != path:
            continue  # a name the redactor would change quotes the input: left out, never shown
        if folder is not None and picture_file(folder, path) is None:
            continue  # never written, or a link: the report would refuse it anyway
        pictures.append({"path": path, "caption": redact(str(picture.get("caption", "")))})
    return {"metrics": metrics, "pictures": pictures}


def case_metrics(case: dict, recorded: list[dict] | None = None) -> dict:
    """Values only, for scripts: the recorded metrics by name, plus the case's head outputs and feature counts.

    ``outputs`` and ``features`` are case keys of the data model (docs/architecture.md), not
    any plugin's; every other number is what a stage recorded with ``report_metric``.
    """
    from voxpipe.report_items import items_of, metric_values

    metrics: dict[str, Any] = metric_values(items_of(case)["metrics"] if recorded is None else recorded)
    outputs = case.get("outputs")
    if isinstance(outputs, dict) and outputs:
        metrics["outputs"] = jsonable(outputs)
    features = case.get("features")
    if isinstance(features, dict) and features:
        metrics["features"] = {name: int(getattr(v, "size", 0) or len(v)) for name, v in features.items()}
    return metrics


# ----------------------------------------------------------------------------- local worker loop


def gpu_for_worker(device: str, index: int) -> str:
    """``cuda`` on a host with several GPUs: worker ``index`` takes GPU ``index % count``.

    An explicit ``cuda:N`` is kept as given; so is ``cuda`` when CUDA_VISIBLE_DEVICES already
    narrows the worker to one device (the way schedulers such as Slurm hand out GPUs).
    """
    if device != "cuda":
        return device
    import torch

    count = torch.cuda.device_count()
    return f"cuda:{index % count}" if count > 1 else device


def worker_main(conn, recipe: RunRecipe, name: str, index: int = 0) -> None:
    """A local worker process: build the pipeline once, then run the cases it is sent.

    Protocol on ``conn``: the worker sends ``("ready", None)`` or ``("fatal", message)``, then
    answers each ``(source, case_id)`` with ``("done", CaseOutcome)``; ``None`` or a closed
    pipe ends it. A crash or a timeout is the parent's to notice (it watches the process).
    """
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    adopt_environment(recipe, same_machine=True)
    try:
        limit_threads(recipe.threads)
        device = gpu_for_worker(recipe.device, index)
        if device != recipe.device:
            import dataclasses

            recipe = dataclasses.replace(recipe, device=device)
        pipeline = build_pipeline(recipe)
    except VoxpipeError as exc:
        conn.send(("fatal", str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - reported by the parent as one line
        conn.send(("fatal", f"worker could not start: {one_line(exc)}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        source, cid = task
        conn.send(("done", process_case(pipeline, source, cid, recipe, worker=name)))

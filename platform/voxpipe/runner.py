"""``voxpipe run``: discover cases, run the pipeline on each, publish outputs atomically.

Every case is processed in a private staging folder under ``OUTDIR/.voxpipe/`` and moved
to ``OUTDIR/<case-id>/`` only when all of its stages succeeded, so a case folder is
always complete. A failing case is recorded (one line, no paths) and the run goes on.
``manifest.json`` is rewritten atomically as cases finish (at most every
``MANIFEST_INTERVAL`` seconds, and at the end), so even a killed run leaves a valid
account of what finished. A case whose folder holds a ``case.json`` with the same config
hash is complete and is skipped on a rerun unless ``force`` is given; that record, not
the manifest, is what resume trusts.

Cases run where the executor puts them (:mod:`voxpipe.executors`): in this process, in
isolated local worker processes, or on Dask workers. One run at a time may use an output
folder (a lock file says so); what a killed run left in staging is cleared by the next.

The output tree never overlaps the input (a rerun would take earlier outputs for new
cases), and a ``--source-map`` (it names inputs) lies outside it
(:mod:`voxpipe.private_files`). Everything a run creates is private: folders 0700, files
0600 (:mod:`voxpipe.atomic`).
"""

from __future__ import annotations

import errno
import json
import os
import platform as _platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from voxpipe import __version__
from voxpipe.atomic import clear_stale_temps, dir_mode, file_mode, make_dirs, write_json
from voxpipe.cases import CaseSource, case_id, id_key
from voxpipe.config import ValidatedConfig
from voxpipe.device import resolve_device
from voxpipe.errors import UsageError, VoxpipeError
from voxpipe.record_values import utc_now as _now
from voxpipe.registry import Registry
from voxpipe.worker import CASE_RECORD, STAGING, CaseOutcome, RunRecipe, disk_full_message

MANIFEST = "manifest.json"
LOCK = "run.lock"
MANIFEST_INTERVAL = 0.5
__all__ = ["CaseOutcome", "RunSummary", "run", "prepare_output", "MANIFEST", "CASE_RECORD", "STAGING"]


@dataclass
class RunSummary:
    output_dir: Path
    outcomes: list[CaseOutcome]
    skipped_files: Counter = field(default_factory=Counter)
    fatal: str | None = None  # the run stopped early (a full disk); the message says what to do
    not_run: int = 0
    report: Path | None = None

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def exit_code(self) -> int:
        if self.fatal:
            return 2
        return 1 if self.count("failed") else 0


def prepare_output(output_dir: Path) -> None:
    """Create the output folder (private, parents too) and prove it is writable, before any case runs."""
    try:
        make_dirs(output_dir)
        if (output_dir / STAGING).is_symlink():  # a planted link would send every case's files elsewhere
            raise UsageError(
                f"output folder {output_dir}: {STAGING} is a symbolic link; remove it (outputs are never written through links)"
            )
        try:
            os.mkdir(output_dir / STAGING, dir_mode())
        except FileExistsError:
            pass
        with tempfile.NamedTemporaryFile(dir=output_dir / STAGING):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UsageError(f"output folder {output_dir}: the disk is full ({reason}); free some space or choose another -o") from None
        raise UsageError(f"output folder {output_dir} is not writable ({reason}); choose another with -o") from None


def run(
    validated: ValidatedConfig,
    registry: Registry,
    input_path: Path,
    output_dir: Path,
    device: str | None = None,
    force: bool = False,
    on_case: Callable[[int, int, CaseOutcome], None] | None = None,
    source_map: Path | None = None,
    workers: int = 0,
    executor: str = "local",
    timeout: float | None = None,
    retries: int = 2,
    report: bool = True,
    on_start: Callable[[int, int], None] | None = None,
    source_options: dict | None = None,
    recorded_source: str | None = None,
    source_url: str | None = None,
) -> RunSummary:
    """Run a validated pipeline over every case under ``input_path``.

    Args:
        workers: local worker processes; 0 runs the cases in this process (no isolation).
            With a Dask executor: the number of workers a ``dask-local`` cluster starts.
        executor: ``local``, ``dask-local`` or ``tcp://HOST:PORT`` (an existing scheduler).
        timeout: seconds a case may take before its worker is stopped (needs workers).
        retries: extra attempts for a case that failed with a transient I/O error.
        report: write ``OUTDIR/report.html`` at the end.
        on_start: called with (cases to run, cases already complete) before the first case.
        source_options: options for a URL input's opener (``ae_title``, ``ca_bundle``).
        recorded_source: what the manifest says the input was (a URL input's redacted form).
        source_url: a URL input as given, for ``--source-map`` (the folder it was fetched to is gone after the run).
    """
    if workers < 0 or retries < 0 or (timeout is not None and timeout <= 0):
        raise UsageError("--workers and --retries must be 0 or more, --timeout more than 0 seconds")
    from voxpipe.input_sources import source_text

    url = source_text(input_path)
    if url is not None:  # a PACS URL: fetched into a private folder that lives as long as the run (voxpipe.input_sources)
        from voxpipe.input_sources import open_input, redacted_source

        if executor not in ("local", "dask-local"):
            raise UsageError(
                f"-i {redacted_source(url)}: a URL input is fetched to this machine, which {executor}'s workers cannot read; "
                "run with --executor local or dask-local, or copy the series to a folder the workers share"
            )

        with open_input(url, source_options, registry) as folder:
            return run(
                validated,
                registry,
                folder,
                output_dir,
                device=device,
                force=force,
                on_case=on_case,
                source_map=source_map,
                workers=workers,
                executor=executor,
                timeout=timeout,
                retries=retries,
                report=report,
                on_start=on_start,
                recorded_source=redacted_source(url),
                source_url=url,
            )
    input_path, output_dir = Path(input_path), Path(output_dir)
    if not input_path.exists():
        raise UsageError(f"input path {input_path} does not exist; pass a file or folder with -i")
    from voxpipe.input_redaction import register_input
    from voxpipe.safe_paths import check_separate

    register_input(input_path)
    check_separate(input_path, output_dir)
    if source_map is not None:
        from voxpipe.private_files import check_link_file

        check_link_file(source_map, output_dir, "--source-map")
    from voxpipe.fork_server import forks_from_server, start_forkserver

    if forks_from_server(executor, workers):
        start_forkserver(dask=executor == "dask-local")  # its imports overlap with ours (resolve_device, discovery)
    resolved_device = resolve_device(device or validated.config.device)
    pipeline = None
    if executor == "local" and workers == 0:
        from voxpipe.pipeline import Pipeline

        pipeline = Pipeline(validated, resolved_device)
    from voxpipe.pipeline import discover

    discovery = discover(validated, input_path)
    if not discovery.cases:
        skipped = "; ".join(f"{n} {reason}" for reason, n in discovery.skipped.most_common()) or "no files"
        where = recorded_source or input_path
        raise UsageError(f"no cases found under {where} for loader `{validated.stages[0].spec.id}` ({skipped})")
    key = id_key()
    ids = [case_id(source, key) for source in discovery.cases]
    _check_previous_config(output_dir, validated, ids, force)
    fresh = not output_dir.exists()
    prepare_output(output_dir)
    try:
        with RunLock(output_dir):
            clear_stale_staging(output_dir)
            return _run_locked(
                validated,
                registry,
                discovery,
                ids,
                output_dir,
                resolved_device,
                force,
                on_case,
                on_start,
                source_map,
                workers,
                executor,
                timeout,
                retries,
                report,
                pipeline,
                recorded_source,
                source_url,
            )
    except VoxpipeError:
        if fresh and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()  # the run never started: leave no empty folder behind
        raise


def _run_locked(
    validated,
    registry,
    discovery,
    ids,
    output_dir,
    device,
    force,
    on_case,
    on_start,
    source_map,
    workers,
    executor,
    timeout,
    retries,
    report,
    pipeline,
    recorded_source=None,
    source_url=None,
) -> RunSummary:
    started = _now()
    total = len(ids)
    position = {cid: i for i, cid in enumerate(ids)}
    outcomes: dict[str, CaseOutcome] = {}
    header = _manifest_header(validated, registry, device, started, discovery.skipped)
    header["executor"] = {"kind": executor, "workers": workers, "timeout_s": timeout, "retries": retries}
    if recorded_source is not None:
        header["input"] = {"source": recorded_source}  # redacted: scheme, host, port, path, query key names
    if source_map is not None:
        _write_source_map(source_map, ids, discovery.cases, source_url)
    todo = []
    for source, cid in zip(discovery.cases, ids):
        if not force and _is_complete(output_dir / cid, validated.hash):
            outcomes[cid] = CaseOutcome(cid, "skipped")
        else:
            todo.append((source, cid))
    if on_start:
        on_start(len(todo), total - len(todo))
    done = [0]
    for cid in ids:
        if cid in outcomes and on_case:
            done[0] += 1
            on_case(done[0], total, outcomes[cid])
    state = {"fatal": None, "last_write": 0.0}

    def ordered() -> list[CaseOutcome]:
        return sorted(outcomes.values(), key=lambda o: position[o.case_id])

    def write_manifest(finished: str | None, force_write: bool = False) -> None:
        now = time.monotonic()
        if not force_write and now - state["last_write"] < MANIFEST_INTERVAL:
            return
        try:
            _write_manifest(output_dir, header, ordered(), finished)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                state["fatal"] = state["fatal"] or disk_full_message(output_dir)
            else:
                raise UsageError(f"cannot write {output_dir / MANIFEST} ({exc.strerror}); check the output folder") from None
        state["last_write"] = now

    def on_outcome(outcome: CaseOutcome) -> None:
        outcomes[outcome.case_id] = outcome
        if outcome.fatal and not state["fatal"]:
            state["fatal"] = disk_full_message(output_dir)
        write_manifest(None)
        done[0] += 1
        if on_case:
            on_case(done[0], total, outcome)

    runner = None
    if todo:  # started before anything is written: a scheduler that cannot be reached leaves no trace
        from voxpipe.executors import make_executor

        runner = make_executor(executor, make_recipe(validated, output_dir, device, workers, retries), workers, timeout, pipeline)
    write_manifest(None, force_write=True)
    if runner is not None:
        try:
            runner.run(todo, on_outcome, lambda: state["fatal"] is not None)
        finally:
            runner.close()
    not_run = total - len(outcomes)
    header["not_run"] = not_run
    write_manifest(_now() if not state["fatal"] else None, force_write=True)
    summary = RunSummary(output_dir, ordered(), discovery.skipped, fatal=state["fatal"], not_run=not_run)
    if report and not state["fatal"]:
        summary.report = _write_report(output_dir)
    return summary


def _write_report(output_dir: Path) -> Path | None:
    """The HTML report is a courtesy: if it cannot be written the run's results still stand."""
    from voxpipe.report import write_report

    try:
        return write_report(output_dir)
    except Exception as exc:  # noqa: BLE001 - say so, but never fail a finished run over it
        from voxpipe.errors import one_line

        print(f"warning: report.html not written: {one_line(exc)}", file=sys.stderr)
        return None


def make_recipe(validated: ValidatedConfig, output_dir: Path, device: str, workers: int, retries: int) -> RunRecipe:
    """What workers need to rebuild this pipeline: the resolved config as data, not objects."""
    from voxpipe.fork_server import threads_per_worker

    config = validated.resolved()
    config.pop("training", None)
    config["device"] = device
    env = {k: v for k, v in os.environ.items() if k.startswith("VOXPIPE_")}
    env[_ID_KEY_ENV] = str(_key_path())
    text = None
    try:
        text = Path(validated.source).read_text(encoding="utf-8")  # a worker validates what the user wrote
    except (OSError, UnicodeDecodeError):  # a config given as a dict: its resolved form is all there is
        pass
    return RunRecipe(
        config=config,
        source=Path(validated.source).name,
        config_dir=str(validated.config_dir),
        config_hash=validated.hash,
        device=device,
        output_dir=str(Path(output_dir).resolve()),
        threads=threads_per_worker(workers or 1),
        retries=retries,
        env=env,
        sys_path=tuple(sys.path),
        config_text=text,
        overrides=tuple(validated.overrides),
    )


_ID_KEY_ENV = "VOXPIPE_ID_KEY_FILE"


def _key_path() -> Path:
    from voxpipe.cases import _key_file

    return _key_file()


class RunLock:
    """An exclusive lock on ``OUTDIR/.voxpipe/run.lock`` for the length of a run.

    The kernel drops it when the process dies, even by SIGKILL, so a stale lock never
    blocks the rerun that resumes a killed run.
    """

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / STAGING / LOCK
        self.handle = None

    def __enter__(self) -> RunLock:
        import fcntl

        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            self.handle = os.fdopen(os.open(self.path, flags, file_mode()), "a+")
        except OSError as exc:
            raise UsageError(
                f"cannot open the run lock in {self.path.parent} ({exc.strerror}); remove a link or file planted there"
            ) from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise UsageError(
                f"output folder {self.path.parent.parent} is in use by another voxpipe run; wait for it to finish or choose another -o"
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        shutil.rmtree(self.path.parent, ignore_errors=True)


def clear_stale_staging(output_dir: Path) -> None:
    """Remove what a killed run left half-written: staging (VoxPipe's own folder) and atomic writes' temporary folders.

    Beside the case folders only the exact shape :func:`voxpipe.atomic.atomic_path` makes is
    removed (``.manifest.json.XXXXXXXX.tmp/manifest.json``); a user's own dot files stay.
    """
    for entry in (Path(output_dir) / STAGING).iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    clear_stale_temps(output_dir)


def _check_previous_config(output_dir: Path, validated: ValidatedConfig, ids: list[str], force: bool) -> None:
    """An output folder holding another config's results is not silently mixed with this one's."""
    if force or not output_dir.is_dir():
        return
    previous = None
    try:
        previous = json.loads((output_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        pass
    other_hash = None
    if isinstance(previous, dict) and previous.get("config_hash") not in (None, validated.hash):
        other_hash = previous.get("config_hash")
    else:
        for cid in ids:
            try:
                record = json.loads((output_dir / cid / CASE_RECORD).read_text())
            except (OSError, ValueError):
                continue
            if record.get("config_hash") not in (None, validated.hash):
                other_hash = record.get("config_hash")
                break
    if other_hash:
        name = previous.get("pipeline") if isinstance(previous, dict) else None
        what = f"pipeline `{name}`, " if name else ""
        raise UsageError(
            f"output folder {output_dir} holds results of a different config or plugin code ({what}config hash "
            f"{str(other_hash)[:12]}); rerun with --force to replace them, or choose another -o"
        )


def _is_complete(case_dir: Path, config_hash: str) -> bool:
    try:
        record = json.loads((case_dir / CASE_RECORD).read_text())
    except (OSError, ValueError):
        return False
    if record.get("status") != "ok" or record.get("config_hash") != config_hash:
        return False
    return all((case_dir / name).is_file() for name in record.get("outputs", []))


def _manifest_header(validated: ValidatedConfig, registry: Registry, device: str, started: str, skipped) -> dict:
    used = {stage.spec.distribution: stage.spec.version for stage in validated.stages}
    return {
        "manifest_version": 1,
        "voxpipe_version": __version__,
        "pipeline": validated.config.name,
        "config_file": Path(validated.source).name,
        "config_hash": validated.hash,
        "config": validated.resolved(),
        "overrides": validated.overrides,
        "device": device,
        "started": started,
        "plugins": {"used": used, "loaded": registry.versions()},
        "environment": _environment(),
        "discovery": {"skipped_files": dict(skipped)},  # reason -> count; never names
    }


def _write_manifest(output_dir: Path, header: dict, outcomes: list[CaseOutcome], finished: str | None) -> None:
    manifest = dict(header)
    manifest["finished"] = finished
    manifest["summary"] = {
        "cases": len(outcomes),
        "ok": sum(o.status == "ok" for o in outcomes),
        "failed": sum(o.status == "failed" for o in outcomes),
        "skipped": sum(o.status == "skipped" for o in outcomes),
    }
    manifest["cases"] = [o.as_dict() for o in outcomes]
    write_json(output_dir / MANIFEST, manifest)


def _write_source_map(path: Path, ids: list[str], sources: list[CaseSource], url: str | None = None) -> None:
    """Case id -> input path, written only where the user asks (it may contain names).

    For a URL input: the URL and the series' identity (a DICOM series: its SeriesInstanceUID), since
    the folder it was fetched to is removed when the run ends.
    """
    from voxpipe.private_files import write_link_file

    def where(source: CaseSource) -> str:
        return f"{url} {source.identity.removeprefix('dicom:')}" if url else str(source.path)

    lines = ["case_id\tsource"] + [f"{cid}\t{where(source)}" for cid, source in zip(ids, sources)]
    write_link_file(path, "\n".join(lines) + "\n")


def _environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": _platform.python_version()}
    for name, dist in (
        ("torch", "torch"),
        ("monai", "monai"),
        ("numpy", "numpy"),
        ("nibabel", "nibabel"),
        ("pydicom", "pydicom"),
        ("skimage", "scikit-image"),
    ):
        try:
            versions[name] = version(dist)  # metadata only: the runner process need not import them
        except PackageNotFoundError:
            pass
    return versions

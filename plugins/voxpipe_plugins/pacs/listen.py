"""``voxpipe listen``: receive DICOM by C-STORE and run a pipeline on every series once it stops arriving.

The output folder holds ``spool/`` (private: received instances, state) and ``results/``, which is
exactly what ``voxpipe run -o results/`` writes (case folders, ``manifest.json``, ``report.html``):
each batch of idle series goes through :func:`voxpipe.runner.run`, the code path of ``voxpipe run``
(workers, resume, manifest, report). The runner writes a manifest of its own batch; the listener
then rewrites it with every case it has run so far, so ``results/manifest.json`` and the report
cover the whole session. SIGINT/SIGTERM stop the listener: a running batch is abandoned (its
staging is cleared by the next run; the batch is run again after a restart, finished cases
skipped).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from pathlib import Path

import click

from voxpipe.cli_conventions import force_option, output_option
from voxpipe.defaults import DEFAULT_WORKERS
from voxpipe.errors import UsageError

RESULTS = "results"
POLL_S = 0.2


class ListenStopped(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM/SIGINT while a batch runs; an interrupt, so no stage swallows it."""


def _ae_title(ctx, param, value: str | tuple[str, ...]):
    values = (value,) if isinstance(value, str) else value
    for title in values:
        if not (1 <= len(title) <= 16) or not title.isascii() or "\\" in title or not title.strip() or not title.isprintable():
            raise click.BadParameter("an AE title is 1-16 printable ASCII characters, no backslash", ctx=ctx, param=param)
    return value


@click.command("listen")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--port", type=click.IntRange(0, 65535), required=True, help="TCP port to accept associations on (0: any free port, printed)."
)
@click.option(
    "--ae-title", default="VOXPIPE", show_default=True, callback=_ae_title, help="This listener's AE title; calls to another are refused."
)
@output_option("Folder for the spool (spool/) and the results (results/: case folders, manifest.json, report.html).", required=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback needs --allow-calling-ae.")
@click.option(
    "--allow-calling-ae",
    "allowed",
    multiple=True,
    callback=_ae_title,
    metavar="AET",
    help="Accept associations only from these calling AE titles (repeatable). Without it, any caller that can reach --host.",
)
@click.option(
    "--idle",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Run a series once no instance of it has arrived for this long.",
)
@click.option(
    "-w", "--workers", type=click.IntRange(min=0), default=DEFAULT_WORKERS, show_default=True, help="Worker processes, as for voxpipe run."
)
@click.option("--set", "overrides", multiple=True, metavar="STAGE.FIELD=VALUE", help="Override a config value, as for voxpipe run.")
@click.option("--device", metavar="auto|cpu|cuda[:N]", help="Override the config's device.")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help="Stop a case after this long, as for voxpipe run."
)
@click.option("--no-report", is_flag=True, help="Do not write results/report.html.")
@force_option("Run CONFIG into an OUTPUT whose results/ come from another config (without it that is refused before listening).")
@click.option(
    "--exit-after", type=click.IntRange(min=1), hidden=True, help="Stop after this many series were processed (tests, benchmarks)."
)
@click.pass_obj
def listen_command(
    settings,
    config: Path,
    port: int,
    ae_title: str,
    output: Path,
    host: str = "127.0.0.1",
    allowed: tuple[str, ...] = (),
    idle: float = 10.0,
    workers: int = DEFAULT_WORKERS,
    overrides: tuple[str, ...] = (),
    device: str | None = None,
    timeout: float | None = None,
    no_report: bool = False,
    force: bool = False,
    exit_after: int | None = None,
) -> int:
    """Receive DICOM (C-STORE) and run CONFIG on each series once it has been idle for --idle seconds.

    Instances are spooled privately under OUTPUT/spool/ (each written whole; a repeated instance is
    stored once); results go to OUTPUT/results/ as with voxpipe run. A restart processes what was
    spooled before it, and never a series twice. Stop it with Ctrl-C or SIGTERM.

    \b
    Example:
      voxpipe listen configs/ct-body-mask.yaml --port 11112 --ae-title VOXPIPE -o listen-out/ --allow-calling-ae ORTHANC
    """
    from voxpipe.atomic import folder_lock, make_dirs
    from voxpipe.cases import id_key
    from voxpipe.config import load_config
    from voxpipe_plugins.pacs.scp import check_exposure, spool_folder
    from voxpipe_plugins.pacs.spool import Spool

    check_exposure(host, allowed)
    registry = settings.registry()
    validated = load_config(config, registry, overrides=overrides, device=device)
    output = Path(output)
    check_results(output / RESULTS, validated, force)
    with contextlib.ExitStack() as held:
        try:
            folder = make_dirs(spool_folder(output))
            held.enter_context(folder_lock(folder, "voxpipe listen"))  # one listener per spool; released even on SIGKILL
            spool = Spool(folder, id_key())
        except (OSError, ValueError) as exc:
            raise UsageError(f"-o {output}: cannot use it for the spool ({getattr(exc, 'strerror', None) or exc})") from None
        return _serve(
            validated, registry, spool, output, ae_title, host, port, allowed, idle, workers, timeout, no_report, force, exit_after
        )


def _serve(validated, registry, spool, output, ae_title, host, port, allowed, idle, workers, timeout, no_report, force, exit_after) -> int:
    """Listen until stopped, with the spool held; returns the exit code."""
    from voxpipe_plugins.pacs.scp import StoreSCP

    runner = BatchRunner(validated, registry, spool, output / RESULTS, workers=workers, timeout=timeout, report=not no_report, force=force)
    scp = StoreSCP(spool, ae_title, host, port, allowed)
    stop = threading.Event()
    busy = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()
        if busy.is_set():
            raise ListenStopped()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        scp.start()
        click.echo(f"listening on {host}:{scp.port} as {ae_title}; results in {output / RESULTS}", err=True)
        try:
            loop(spool, runner, idle, stop, busy, exit_after)
        except ListenStopped:
            click.echo("stopping: the running batch was abandoned; it runs again after a restart", err=True)
    finally:
        scp.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    counts = spool.counts
    click.echo(
        f"stopped: {runner.series_done} series processed ({runner.cases_ok} cases ok, {runner.cases_failed} failed, "
        f"{runner.passed_over} series with nothing the loader reads); "
        f"{counts['stored']} instances received, {counts['duplicate']} duplicates, {counts['late']} after their series ran, "
        f"{scp.errors} refused; {spool.pending()} series left in the spool",
        err=True,
    )
    return 1 if runner.cases_failed else 0


def check_results(results: Path, validated, force: bool) -> None:
    """Refuse, before listening, a results folder that holds another config's cases (the runner would refuse every batch)."""
    try:
        previous = json.loads((results / "manifest.json").read_text())
    except (OSError, ValueError):
        return
    other = previous.get("config_hash") if isinstance(previous, dict) else None
    if other and other != validated.hash and not force:
        raise UsageError(
            f"-o {results.parent}: results/ holds cases of a different config or plugin code (config hash {str(other)[:12]}); "
            "add --force to run this config into it, or choose another -o"
        )


def loop(spool, runner: BatchRunner, idle: float, stop: threading.Event, busy: threading.Event, exit_after: int | None) -> None:
    """Hand idle series to the runner until stopped; a batch a crash left behind goes first."""
    leftover = spool.leftover_batch()
    if leftover is not None:
        _run(runner, leftover, busy)
    while not stop.is_set():
        if exit_after is not None and runner.series_done >= exit_after:
            return
        batch = spool.take_ready(idle)
        if batch is None:
            stop.wait(POLL_S)
            continue
        _run(runner, batch, busy)


def _run(runner: BatchRunner, batch: Path, busy: threading.Event) -> None:
    runner.run_batch(batch, busy)


class BatchRunner:
    """Runs one batch folder through the normal runner and keeps the session's manifest whole."""

    def __init__(
        self, validated, registry, spool, results: Path, workers: int, timeout: float | None, report: bool, force: bool = False
    ) -> None:
        self.validated, self.registry, self.spool, self.results = validated, registry, spool, results
        self.workers, self.timeout, self.report, self.force = workers, timeout, report, force
        self.series_done = self.cases_ok = self.cases_failed = self.passed_over = 0

    def run_batch(self, batch: Path, busy: threading.Event | None = None) -> None:
        """Run ``batch``; only the runner's part may be interrupted (``busy``), never the state's bookkeeping."""
        from voxpipe.errors import one_line
        from voxpipe.pipeline import discover
        from voxpipe.progress import Progress
        from voxpipe.runner import run

        series = len([p for p in batch.iterdir() if p.is_dir()])
        started = time.monotonic()
        progress = Progress()
        cases: list[dict] = []
        note = None
        if not discover(self.validated, batch).cases:  # what was received is nothing the loader reads (SR, PDF, ...)
            note = f"no case the loader `{self.validated.stages[0].spec.id}` can read in them"
        else:
            if busy is not None:
                busy.set()
            try:
                summary = run(
                    self.validated,
                    self.registry,
                    batch,
                    self.results,
                    force=self.force,
                    on_case=progress.case,
                    workers=self.workers,
                    timeout=self.timeout,
                    report=False,
                    on_start=progress.start,
                )
            except Exception as exc:  # noqa: BLE001 - the output folder, not the data: stop, keep the batch for a restart
                from voxpipe.errors import VoxpipeError

                text = str(exc) if isinstance(exc, VoxpipeError) else f"internal error: {one_line(exc)}"
                raise UsageError(f"{text.replace(str(batch), 'the received series')} (the series stay in the spool)") from None
            finally:
                if busy is not None:
                    busy.clear()
            if summary.fatal:  # a full disk: the finished cases are kept, the batch runs again after a restart
                raise UsageError(f"{summary.fatal} (the series stay in the spool)")
            cases = [outcome.as_dict() for outcome in summary.outcomes]
        self.spool.finish_batch(batch, cases)
        self._write_session_manifest()
        ok = sum(c["status"] in ("ok", "skipped") for c in cases)
        failed = len(cases) - ok
        self.series_done += series
        self.cases_ok += ok
        self.cases_failed += failed
        self.passed_over += series if note else 0
        extra = f"; {note}" if note else ""
        click.echo(f"{series} series: {ok} cases ok, {failed} failed in {time.monotonic() - started:.1f}s{extra}", err=True)

    def _write_session_manifest(self) -> None:
        """results/manifest.json with every case of the session (the runner's covers its batch), then the report."""
        from voxpipe.atomic import write_json

        path = self.results / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        cases = self.spool.state.cases
        manifest["cases"] = cases
        manifest["summary"] = {
            "cases": len(cases),
            "ok": sum(c.get("status") == "ok" for c in cases),
            "failed": sum(c.get("status") == "failed" for c in cases),
            "skipped": sum(c.get("status") == "skipped" for c in cases),
        }
        manifest["listen"] = {"series_processed": len(self.spool.state.processed)}
        write_json(path, manifest)
        if self.report:
            from voxpipe.errors import one_line
            from voxpipe.report import write_report

            try:
                write_report(self.results)
            except Exception as exc:  # noqa: BLE001 - the report is a courtesy; the results stand
                click.echo(f"warning: report.html not written: {one_line(exc)}", err=True)

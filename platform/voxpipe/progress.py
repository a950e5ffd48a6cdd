"""Progress of a batch on stderr: a live bar with ETA on a terminal, one line per case in logs.

Written here rather than taken from rich or tqdm: it is forty lines, adds no dependency,
and its log mode (one greppable line per case, with the ETA) is what overnight runs
redirected to a file need. Lines never name input files: only pseudonymous case ids.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


class Progress:
    """Counts cases as they finish and estimates the time left from the ones actually run."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.to_run = 0
        self.run_done = 0
        self.started = time.monotonic()
        self.first_done: float | None = None  # throughput is timed from here: worker start-up is not per-case cost
        self._bar_shown = False

    def start(self, to_run: int, complete: int) -> None:
        self.to_run, self.started = to_run, time.monotonic()
        if complete:
            self._line(f"{complete} cases already complete for this config (skipped); {to_run} to run")

    def eta(self) -> float | None:
        """Seconds left, from the rate at which cases have been finishing (after the first)."""
        if self.run_done < 2 or self.first_done is None:
            return None
        per_case = (time.monotonic() - self.first_done) / (self.run_done - 1)
        return per_case * max(0, self.to_run - self.run_done)

    def case(self, position: int, total: int, outcome) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if outcome.status != "skipped":
            self.run_done += 1
            if self.first_done is None:
                self.first_done = time.monotonic()
        eta = self.eta()
        eta_text = f"  ETA {format_duration(eta)}" if eta is not None and self.run_done < self.to_run else ""
        if self.live:
            if outcome.status == "failed":
                self._line(f"{outcome.case_id}  failed  {outcome.error}")
            for warning in outcome.warnings:
                self._line(f"    {outcome.case_id} warning: {warning}")
            self._bar(position, total, eta_text)
            return
        detail = f"  {outcome.error}" if outcome.error else ""
        status = "done (complete, skipped)" if outcome.status == "skipped" else outcome.status
        timing = "" if outcome.status == "skipped" else f"  {outcome.seconds:.2f}s"
        self._line(f"[{position}/{total}] {outcome.case_id}  {status}{timing}{eta_text}{detail}")
        for warning in outcome.warnings:
            self._line(f"    warning: {warning}")

    def _bar(self, position: int, total: int, eta_text: str) -> None:
        width = max(10, min(40, shutil.get_terminal_size((80, 20)).columns - 60))
        filled = int(width * position / max(1, total))
        counts = f"ok {self.counts['ok']}  failed {self.counts['failed']}  skipped {self.counts['skipped']}"
        self.stream.write(f"\r\x1b[2K[{'#' * filled}{'.' * (width - filled)}] {position}/{total}  {counts}{eta_text}")
        self.stream.flush()
        self._bar_shown = True

    def _line(self, text: str) -> None:
        if self._bar_shown:
            self.stream.write("\r\x1b[2K")
            self._bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, summary) -> None:
        """The closing table: counts per status, then each failure with its one-line reason."""
        if self._bar_shown:
            self.stream.write("\n")
            self._bar_shown = False
        elapsed = time.monotonic() - self.started
        rows = [("ok", summary.count("ok")), ("failed", summary.count("failed")), ("skipped", summary.count("skipped"))]
        if summary.not_run:
            rows.append(("not run", summary.not_run))
        lines = ["", f"{'status':<9}{'cases':>7}", f"{'-' * 9}{'-' * 7}"]
        lines += [f"{name:<9}{count:>7}" for name, count in rows]
        lines.append(f"wall time {format_duration(elapsed)}")
        failures = [o for o in summary.outcomes if o.status == "failed"]
        if failures:
            lines.append("failed cases:")
            lines += [f"  {o.case_id}  {o.error}" for o in failures]
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


class ItemProgress:
    """Count, rate and ETA of a command's items (series, files): one live line on a terminal,
    a plain line at most every ``every`` seconds in logs, and always a last line. Lines name
    no input, only counts.
    """

    def __init__(self, noun: str, stream: TextIO | None = None, live: bool | None = None, every: float = 10.0) -> None:
        self.noun = noun
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.every = every
        self.total = 0
        self.done = 0
        self.started = self.last_line = time.monotonic()

    def start(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = self.last_line = time.monotonic()

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.live:
            self.stream.write("\r\x1b[2K" + self.text(now))
            self.stream.flush()
        elif now - self.last_line >= self.every and self.done < self.total:
            self._line(self.text(now))
            self.last_line = now

    def close(self) -> None:
        if self.total:
            if self.live:
                self.stream.write("\r\x1b[2K")
            self._line(self.text(time.monotonic()))

    def text(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = self.total - self.done
        eta = f"  ETA {format_duration(left / rate)}" if rate > 0 and left > 0 else ""
        return f"{self.noun}: {self.done}/{self.total}  {rate:.1f}/s  {format_duration(elapsed)}{eta}"

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def counted(items: Iterable[T], on_done: Callable[[], None] | None) -> Iterator[T]:
    """Yield ``items``, calling ``on_done`` after the loop body has finished with each (``continue`` included)."""
    for item in items:
        yield item
        if on_done is not None:
            on_done()


def epochs_eta(history: list[dict], epochs: int) -> str:
    """``"  ETA 3m20s"`` from the mean ``epoch_seconds`` of the epochs run so far, for training logs."""
    seconds = [e["epoch_seconds"] for e in history if e.get("epoch_seconds") is not None]
    done = history[-1].get("epoch", len(history)) if history else 0
    if not seconds or done >= epochs:
        return ""
    return f"  ETA {format_duration(sum(seconds) / len(seconds) * (epochs - done))}"

"""The listener's private spool: received instances, grouped by series, each written whole or not at all.

Layout under the spool folder (0700, files 0600), with no UID or name in any path (keyed
hashes, as case ids are)::

    incoming/<series key>/<instance key>.dcm   series still receiving
    batch-<n>/<series key>/...                 series handed to a run (moved, one rename each)
    state.json                                 processed series keys, and the batch in progress

Why a state file: a series must be processed once, across crashes. A series moves from
``incoming`` to a batch folder by a rename, the batch is written to ``state.json`` (atomically)
before its run starts, and marked done (and its folder removed) after; a restart reruns a batch
left behind (the runner's resume skips the cases it had finished) and never one marked done.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from voxpipe.atomic import atomic_path, make_dirs, write_json

INCOMING, STATE = "incoming", "state.json"
KEY_HEX = 24


@dataclass
class Stored:
    """What became of one received instance."""

    status: str  # "stored", "duplicate", "late" (its series was already processed)
    series: str


@dataclass
class SpoolState:
    processed: dict[str, dict] = field(default_factory=dict)  # series key -> {"batch": n, "at": time}
    running: dict | None = None  # {"batch": n, "series": [keys]}
    next_batch: int = 1
    cases: list[dict] = field(default_factory=list)  # manifest entries of every case run so far


class Spool:
    """Thread-safe: C-STORE handlers call :meth:`store` from association threads, the loop takes ready series."""

    def __init__(self, folder: Path, key: bytes) -> None:
        self.folder = make_dirs(Path(folder))
        os.chmod(self.folder, 0o700)
        make_dirs(self.folder / INCOMING)
        self._key = key
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}  # series key -> monotonic time of its last instance
        self._writing: dict[str, int] = {}  # series key -> instances being written now
        self.counts = {"stored": 0, "duplicate": 0, "late": 0}
        self.state = self._load_state()
        now = time.monotonic()
        for entry in sorted(os.scandir(self.folder / INCOMING), key=lambda e: e.name):
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name in self.state.processed:  # a late instance that arrived before a crash
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                self._seen[entry.name] = now  # spooled before a restart: processed after --idle, like new ones

    # -- keys ---------------------------------------------------------------------------------------
    def key_of(self, uid: str) -> str:
        return hmac.new(self._key, uid.encode(), hashlib.sha256).hexdigest()[:KEY_HEX]

    # -- receiving ----------------------------------------------------------------------------------
    def store(self, series_uid: str, sop_uid: str, encoded: bytes) -> Stored:
        """Write one instance (its Part 10 bytes) atomically; a SOP Instance UID already spooled is stored once."""
        series = self.key_of(series_uid)
        name = self.key_of(sop_uid) + ".dcm"
        with self._lock:
            if series in self.state.processed or self._in_running(series):
                self.counts["late"] += 1
                return Stored("late", series)
            folder = self.folder / INCOMING / series
            if (folder / name).exists():
                self._seen[series] = time.monotonic()
                self.counts["duplicate"] += 1
                return Stored("duplicate", series)
            make_dirs(folder)
            self._writing[series] = self._writing.get(series, 0) + 1  # take_ready leaves the series alone meanwhile
        try:
            with atomic_path(folder / name, mode=0o600) as tmp:  # written outside the lock: associations write in parallel
                tmp.write_bytes(encoded)
        finally:
            with self._lock:
                self._writing[series] -= 1
                if not self._writing[series]:
                    del self._writing[series]
                self._seen[series] = time.monotonic()
        with self._lock:
            self.counts["stored"] += 1
        return Stored("stored", series)

    def _in_running(self, series: str) -> bool:
        running = self.state.running
        return bool(running) and series in running.get("series", [])

    # -- handing series to runs ---------------------------------------------------------------------
    def pending(self) -> int:
        with self._lock:
            return len(self._seen)

    def leftover_batch(self) -> Path | None:
        """The batch a crash interrupted (its series are run again; the runner skips finished cases)."""
        running = self.state.running
        if running and (self.folder / f"batch-{running['batch']}").is_dir():
            return self.folder / f"batch-{running['batch']}"
        return None

    def take_ready(self, idle_s: float, now: float | None = None) -> Path | None:
        """Move every series idle for ``idle_s`` into a new batch folder, recorded in the state first; None if none."""
        now = time.monotonic() if now is None else now
        with self._lock:
            ready = sorted(series for series, seen in self._seen.items() if now - seen >= idle_s and series not in self._writing)
            if not ready:
                return None
            number = self.state.next_batch
            batch = self.folder / f"batch-{number}"
            make_dirs(batch)
            for series in ready:
                source = self.folder / INCOMING / series
                if source.is_dir():
                    os.replace(source, batch / series)
                del self._seen[series]
            self.state.running = {"batch": number, "series": ready}
            self.state.next_batch = number + 1
            self._save_state()
            return batch

    def finish_batch(self, batch: Path, cases: list[dict]) -> None:
        """Mark the running batch's series processed, keep its cases for the manifest, remove its files."""
        with self._lock:
            running = self.state.running or {"batch": None, "series": []}
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for series in running["series"]:
                self.state.processed[series] = {"batch": running["batch"], "at": at}
            known = {entry["case_id"]: i for i, entry in enumerate(self.state.cases)}
            for entry in cases:
                if entry.get("case_id") in known:
                    self.state.cases[known[entry["case_id"]]] = entry
                else:
                    self.state.cases.append(entry)
            self.state.running = None
            self._save_state()
        shutil.rmtree(batch, ignore_errors=True)

    # -- state --------------------------------------------------------------------------------------
    def _load_state(self) -> SpoolState:
        import json

        path = self.folder / STATE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return SpoolState()
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"spool state {path} is unreadable ({type(exc).__name__}); move the spool folder away to start afresh"
            ) from None
        return SpoolState(
            processed=dict(data.get("processed", {})),
            running=data.get("running"),
            next_batch=int(data.get("next_batch", 1)),
            cases=list(data.get("cases", [])),
        )

    def _save_state(self) -> None:
        write_json(
            self.folder / STATE,
            {
                "processed": self.state.processed,
                "running": self.state.running,
                "next_batch": self.state.next_batch,
                "cases": self.state.cases,
            },
        )

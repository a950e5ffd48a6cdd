"""``voxpipe listen`` as a real process, with a real Orthanc sending to it (``/modalities/{name}/store``):
each series processed once (also when sent twice, and across a crash and restart), SIGTERM stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.orthanc_server import free_port, orthanc  # noqa: F401  (the session fixture)
from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series

CONFIG = """version: 1
name: listen-test
device: cpu
stages:
  - use: load.dicom
  - use: segment.threshold
    with:
      ranges: [{name: body, min: -500}]
  - use: write.nifti
    with: {keys: [label]}
"""
WAIT_S = 120  # generous: a shared 2-core machine; never a timing assertion


class Listener:
    """``voxpipe listen`` in a child process; its stderr collected by a thread."""

    def __init__(self, config: Path, out: Path, port: int, *extra: str, allow: str = "ORTHANC") -> None:
        command = [sys.executable, "-m", "voxpipe", "listen", str(config), "--port", str(port), "-o", str(out)]
        command += ["--ae-title", "VOXPIPE", "--allow-calling-ae", allow, "--workers", "0", "--no-report", *extra]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=dict(os.environ))
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for(lambda: any(line.startswith("listening on") for line in self.lines), "the listener to start")

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if condition():
                return
            assert self.process.poll() is None or condition(), (
                f"listener exited ({self.process.returncode}) waiting for {what}: {self.lines}"
            )
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {self.lines}")

    def stop(self, sig=signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=5)
        return code


def _study(folder: Path, series: int = 2) -> tuple[str, list[str]]:
    study = SeriesSpec().study_uid
    uids = []
    for i in range(series):
        spec = SeriesSpec(study_uid=study, seed=i)
        write_series(folder / f"s{i}", ct_like_volume((5, 24, 24), seed=i), spec)
        uids.append(spec.series_uid)
    return study, uids


def _send_study(server, modality: str) -> None:
    for study in server.get("/studies"):
        answer = server.post(f"/modalities/{modality}/store", {"Resources": [study], "Synchronous": True})
        assert answer["FailedInstancesCount"] == 0


def _manifest(out: Path) -> dict:
    try:
        return json.loads((out / "results" / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def test_listen_runs_each_series_sent_by_orthanc_once_across_a_crash_and_stops_on_sigterm(orthanc, tmp_path):  # noqa: F811
    orthanc.delete_all()
    _, uids = _study(tmp_path / "in")
    files = sorted((tmp_path / "in").rglob("*.dcm"))
    orthanc.upload(files)
    config = tmp_path / "listen.yaml"
    config.write_text(CONFIG)
    port = free_port()
    orthanc.add_modality("voxpipe-listen", "VOXPIPE", port=port)
    out = tmp_path / "out"

    crashed = Listener(config, out, port, "--idle", "600")  # holds what it receives
    _send_study(orthanc, "voxpipe-listen")  # synchronous: every instance acknowledged, so spooled
    _send_study(orthanc, "voxpipe-listen")  # the same instances again: stored once
    assert len(list((out / "spool" / "incoming").rglob("*.dcm"))) == len(files)
    crashed.stop(signal.SIGKILL)  # a crash: no clean-up at all

    listener = Listener(config, out, port, "--idle", "0.5")  # the restart runs what was spooled
    listener.wait_for(lambda: _manifest(out).get("summary", {}).get("ok") == 2, "both series to be processed")
    _send_study(orthanc, "voxpipe-listen")  # after they ran: not processed again
    time.sleep(1.5)  # three times --idle: a second run would have started
    assert listener.stop() == 0  # SIGTERM: a clean stop
    manifest = _manifest(out)
    assert [c["status"] for c in manifest["cases"]] == ["ok", "ok"]
    assert manifest["listen"] == {"series_processed": 2}
    assert sum(line.startswith("[") and " ok " in line + " " for line in listener.lines) == 2, listener.lines
    assert any("0 instances received" in line and f"{len(files)} after their series ran" in line for line in listener.lines), listener.lines
    assert len(sorted((out / "results").glob("case-*/label.nii.gz"))) == 2
    spool = out / "spool"
    assert not list((spool / "incoming").iterdir()) and not list(spool.glob("batch-*"))
    names = "\n".join(str(p.relative_to(out)) for p in out.rglob("*")) + "\n".join(listener.lines + crashed.lines)
    assert not any(uid in names for uid in uids)  # no UID in any path or log line


@pytest.mark.slow
def test_sigterm_during_a_run_abandons_the_batch_cleanly_and_the_restart_runs_it(tmp_path):
    """No PACS needed: pynetdicom's storescu sends as a modality would."""
    for i in range(2):
        write_series(tmp_path / "in" / f"s{i}", ct_like_volume((60, 128, 128), seed=i), SeriesSpec(seed=i))
    config = tmp_path / "listen.yaml"
    config.write_text(CONFIG)
    port = free_port()
    out = tmp_path / "out"
    listener = Listener(config, out, port, "--idle", "0.3", allow="STORESCU")
    sent = subprocess.run(
        [sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(port), str(tmp_path / "in"), "-r", "-aec", "VOXPIPE", "-q"]
    )
    assert sent.returncode == 0
    state = out / "spool" / "state.json"
    listener.wait_for(lambda: state.exists() and json.loads(state.read_text()).get("running"), "a batch to start")
    assert listener.stop() == 0  # the first batch imports torch for seconds: the signal lands inside the run
    assert any("abandoned" in line for line in listener.lines), listener.lines
    running = json.loads(state.read_text())["running"]
    assert running and (out / "spool" / f"batch-{running['batch']}").is_dir()  # kept whole for the restart
    assert not any((out / "results").glob("case-*")) or all((p / "case.json").exists() for p in (out / "results").glob("case-*"))
    restarted = Listener(config, out, port, "--idle", "0.3", "--exit-after", "2", allow="STORESCU")
    assert restarted.process.wait(timeout=WAIT_S) == 0, restarted.lines
    assert [c["status"] for c in _manifest(out)["cases"]] == ["ok", "ok"]
    assert json.loads(state.read_text())["running"] is None

"""Batch runs: isolated workers survive segfaults and hangs, transient I/O is retried, a
full disk stops the run cleanly, and a run killed with SIGKILL resumes without redoing or
corrupting anything.

The misbehaviour comes from a real plugin installed for the test (tests/crash_plugin.py),
discovered through the ``voxpipe`` entry-point group like any other.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import crash_plugin
from tests.conftest import REPO

NAMES = [f"c{i:02d}" for i in range(6)]


@pytest.fixture
def crashtest(tmp_path, monkeypatch):
    """The crash plugin on the import path of this process and of its children."""
    site = crash_plugin.install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])))
    return site


@pytest.fixture
def cases(tmp_path):
    return crash_plugin.write_cases(tmp_path / "input", NAMES)


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def case_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def assert_clean(out: Path) -> None:
    """Every case folder complete, no staging area, no temporary files."""
    for folder in case_dirs(out):
        record = json.loads((folder / "case.json").read_text())
        assert record["status"] == "ok"
        assert sorted(p.name for p in folder.iterdir()) == sorted(record["outputs"]), folder
    assert not (out / ".voxpipe").exists(), "staging area left behind"
    assert not list(out.rglob(".*")), "temporary files or folders left behind"


def test_segfault_costs_one_case_and_workers_share_the_cores(cli, crashtest, cases, tmp_path, write_config):
    config = write_config(crash_plugin.config("segfault", trigger="c03"))
    out = tmp_path / "out"
    result = cli("run", config, "-i", cases, "-o", out, "--workers", "2")
    assert result.exit_code == 1, result.stderr
    assert "6 cases: 5 ok, 1 failed, 0 skipped" in result.stderr
    failed = [c for c in manifest_of(out)["cases"] if c["status"] == "failed"]
    assert len(failed) == 1 and "crashed (signal SIGSEGV)" in failed[0]["error"]
    assert "failed cases:" in result.stderr and failed[0]["case_id"] in result.stderr.split("failed cases:")[1]
    assert_clean(out)
    cores = len(os.sched_getaffinity(0))
    for folder in case_dirs(out):
        act = next(h for h in json.loads((folder / "case.json").read_text())["history"] if h["op"] == "crashtest.act")
        assert act["torch_threads"] == max(1, cores // 2) and act["omp"] == str(max(1, cores // 2))


def test_timeout_stops_the_case_and_its_worker(cli, crashtest, cases, tmp_path, write_config):
    config = write_config(crash_plugin.config("sleep", trigger="c01", seconds=120))
    out = tmp_path / "out"
    result = cli("run", config, "-i", cases, "-o", out, "--workers", "2", "--timeout", "4")
    assert result.exit_code == 1, result.stderr
    failed = [c for c in manifest_of(out)["cases"] if c["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"].startswith("timed out after 4 s")
    assert manifest_of(out)["summary"]["ok"] == 5
    assert_clean(out)


def test_transient_io_errors_are_retried_and_others_are_not(cli, crashtest, cases, tmp_path, write_config):
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "out"
    result = cli("run", write_config(crash_plugin.config("eio_once", marker_dir=str(markers))), "-i", cases, "-o", out, "--workers", "1")
    assert result.exit_code == 0, result.stderr
    assert all(c["attempts"] == 2 for c in manifest_of(out)["cases"]), "each case failed once with EIO, then succeeded"
    out2 = tmp_path / "out2"
    result = cli(
        "run", write_config(crash_plugin.config("value_error", trigger="c00"), "v.yaml"), "-i", cases, "-o", out2, "--workers", "1"
    )
    bad = [c for c in manifest_of(out2)["cases"] if c["status"] == "failed"]
    assert result.exit_code == 1 and len(bad) == 1 and "attempts" not in bad[0] and "deliberate failure" in bad[0]["error"]


def test_full_disk_stops_the_run_and_loses_nothing(cli, crashtest, cases, tmp_path, write_config):
    markers = tmp_path / "markers"
    markers.mkdir()
    (markers / "disk-full").write_text("")
    config = write_config(crash_plugin.config("enospc", trigger="c02", marker_dir=str(markers)))
    out = tmp_path / "out"
    result = cli("run", config, "-i", cases, "-o", out, "--workers", "1")
    assert result.exit_code == 2, result.stderr
    assert (
        len(result.error_lines) == 1
        and "output disk is full" in result.error_lines[0]
        and "rerun the same command" in result.error_lines[0]
    )
    assert "Traceback" not in result.stderr
    manifest = manifest_of(out)
    assert manifest["summary"]["ok"] == 2 and manifest["not_run"] == 3 and manifest["finished"] is None
    assert len(case_dirs(out)) == 2
    assert_clean(out)
    before = {d.name: (d / "case.json").read_text() for d in case_dirs(out)}
    (markers / "disk-full").unlink()  # space freed: the same command finishes the rest
    again = cli("run", config, "-i", cases, "-o", out, "--workers", "1")
    assert again.exit_code == 0 and "6 cases: 4 ok, 0 failed, 2 skipped" in again.stderr, again.stderr
    assert {d: (out / d / "case.json").read_text() for d in before} == before, "complete cases were not redone"


def test_an_output_folder_in_use_is_refused(cli, cases, tmp_path):
    from voxpipe.runner import RunLock, prepare_output

    out = tmp_path / "out"
    prepare_output(out)
    with RunLock(out):
        result = cli("run", REPO / "configs" / "quickstart.yaml", "-i", cases, "-o", out)
    assert result.exit_code == 2 and "in use by another voxpipe run" in result.error_lines[0]


def test_sigkill_halfway_then_resume(crashtest, cases, tmp_path, write_config):
    """Kill -9 the whole run mid-way; the rerun finishes every case exactly once, nothing partial left."""
    names = [f"k{i:02d}" for i in range(8)]
    inputs = crash_plugin.write_cases(tmp_path / "kill-input", names)
    config = write_config(crash_plugin.config("none", seconds=0.6), "kill.yaml")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "voxpipe", "run", str(config), "-i", str(inputs), "-o", str(out), "--workers", "2"]
    proc = subprocess.Popen(command, cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and len(case_dirs(out)) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-500:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    time.sleep(2.0)  # orphaned workers, if any survived, would publish more cases now
    done = {d.name: (d / "case.json").read_text() for d in case_dirs(out)}
    assert 3 <= len(done) < len(names)
    assert {d.name for d in case_dirs(out)} == set(done), "workers died with the run"
    for name in done:  # whatever was published is complete
        record = json.loads(done[name])
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(record["outputs"])
    json.loads((out / "manifest.json").read_text())  # the killed run's manifest is still valid JSON
    half_written = (
        out / ".manifest.json.k9x2ab_q.tmp" / "manifest.json"
    )  # what a kill inside an atomic write leaves (mkdtemp: 8 characters)
    half_written.parent.mkdir()
    half_written.write_text('{"half": ')

    rerun = subprocess.run(command, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    manifest = manifest_of(out)
    assert manifest["summary"] == {"cases": 8, "ok": 8 - len(done), "failed": 0, "skipped": len(done)}
    assert {d: (out / d / "case.json").read_text() for d in done} == done, "no case was done twice"
    finished = [json.loads((d / "case.json").read_text())["finished"] for d in case_dirs(out)]
    assert len(case_dirs(out)) == 8 and len(set(finished)) == 8
    assert_clean(out)


def test_progress_lines_eta_and_summary_table():
    from voxpipe.progress import Progress
    from voxpipe.runner import RunSummary
    from voxpipe.worker import CaseOutcome

    stream = io.StringIO()
    progress = Progress(stream, live=False)
    progress.start(3, 1)
    outcomes = [
        CaseOutcome("case-aaaaaaaaaaaa", "skipped"),
        CaseOutcome("case-bbbbbbbbbbbb", "ok", 1.5),
        CaseOutcome("case-cccccccccccc", "failed", 0.5, "stage 2 (x.y): broke"),
        CaseOutcome("case-dddddddddddd", "ok", 1.0),
    ]
    for i, outcome in enumerate(outcomes, 1):
        progress.case(i, 4, outcome)
    progress.finish(RunSummary(Path("."), outcomes))
    text = stream.getvalue()
    assert "1 cases already complete" in text and "[2/4] case-bbbbbbbbbbbb  ok  1.50s\n" in text, "no ETA from one case"
    assert "[3/4] case-cccccccccccc  failed  0.50s  ETA 0s  stage 2" in text
    assert "[4/4] case-dddddddddddd  ok  1.00s\n" in text, "no ETA once everything ran"
    table = {line.split()[0]: line.split()[-1] for line in text.split("status")[1].splitlines()[2:5]}
    assert table == {"ok": "2", "failed": "1", "skipped": "1"}
    assert "failed cases:\n  case-cccccccccccc  stage 2 (x.y): broke" in text

    live = io.StringIO()
    bar = Progress(live, live=True)
    bar.start(2, 0)
    bar.case(1, 2, outcomes[2])
    assert "\r\x1b[2K[" in live.getvalue() and "failed 1" in live.getvalue() and "broke" in live.getvalue()


def test_one_gpu_per_worker_on_multi_gpu_hosts(monkeypatch):
    import torch

    from voxpipe.worker import gpu_for_worker

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [gpu_for_worker("cuda", i) for i in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert gpu_for_worker("cuda:3", 1) == "cuda:3" and gpu_for_worker("cpu", 2) == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert gpu_for_worker("cuda", 5) == "cuda"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2000 KiB tmpfs (the first sample case fits, the second does not) (needs root and a kernel that lets this container mount); skipped otherwise."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2000k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected-ENOSPC test covers the logic")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_really_full_disk(cli, sample_inputs, tiny_disk):
    """A real ENOSPC from a 2000 KiB file system: clean stop, then finish after the disk grows."""
    from tests.conftest import DEMO_CONFIG

    out = tiny_disk / "out"
    result = cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", out, "--workers", "0")  # in-process: same handling, faster
    assert result.exit_code == 2, result.stderr
    assert "output disk is full" in result.error_lines[-1] and "Traceback" not in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())  # still valid: written atomically or left as it was
    done = {d.name: (d / "case.json").read_text() for d in case_dirs(out)}
    assert 0 < len(done) < 4
    assert_clean(out)
    subprocess.run(["mount", "-o", "remount,size=20m", str(tiny_disk)], check=True)
    again = cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", out, "--workers", "0")
    assert again.exit_code == 0, again.stderr
    assert f"4 cases: {4 - len(done)} ok, 0 failed, {len(done)} skipped" in again.stderr
    assert {d: (out / d / "case.json").read_text() for d in done} == done
    assert manifest["config_hash"] == json.loads((out / "manifest.json").read_text())["config_hash"]
    assert_clean(out)


def _voxpipe_imports(module: str) -> set[str]:
    """Every ``voxpipe.*`` module a module imports, function-local imports included."""
    import ast

    tree = ast.parse((REPO / "platform" / "voxpipe" / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # from voxpipe import executors
    return {name.removeprefix("voxpipe.") for name in found if name.startswith("voxpipe.")}


def test_executor_imports_go_one_way():
    """executors -> dask_executor -> fork_server/worker, never back (not even inside a function)."""
    layers = ["executors", "dask_executor", "fork_server"]
    for i, module in enumerate(layers):
        imported = _voxpipe_imports(module)
        above = set(layers[: i + 1])
        assert not imported & above, f"voxpipe.{module} imports {sorted(imported & above)}: a circle between the executors"
    assert "worker" not in _voxpipe_imports("fork_server") and not {"executors", "dask_executor"} & _voxpipe_imports("worker")

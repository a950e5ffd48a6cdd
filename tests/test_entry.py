"""The installed command leaves quickly (no interpreter teardown), without losing anything a
normal exit gives: the exit status, every line of output, atexit handlers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

GAUSSIAN = """\
version: 1
name: entry-check
device: cpu
stages:
  - use: load.auto
  - use: denoise.gaussian
    with: {sigma_mm: 1.0}
  - use: write.nifti
"""


def voxpipe(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "voxpipe", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=300,
    )


def test_a_run_that_loaded_torch_keeps_its_status_output_and_files(sample_inputs, write_config, tmp_path):
    config = write_config(GAUSSIAN)
    (sample_inputs / "broken.nii.gz").write_bytes(b"not a nifti file")
    out = tmp_path / "out"
    result = voxpipe("run", config, "-i", sample_inputs, "-o", out, "--workers", "0", "--no-report")
    assert result.returncode == 1, result.stderr  # one case failed: the run's own status, not 0 from a quick exit
    assert "1 failed" in result.stderr and result.stderr.endswith("\n")  # the summary, flushed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished"] and manifest["summary"]["failed"] == 1
    assert not [p for p in out.rglob(".*")], "temporary files left behind"


def test_usage_errors_keep_their_status(tmp_path):
    result = voxpipe("info", tmp_path / "missing")
    assert result.returncode == 2 and result.stderr.strip().startswith("error:")


def test_a_command_that_never_loads_torch_keeps_all_of_its_output():
    result = voxpipe("--help")
    assert result.returncode == 0 and "torch" not in result.stderr
    commands = result.stdout.split("Core commands:")[1].split()
    assert {"run", "validate", "plugins", "train", "convert", "sample-data"} <= set(commands) and result.stdout.endswith("\n")


def test_atexit_handlers_run_before_the_quick_exit(tmp_path):
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, sys, torch; from pathlib import Path; from voxpipe import entry; "
        f"atexit.register(Path({str(marker)!r}).write_text, 'yes'); print('bye'); entry.leave(3)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and result.stdout == "bye\n" and marker.read_text() == "yes"


def test_the_fork_server_does_not_outlive_the_run():
    """Left alone it would finish importing torch, notice we exited, then spend ~1.2 s tearing it down."""
    code = (
        "import voxpipe.executors as e; e.start_forkserver(); from multiprocessing import forkserver; "
        "print(forkserver._forkserver._forkserver_pid, flush=True)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    pid = int(result.stdout.strip())
    assert result.returncode == 0 and not os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize(
    "args, kind",
    [
        (["run", "c.yaml", "-i", "in", "-o", "out"], "local"),  # the default: one local worker
        (["run", "c.yaml", "--workers", "2"], "local"),
        (["run", "c.yaml", "--workers=2"], "local"),
        (["run", "c.yaml", "-w2"], "local"),
        (["--debug", "run", "c.yaml", "-w", "3"], "local"),
        (["--block-plugin", "deep", "run", "c.yaml", "-w", "2"], "local"),  # a global option's value is not the command
        (["--allow-plugin=io_nifti", "run", "c.yaml"], "local"),
        (["run", "c.yaml", "--executor", "dask-local", "--workers", "0"], "dask-local"),  # Dask's workers fork from it
        (["run", "c.yaml", "--executor=dask-local"], "dask-local"),
        (["run", "c.yaml", "--workers", "0"], None),  # cases run in this process
        (["run", "c.yaml", "-w", "0"], None),
        (["run", "c.yaml", "--executor", "tcp://scheduler:8786"], None),  # the workers are elsewhere
        (["run", "c.yaml", "--executor=tcp://scheduler:8786"], None),
        (["run", "--help"], None),
        (["run", "c.yaml", "-h"], None),
        (["validate", "c.yaml"], None),
        (["train", "c.yaml"], None),
        ([], None),
        (["--version"], None),
        (["run", "c.yaml", "--workers", "many"], None),  # click will say what is wrong; no guess
    ],
)
def test_the_fork_server_starts_early_only_for_runs_that_fork_workers(args, kind):
    from voxpipe.entry import forked_workers

    assert forked_workers(args) == kind


def test_a_run_that_fails_before_its_first_case_leaves_no_fork_server(tmp_path):
    """The early start must not change what a bad command line gives: one line, the status, no process left."""
    config = tmp_path / "bad.yaml"
    config.write_text("version: 1\nname: bad\nstages:\n  - use: no.such.stage\n")
    before = _fork_servers()
    result = voxpipe("run", config, "-i", tmp_path, "-o", tmp_path / "out", "--workers", "2")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert _fork_servers() <= before  # none left behind, still importing


def _fork_servers() -> set[int]:
    """Pids of the processes running multiprocessing's fork server on this machine."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if b"multiprocessing.forkserver" in handle.read():
                        found.add(int(entry))
            except OSError:
                pass
    return found

"""One case's failure stays that case's: panics from native code, and what --debug prints about it.

Rust extensions (pylibjpeg-rle and friends) panic with ``pyo3_runtime.PanicException``,
a ``BaseException``: ``except Exception`` misses it. The crash plugin raises the same
kind of exception from a stage; every executor must fail only that case. Under
``--debug`` the traceback (also from a worker process) must not name the input file
unless ``--show-phi`` is given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import crash_plugin
from tests.test_batch import NAMES, cases, crashtest, manifest_of  # noqa: F401 - fixtures

MARKER = "Doe_Jane_PHIMARK"


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_panic_fails_one_case_and_the_batch_goes_on(cli, crashtest, cases, tmp_path, write_config, workers):  # noqa: F811
    config = write_config(crash_plugin.config("panic", trigger="c02"))
    out = tmp_path / "out"
    result = cli("run", config, "-i", cases, "-o", out, "--workers", workers)
    assert result.exit_code == 1, result.stderr
    assert f"{len(NAMES)} cases: {len(NAMES) - 1} ok, 1 failed, 0 skipped" in result.stderr
    failed = [c for c in manifest_of(out)["cases"] if c["status"] == "failed"]
    assert len(failed) == 1 and "index out of bounds" in failed[0]["error"]
    assert "Traceback" not in result.stderr


def _debug_run(tmp_path: Path, site: Path, *extra: str) -> subprocess.CompletedProcess:
    crash_plugin.write_cases(tmp_path / "in", [f"{MARKER}_c00", "c01"])
    config = tmp_path / "pipeline.yaml"
    config.write_text(crash_plugin.config("value_error", trigger="c00"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])))
    env.pop("VOXPIPE_SHOW_PHI", None)
    return subprocess.run(
        [sys.executable, "-m", "voxpipe", "--debug", *extra, "run", "pipeline.yaml", "-i", "in", "-o", "out", "--workers", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_debug_traceback_from_a_worker_names_no_input(tmp_path, crashtest):  # noqa: F811
    proc = _debug_run(tmp_path, crashtest)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr and "deliberate failure" in proc.stderr
    assert MARKER not in proc.stderr + proc.stdout
    assert "redacted" in proc.stderr
    # a short relative input (`-i in`) is redacted as a path, not as the word "in"
    assert "outputs in out" in proc.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    failed = [c for c in manifest["cases"] if c["status"] == "failed"]
    assert len(failed) == 1 and "deliberate failure on <input>" in failed[0]["error"]
    assert MARKER not in json.dumps(manifest)


def test_show_phi_shows_the_input_in_a_debug_traceback(tmp_path, crashtest):  # noqa: F811
    proc = _debug_run(tmp_path, crashtest, "--show-phi")
    assert proc.returncode == 1, proc.stderr
    assert MARKER in proc.stderr


@pytest.mark.parametrize(
    "message",
    [
        'File "/work/main/platform/voxpipe/pipeline.py", line 80',
        "see /opt/domain/in.txt and main/in/x",
    ],
)
def test_folder_redaction_matches_only_at_a_path_start(message, tmp_path, monkeypatch):
    from voxpipe.cases import CaseSource
    from voxpipe.pipeline import redact

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "Doe_Jane.nii.gz"
    path.write_bytes(b"")
    source = CaseSource(identity="x", kind="nifti", paths=(Path("in") / path.name,))
    assert redact(message, source) == message
    assert redact(f"cannot read in/{path.name}", source) == "cannot read <input>"


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_stage_cannot_move_the_output_folder(cli, crashtest, cases, tmp_path, write_config, workers):  # noqa: F811
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = write_config(crash_plugin.config("redirect", trigger="c01", marker_dir=str(elsewhere)))
    out = tmp_path / "out"
    result = cli("run", config, "-i", cases, "-o", out, "--workers", workers)
    assert result.exit_code == 1, result.stderr
    failed = [c for c in manifest_of(out)["cases"] if c["status"] == "failed"]
    assert len(failed) == 1 and "changed `output_dir`" in failed[0]["error"] and "stage 2 (crashtest.act)" in failed[0]["error"]
    assert list(elsewhere.iterdir()) == []

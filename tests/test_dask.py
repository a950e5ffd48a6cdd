"""Runs on a real Dask cluster: a LocalCluster with 2 worker processes on loopback.

The same cases through ``--executor tcp://...`` and the local pool give the same case
folders, files, label maps and manifest summary; a rerun on Dask resumes (skips) them;
``--executor dask-local`` starts and stops its own cluster; an unreachable scheduler and
a worker without a plugin the config needs are one clear line each.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from tests import crash_plugin

distributed = pytest.importorskip("distributed")

CONFIG = """\
version: 1
name: dask-check
device: cpu
stages:
  - use: load.auto
  - use: intensity.scale
    with: {mode: percentile, lower: 1, upper: 99}
  - use: segment.otsu
  - use: write.nifti
    with: {keys: [image, label]}
"""


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, loopback only, no dashboard; shut down after the module."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=40
    ) as local:
        yield local


@pytest.fixture
def cases(tmp_path):
    return crash_plugin.write_cases(tmp_path / "input", ["d00", "d01", "d02", "d03"], shape=(16, 16, 8))


def case_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_dask_cluster_gives_the_same_outputs_and_resumes(cli, cluster, cases, tmp_path, write_config):
    import nibabel as nib

    config = write_config(CONFIG)
    local, dask = tmp_path / "local", tmp_path / "dask"
    assert cli("run", config, "-i", cases, "-o", local, "--workers", "2").exit_code == 0
    result = cli("run", config, "-i", cases, "-o", dask, "--executor", cluster.scheduler_address)
    assert result.exit_code == 0, result.stderr
    assert [d.name for d in case_dirs(local)] == [d.name for d in case_dirs(dask)] and len(case_dirs(dask)) == 4
    for a, b in zip(case_dirs(local), case_dirs(dask)):
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        np.testing.assert_array_equal(
            np.asanyarray(nib.load(a / "label.nii.gz").dataobj), np.asanyarray(nib.load(b / "label.nii.gz").dataobj)
        )
    ml, md = (json.loads((o / "manifest.json").read_text()) for o in (local, dask))
    assert ml["summary"] == md["summary"] == {"cases": 4, "ok": 4, "failed": 0, "skipped": 0}
    assert ml["config_hash"] == md["config_hash"] and md["executor"]["kind"].startswith("tcp://")
    assert all(c["stages"] and c["outputs"] for c in md["cases"])
    assert (dask / "report.html").is_file() and not (dask / ".voxpipe").exists()
    again = cli("run", config, "-i", cases, "-o", dask, "--executor", cluster.scheduler_address)
    assert again.exit_code == 0 and "4 cases: 0 ok, 0 failed, 4 skipped" in again.stderr


def test_dask_local_starts_its_own_cluster(cli, cases, tmp_path, write_config):
    out = tmp_path / "out"
    result = cli("run", write_config(CONFIG), "-i", cases, "-o", out, "--executor", "dask-local", "--workers", "2")
    assert result.exit_code == 0, result.stderr
    assert len(case_dirs(out)) == 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["executor"] == {"kind": "dask-local", "workers": 2, "timeout_s": None, "retries": 2}
    assert all("worker" not in c for c in manifest["cases"]), "the manifest carries no host details"


def test_unreachable_scheduler_is_one_line(cli, cases, tmp_path, monkeypatch, write_config):
    monkeypatch.setenv("VOXPIPE_DASK_CONNECT_TIMEOUT", "1")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    result = cli("run", write_config(CONFIG), "-i", cases, "-o", out, "--executor", f"tcp://127.0.0.1:{port}")
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
    assert "cannot reach the Dask scheduler" in result.error_lines[0] and "Traceback" not in result.stderr
    assert not out.exists(), "nothing written when the run cannot start"


def test_worker_without_the_plugin_is_named(cli, cluster, cases, tmp_path, monkeypatch, write_config):
    """The plugin is installed here (after the cluster started), not on the workers."""
    site = crash_plugin.install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    out = tmp_path / "out"
    result = cli("run", write_config(crash_plugin.config("none")), "-i", cases, "-o", out, "--executor", cluster.scheduler_address)
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert "Dask worker tcp://127.0.0.1:" in line and "plugin not installed" in line and "crashtest.act" in line
    assert "install the same plugins on every worker" in line
    assert not case_dirs(out) if out.exists() else True


def test_timeout_on_dask_is_refused_clearly(cli, cluster, cases, tmp_path, write_config):
    result = cli(
        "run", write_config(CONFIG), "-i", cases, "-o", tmp_path / "out", "--executor", cluster.scheduler_address, "--timeout", "5"
    )
    assert result.exit_code == 2 and "--timeout works with the local executor only" in result.error_lines[0]
    assert os.environ.get("VOXPIPE_DASK_CONNECT_TIMEOUT") is None

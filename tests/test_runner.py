"""`voxpipe run`: outputs per pseudonymous case, a manifest, atomic results, clean failures."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import DEMO_CONFIG, REPO, write_nifti

CASE_ID = re.compile(r"^case-[0-9a-f]{12}$")


def case_dirs(out):
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_demo_run_writes_cases_and_manifest(cli, sample_inputs, tmp_path):
    out = tmp_path / "out"
    result = cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", out, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "4 cases: 4 ok, 0 failed, 0 skipped" in result.stderr
    dirs = case_dirs(out)
    assert len(dirs) == 4 and all(CASE_ID.match(d.name) for d in dirs)
    for d in dirs:
        names = {p.name for p in d.iterdir()}
        assert {"image.nii.gz", "label.nii.gz", "label.labels.json", "preview.png", "case.json"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"] == {"cases": 4, "ok": 4, "failed": 0, "skipped": 0}
    assert manifest["config"]["name"] == "quickstart" and len(manifest["config_hash"]) == 64
    assert manifest["device"] == "cpu" and manifest["finished"]
    assert manifest["plugins"]["used"] == {"voxpipe": manifest["voxpipe_version"]}
    for case in manifest["cases"]:
        assert [s["stage"] for s in case["stages"]] == [
            "load.auto",
            "intensity.scale",
            "smooth",
            "segment.otsu",
            "write.nifti",
            "write.preview",
        ]
        assert all(s["seconds"] >= 0 for s in case["stages"])
    assert not (out / ".voxpipe").exists(), "staging area is removed after the run"


def test_outputs_carry_no_input_names(cli, sample_inputs, tmp_path):
    out = tmp_path / "out"
    assert cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", out).exit_code == 0
    for path in out.rglob("*"):
        assert not re.search(r"t1-brain|phantom|shepp|ct-series|IM0", path.name)
        if path.suffix == ".json":
            text = path.read_text()
            assert not re.search(r"t1-brain|phantom|shepp|ct-series|IM0|Synthetic|" + re.escape(str(sample_inputs)), text), path


def test_case_ids_are_stable_and_keyed(cli, sample_inputs, tmp_path, monkeypatch):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", first)
    cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", second)
    assert [d.name for d in case_dirs(first)] == [d.name for d in case_dirs(second)]
    monkeypatch.setenv("VOXPIPE_ID_KEY_FILE", str(tmp_path / "another.key"))
    cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", other)
    assert not {d.name for d in case_dirs(first)} & {d.name for d in case_dirs(other)}
    assert stat.S_IMODE(os.stat(tmp_path / "another.key").st_mode) == 0o600


def test_rerun_skips_complete_cases_and_force_redoes(cli, sample_inputs, tmp_path):
    out = tmp_path / "out"
    cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", out)
    again = cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", out)
    assert again.exit_code == 0 and "0 ok, 0 failed, 4 skipped" in again.stderr
    changed = cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", out, "--set", "smooth.sigma_mm=2")
    assert changed.exit_code == 2, "another config's results are never silently mixed in or replaced"
    assert len(changed.error_lines) == 1 and "different config" in changed.error_lines[0] and "--force" in changed.error_lines[0]
    forced = cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", out, "--set", "smooth.sigma_mm=2", "--force")
    assert "4 ok, 0 failed, 0 skipped" in forced.stderr
    record = json.loads((case_dirs(out)[0] / "case.json").read_text())
    assert any(h["op"] == "denoise.gaussian" and h["sigma_mm"] == 2 for h in record["history"])


def test_failing_cases_are_reported_and_the_run_goes_on(cli, sample_inputs, tmp_path):
    (sample_inputs / "broken-Doe^John.nii.gz").write_bytes(b"this is not a nifti file")
    from PIL import Image

    Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(sample_inputs / "blank.png")  # Otsu is undefined on it
    out = tmp_path / "out"
    result = cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", out)
    assert result.exit_code == 1
    assert "6 cases: 4 ok, 2 failed" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    failed = [c for c in manifest["cases"] if c["status"] == "failed"]
    assert len(failed) == 2 and all("\n" not in c["error"] for c in failed)
    assert any(c["error"].startswith("stage 1 (load.auto):") for c in failed)
    assert any("stage 4 (segment.otsu): " in c["error"] and "constant" in c["error"] for c in failed)
    assert "Doe" not in (out / "manifest.json").read_text() and "Doe" not in result.stderr
    assert len(case_dirs(out)) == 4, "failed cases leave no folder"
    assert not any(p.name.startswith(".") and p.is_file() for p in out.rglob("*")), "no temporary files remain"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "make_args, expected",
    [
        (lambda t, i: ["run", t / "missing.yaml", "-i", i, "-o", t / "o"], "config file not found"),
        (lambda t, i: ["run", DEMO_CONFIG, "-i", t / "nowhere", "-o", t / "o"], "does not exist"),
        (lambda t, i: ["run", DEMO_CONFIG, "-i", t / "empty", "-o", t / "o"], "no cases found under"),
        (lambda t, i: ["run", DEMO_CONFIG, "-i", i, "-o", t / "afile" / "o"], "is not writable"),
        (lambda t, i: ["run", DEMO_CONFIG, "-i", i], "missing -o/--output"),
        (lambda t, i: ["run", DEMO_CONFIG, "-i", i, "-o", t / "o", "--set", "smooth.sigma_mm=-1"], "greater than 0"),
        (lambda t, i: ["run", DEMO_CONFIG, "-i", i, "-o", t / "o", "--device", "tpu"], "field `device`"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, sample_inputs, tmp_path, make_args, expected):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    result = cli(*make_args(tmp_path, sample_inputs))
    assert result.exit_code == 2, result
    assert len(result.error_lines) == 1 and expected in result.error_lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_cuda_without_gpu_is_a_usage_error(cli, sample_inputs, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", tmp_path / "o", "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA device" in result.stderr


def test_debug_shows_traceback(cli, tmp_path):
    result = cli("--debug", "validate", tmp_path / "missing.yaml")
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_source_map_is_private_and_complete(cli, sample_inputs, tmp_path):
    mapping = tmp_path / "private" / "map.tsv"
    cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", tmp_path / "out", "--source-map", mapping)
    rows = mapping.read_text().splitlines()
    assert rows[0] == "case_id\tsource" and len(rows) == 5
    assert stat.S_IMODE(os.stat(mapping).st_mode) == 0o600
    assert {r.split("\t")[0] for r in rows[1:]} == {d.name for d in case_dirs(tmp_path / "out")}


def test_single_file_input(cli, tmp_path):
    path = write_nifti(tmp_path / "one.nii.gz", np.random.default_rng(0).random((8, 9, 10)).astype(np.float32))
    result = cli("run", DEMO_CONFIG, "-i", path, "-o", tmp_path / "out")
    assert result.exit_code == 0 and "1 cases: 1 ok" in result.stderr


def test_python_dash_m_runs_the_demo(tmp_path, sample_inputs):
    """The real entry point in a fresh interpreter, as a user types it."""
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "voxpipe", "run", str(DEMO_CONFIG), "-i", str(sample_inputs), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(case_dirs(tmp_path / "out")) == 4

"""docs/writing-plugins.md works as written: a plugin package made from its blocks installs, and
every Python and shell block on the page runs, in order, against it.

Blocks whose first line is ``# file: PATH`` are written to PATH (the package, its test, a
config); the package is installed with ``pip --target`` into a temporary folder (never into the
shared environment), so ``pip install -e`` lines are the one thing not run as written. Every other
``python`` block runs in a fresh interpreter, every line of a ``bash`` block in a shell where
``voxpipe``, ``python`` and ``pytest`` are this interpreter's; each must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, write_nifti

DOC = REPO / "docs" / "writing-plugins.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
FILE = re.compile(r"^# file: (\S+)\n")


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))]


def test_the_page_has_a_whole_plugin():
    files = {FILE.match(text).group(1) for _, text in blocks() if FILE.match(text)}
    assert {
        "voxpipe-acme/pyproject.toml",
        "voxpipe-acme/voxpipe_acme/plugin.py",
        "voxpipe-acme/voxpipe_acme/stages.py",
        "voxpipe-acme/voxpipe_acme/commands.py",
        "voxpipe-acme/voxpipe_acme/train.py",
        "voxpipe-acme/tests/test_acme.py",
    } <= files
    text = DOC.read_text()
    for topic in (
        "voxpipe_register_stages",
        "voxpipe_register_trainers",
        "voxpipe_register_commands",
        "case contract",
        "report_metric",
        "report_picture",
        "as_image",
        "as_label",
        "spacing",
        "label_names",
        "run_stage",
        "plugins check",
        "plugins new",
    ):
        assert topic in text, topic


@pytest.fixture
def workspace(tmp_path):
    """The doc's files written out, the package installed into site/, shims for the shell lines."""
    for _, text in blocks():
        found = FILE.match(text)
        if found:
            path = tmp_path / found.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text[found.end() :])
    site = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(tmp_path / "voxpipe-acme"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert pip.returncode == 0, pip.stderr
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, target in (("voxpipe", "-m voxpipe"), ("python", ""), ("pytest", "-m pytest -p no:cacheprovider")):
        shim = shims / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" {target} "$@"\n')
        shim.chmod(0o755)
    write_nifti(tmp_path / "in" / "volume.nii.gz", (600.0 * (np.random.default_rng(0).random((12, 12, 6)) > 0.5)).astype(np.float32))
    env = {
        **os.environ,
        "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])),
    }
    return tmp_path, env


def test_every_block_runs(workspace):
    folder, env = workspace
    ran = 0
    for language, text in blocks():
        if FILE.match(text) or language not in ("python", "bash"):
            continue
        if language == "python":
            commands = [[sys.executable, "-c", text]]
        else:
            lines = [line.split("  #")[0].strip() for line in text.splitlines()]
            commands = [["bash", "-c", line] for line in lines if line and not line.startswith("pip install")]
        for command in commands:
            result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)
            assert result.returncode == 0, f"{command[-1][:200]}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            ran += 1
    assert ran >= 15
    assert (folder / "trained" / "threshold.json").is_file(), "voxpipe train ran the plugin's trainer"
    assert len([p for p in (folder / "out").iterdir() if p.is_dir()]) == 1

"""The light commands (``--help``, ``plugins``, ``validate``) never import torch or MONAI.

Each command runs in a fresh interpreter (``sys.executable -c ...``) that calls
``voxpipe.cli.main`` in-process and then reports which heavy modules ended up in
``sys.modules``. No timing is asserted here: startup time is measured by
``benchmarks/cli_startup.py`` and recorded in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"

HEAVY = ("torch", "monai", "skimage", "nibabel", "scipy")
# Must never be imported by the light commands. scipy is reported but not asserted.
FORBIDDEN = ("torch", "monai", "skimage", "nibabel")
MARKER = "@@light-imports@@"

PROBE = f"""
import json, sys
from voxpipe.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
heavy = {{name: any(m == name or m.startswith(name + ".") for m in sys.modules) for name in {HEAVY!r}}}
sys.stdout.flush()
print({MARKER!r} + json.dumps({{"exit_code": code, "imported": heavy}}))
"""

COMMANDS = {
    "help": ["--help"],
    "plugins": ["plugins"],
    "validate": ["validate", str(DEMO_CONFIG)],
    "deid-help": ["deid", "--help"],
}


def _probe(args: list[str], tmp_path: Path, preamble: str = "") -> tuple[dict, subprocess.CompletedProcess]:
    env = dict(os.environ)
    env["VOXPIPE_ID_KEY_FILE"] = str(tmp_path / "id.key")
    env.pop("VOXPIPE_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-c", preamble + PROBE, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    assert proc.returncode == 0 and lines, f"probe failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len(MARKER) :]), proc


@pytest.mark.parametrize("args", list(COMMANDS.values()), ids=list(COMMANDS))
def test_light_command_does_not_import_heavy_libraries(args: list[str], tmp_path: Path) -> None:
    report, proc = _probe(args, tmp_path)
    assert report["exit_code"] == 0, f"`voxpipe {' '.join(args)}` exited {report['exit_code']}:\n{proc.stdout}\n{proc.stderr}"
    imported = [name for name in FORBIDDEN if report["imported"][name]]
    assert not imported, (
        f"`voxpipe {' '.join(args)}` imported {imported} (all heavy modules: {report['imported']}); "
        "find the import with `python -X importtime -m voxpipe ...`"
    )


def test_probe_detects_a_heavy_import(tmp_path: Path) -> None:
    """Sanity check of the probe itself: a heavy module imported in the process is reported."""
    report, _ = _probe(["--help"], tmp_path, preamble="import nibabel\n")
    assert report["exit_code"] == 0
    assert report["imported"]["nibabel"] is True


@pytest.mark.parametrize(
    "module",
    [
        "voxpipe_plugins.io_auto.loader",
        "voxpipe_plugins.io_nifti.reader",
        "voxpipe_plugins.io_image.reader",
        "voxpipe_plugins.io_dicom.loader",
    ],
)
def test_loader_discovery_does_not_import_torch(module: str) -> None:
    """`voxpipe run`'s parent process only discovers cases (workers build the stages): importing a
    loader's discovery module must not cost it a torch + MONAI import (seconds on 2 cores)."""
    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'monai'}}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr

"""Shared fixtures: an isolated id key, small real and synthetic inputs, an in-process CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "quickstart.yaml"  # the any-input pipeline; configs/demo.yaml is the CT chain (tests/test_demo.py)


@pytest.fixture(autouse=True)
def isolated_key(tmp_path_factory, monkeypatch):
    """Case-id and de-identification keys go to temporary files, never to the user's ~/.config."""
    key = tmp_path_factory.getbasetemp() / "id.key"
    monkeypatch.setenv("VOXPIPE_ID_KEY_FILE", str(key))
    monkeypatch.setenv("VOXPIPE_DEID_KEY_FILE", str(tmp_path_factory.getbasetemp() / "deid.key"))
    for name in ("VOXPIPE_PLUGINS_ALLOW", "VOXPIPE_PLUGINS_BLOCK", "VOXPIPE_STRICT", "VOXPIPE_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return key


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def cli(capsys):
    """Run ``voxpipe ARGS`` in-process (fast: torch is imported once per session)."""
    from voxpipe.cli import main

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return invoke


@pytest.fixture(scope="session")
def registry():
    from voxpipe.registry import Registry

    return Registry.load()


def nibabel_data(name: str) -> Path:
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data" / name


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture
def sample_inputs(tmp_path) -> Path:
    """The demo's sample data: a real T1 MRI, a 3D phantom, a 2D PNG."""
    from voxpipe_plugins.samples.data import write_sample_data

    folder = tmp_path / "input"
    write_sample_data(folder)
    return folder


@pytest.fixture
def write_config(tmp_path):
    """Write a config text to a file and return its path."""

    def _write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


def key_args(key) -> tuple:
    """`voxpipe deid` key options: `--new-key` the first time a test's key file is used."""
    return ("--key", key) if Path(key).exists() else ("--key", key, "--new-key")

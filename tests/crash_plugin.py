"""A test-only plugin that misbehaves on purpose: segfaults, hangs, full disks, flaky I/O.

:func:`install` writes it into a folder as a module plus a ``.dist-info`` with a
``voxpipe`` entry point -- what ``pip install`` would leave -- so the registry discovers
it through the same entry-point path as any third-party plugin, in this process and in
worker processes (which inherit the import path).

The stage ``crashtest.act`` does its ``mode`` only on cases whose input file name
contains ``trigger`` (every case when ``trigger`` is empty), and always records the
torch thread count it ran with, so tests can check that workers do not oversubscribe.
"""

from __future__ import annotations

from pathlib import Path

PLUGIN_SOURCE = '''
"""crashtest: a stage that fails in the ways batch runs must survive."""
import ctypes
import errno
import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec, record


class Panic(BaseException):
    """What a Rust extension raises when it panics (pyo3_runtime.PanicException is a BaseException)."""


class ActParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["none", "segfault", "sleep", "enospc", "eio_once", "value_error", "panic", "redirect"] = "none"
    trigger: str = ""
    seconds: float = Field(0.0, ge=0)
    marker_dir: str = ""


class Act:
    def __init__(self, mode="none", trigger="", seconds=0.0, marker_dir=""):
        self.mode, self.trigger, self.seconds, self.marker_dir = mode, trigger, seconds, marker_dir

    def __call__(self, case):
        import torch

        record(case, "crashtest.act", torch_threads=torch.get_num_threads(), omp=os.environ.get("OMP_NUM_THREADS"))
        if self.seconds and self.mode != "sleep":
            time.sleep(self.seconds)
        if self.trigger and self.trigger not in case["source"].path.name:
            return case
        if self.mode == "segfault":
            ctypes.string_at(0)
        elif self.mode == "sleep":
            time.sleep(self.seconds)
        elif self.mode == "enospc":
            if not self.marker_dir or (Path(self.marker_dir) / "disk-full").exists():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        elif self.mode == "eio_once":
            marker = Path(self.marker_dir) / ("failed-once-" + case["case_id"])
            if not marker.exists():
                marker.write_text("x")
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        elif self.mode == "value_error":
            raise ValueError(f"deliberate failure on {case['source'].path}")
        elif self.mode == "panic":
            raise Panic("index out of bounds")
        elif self.mode == "redirect":
            return dict(case, output_dir=Path(self.marker_dir))
        return case


@hookimpl
def voxpipe_register_stages(register):
    register(StageSpec(
        id="crashtest.act", kind=StageKind.TRANSFORM, summary="Test only: crash, hang or fail I/O on chosen cases.",
        params=ActParams, factory=Act, reads=("image",), writes=("image",),
    ))
'''


def install(folder: Path) -> Path:
    """Write the plugin (module + dist-info) into ``folder``; put ``folder`` on the import path to use it."""
    folder = Path(folder)
    package = folder / "voxpipe_crashtest"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(PLUGIN_SOURCE)
    info = folder / "voxpipe_crashtest-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: voxpipe-crashtest\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[voxpipe]\ncrashtest = voxpipe_crashtest.plugin\n")
    (info / "RECORD").write_text("")
    return folder


def write_cases(folder: Path, names: list[str], shape=(12, 12, 6)) -> Path:
    """Small random NIfTI volumes, one per name (``c00.nii.gz`` ...)."""
    import nibabel as nib
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), str(folder / f"{name}.nii.gz"))
    return folder


def config(mode: str = "none", trigger: str = "", seconds: float = 0.0, marker_dir: str = "") -> str:
    return f"""\
version: 1
name: crashtest
device: cpu
stages:
  - use: load.auto
  - use: crashtest.act
    with: {{mode: {mode}, trigger: "{trigger}", seconds: {seconds}, marker_dir: "{marker_dir}"}}
  - use: write.nifti
    with: {{keys: [image]}}
"""

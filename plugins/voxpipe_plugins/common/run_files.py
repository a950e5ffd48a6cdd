"""The files of one training run (``voxpipe train -o DIR``), named and checked the same way by every trainer."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class RunFiles(NamedTuple):
    last: Path  # the latest weights (safetensors)
    best: Path  # the best weights on validation
    state: Path  # optimiser, scheduler and RNG state for --resume (weights_only)


def run_files(output_dir: Path, resume: bool, error: type[Exception]) -> RunFiles:
    """The run's files; a finished run is never overwritten without --resume, and --resume needs something to resume."""
    output_dir = Path(output_dir)
    files = RunFiles(output_dir / "last.safetensors", output_dir / "best.safetensors", output_dir / "last.state.pt")
    if not resume and files.last.exists():
        raise error(f"{output_dir} already holds a training run (last.safetensors); continue it with --resume or choose another -o")
    if resume and not (files.last.exists() and files.state.exists()):
        raise error(f"nothing to resume in {output_dir}: last.safetensors / last.state.pt not found")
    return files

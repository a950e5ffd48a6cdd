"""Outputs appear whole or not at all: write to a temporary name, then rename.

Outputs may hold patient data, so new files are 0600 and new folders 0700 by default:
only the user who ran VoxPipe can read them. ``VOXPIPE_FILE_MODE`` / ``VOXPIPE_DIR_MODE``
(octal, e.g. ``0640`` / ``0750``) widen that for a shared group; the umask still applies.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place if the block succeeds.

    The temporary file is ``.<name>.tmpXXXX/<name>``: a fresh private (0700) folder in the
    target's folder, holding a file of the target's own name, so libraries that choose a
    format by suffix still do the right thing, and nobody else can read it while it is
    written. The file itself does not exist until the writer creates it: a file made
    first (``mkstemp``) and then opened with ``"wb"`` is *truncated*, and ext4 answers a
    truncate-and-rewrite by flushing the data to disk on close (``auto_da_alloc``), which
    cost 45-60 ms per 150 MB output, up to ~0.9 s on a busy disk.
    """
    target = Path(target)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp = folder / target.name
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


FILE_MODE_ENV, DIR_MODE_ENV = "VOXPIPE_FILE_MODE", "VOXPIPE_DIR_MODE"


def _mode(env: str, default: int) -> int:
    text = os.environ.get(env, "").strip()
    try:
        mode = int(text, 8) if text else default
    except ValueError:
        mode = default
    return (mode & 0o777) & ~current_umask()


def file_mode() -> int:
    """Mode for new output files: 0600 unless ``VOXPIPE_FILE_MODE`` says otherwise."""
    return _mode(FILE_MODE_ENV, 0o600)


def dir_mode() -> int:
    """Mode for new output folders: 0700 unless ``VOXPIPE_DIR_MODE`` says otherwise."""
    return _mode(DIR_MODE_ENV, 0o700)


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def publish_dir(staging: Path, target: Path, scratch: Path) -> None:
    """Move a finished folder into place; an older folder there is replaced, never merged."""
    os.chmod(staging, dir_mode())
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix="replaced-", dir=scratch))
        os.replace(target, old / "previous")
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def write_json(target: Path, data: Any) -> None:
    """Write JSON atomically, pretty-printed and newline-terminated."""
    with atomic_path(Path(target)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")

"""Outputs appear whole or not at all: write to a temporary name, then rename."""

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

    The temporary name keeps the target's suffixes (``x.nii.gz`` -> ``.x.tmp123.nii.gz``)
    so libraries that choose a format by suffix still do the right thing.
    """
    target = Path(target)
    suffix = "".join(target.suffixes)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs get the user's usual mode
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def publish_dir(staging: Path, target: Path, scratch: Path) -> None:
    """Move a finished folder into place; an older folder there is replaced, never merged."""
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700
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

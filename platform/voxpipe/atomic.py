"""Outputs appear whole or not at all: write to a temporary name, then rename.

Outputs may hold patient data, so new files are 0600 and new folders 0700 by default:
only the user who ran VoxPipe can read them. ``VOXPIPE_FILE_MODE`` / ``VOXPIPE_DIR_MODE``
(octal, e.g. ``0640`` / ``0750``) widen that for a shared group; the umask still applies.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place if the block succeeds.

    The temporary file is ``.<name>.tmpXXXX/<name>``: a fresh private (0700) folder in the
    target's folder, holding a file of the target's own name, so libraries that choose a
    format by suffix still do the right thing, and nobody else can read it while it is
    written. The file itself does not exist until the writer creates it: a file made
    first (``mkstemp``) and then opened with ``"wb"`` is *truncated*, and ext4 answers a
    truncate-and-rewrite by flushing the data to disk on close (``auto_da_alloc``), which
    cost 45-60 ms per 150 MB output, up to ~0.9 s on a busy disk.

    ``mode`` fixes the file's mode (files that name inputs are 0600 whatever
    ``VOXPIPE_FILE_MODE`` says); the rename replaces a link at ``target``, never follows it.
    A writer killed inside the block leaves the folder; :func:`clear_stale_temps` removes it.
    """
    target = Path(target)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp = folder / target.name
    try:
        yield tmp
        os.chmod(tmp, file_mode() if mode is None else mode)
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


def private_umask() -> int:
    """A umask that lets no new file or folder be wider than the VOXPIPE modes allow.

    Commands run under it, so writers that choose no mode (``torch.save``, ``open``,
    ``mkdir``) still create private outputs: 0600 / 0700 by default, the group's bits
    only when ``VOXPIPE_FILE_MODE`` / ``VOXPIPE_DIR_MODE`` grant them. Never looser than
    the user's own umask.
    """
    allowed = _requested(FILE_MODE_ENV, 0o600) | _requested(DIR_MODE_ENV, 0o700)
    return current_umask() | (0o777 & ~allowed)


def _requested(env: str, default: int) -> int:
    text = os.environ.get(env, "").strip()
    try:
        return (int(text, 8) if text else default) & 0o777
    except ValueError:
        return default


def make_dirs(path: Path) -> Path:
    """Create ``path`` and its missing parents, each with :func:`dir_mode`.

    ``Path.mkdir(parents=True)`` gives the parents the umask's default (often 0755)
    whatever ``mode`` says; an output folder's parents may be named after a study too.
    """
    path = Path(path)
    missing = []
    current = path
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, dir_mode())
        except FileExistsError:
            pass
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder")
    return path


_TEMP_FOLDER = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # what atomic_path's mkdtemp makes


def clear_stale_temps(folder: Path, names: str | None = None) -> int:
    """Remove the temporary folders that killed atomic writes left in ``folder``; nothing else.

    Only a real folder named ``.NAME.XXXXXXXX.tmp`` holding nothing or one regular file
    ``NAME`` is ours; anything else (a user's ``.notes.tmp``, a folder with other files, a
    link) is left alone. ``names`` (a regular expression) restricts it to the targets a
    command writes. Call it only while no other writer can be using ``folder`` (under the
    run's or :func:`folder_lock`).
    """
    wanted = None if names is None else re.compile(names)
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = _TEMP_FOLDER.match(entry.name)
        if not match or (wanted is not None and not wanted.fullmatch(match["name"])):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            content = os.listdir(entry.path)
            if any(name != match["name"] for name in content):
                continue
            inner = os.path.join(entry.path, match["name"])
            if content and not stat.S_ISREG(os.lstat(inner).st_mode):
                continue
            if content:
                os.unlink(inner)
            os.rmdir(entry.path)
            removed += 1
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
    return removed


@contextlib.contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (no lock file is left in it) while ``what`` writes there.

    The kernel drops it when the process dies, even by SIGKILL.

    Raises:
        UsageError: another process holds it.
    """
    import fcntl

    from voxpipe.errors import UsageError

    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"output folder {folder} is in use by another {what}; wait for it to finish or choose another") from None
        yield
    finally:
        os.close(fd)


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

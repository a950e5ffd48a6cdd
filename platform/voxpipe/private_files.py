"""Files that name input files: ``voxpipe run --source-map`` and ``voxpipe deid --list``.

Such a file links pseudonymous outputs back to (often patient-named) inputs, so one rule
holds for both: it must lie outside the output tree (it would travel with the data),
however the path is spelt (``..``, a relative path, a symbolic link to a folder inside
it); it is never written through a link; and it appears whole, mode 0600 whatever
``VOXPIPE_FILE_MODE`` says, replacing an older file (and its wider mode) by rename.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from voxpipe.errors import UsageError

LINK_FILE_MODE = 0o600


def check_link_file(path: Path, output: Path, option: str) -> Path:
    """Refuse ``path`` for ``option`` when it is a link, a folder, or inside ``output``; before anything is written."""
    from voxpipe.safe_paths import within

    path = Path(path)
    if path.is_symlink():
        raise UsageError(
            f"{option} {path} is a symbolic link; give the real file's path (files that name inputs are never written through links)"
        )
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")
    try:
        overlaps = within(path, output)
    except (OSError, RuntimeError):
        raise UsageError(f"{option} {path}: cannot resolve the path; check for a symbolic link loop") from None
    if overlaps:
        raise UsageError(f"{option} {path} is inside the output folder {output}; it names input files, so keep it outside")
    return path


@contextlib.contextmanager
def link_file(path: Path) -> Iterator[Path]:
    """Yield a private temporary path; on success it replaces ``path`` (0600), links included."""
    from voxpipe.atomic import atomic_path, make_dirs

    path = Path(path)
    try:
        make_dirs(path.parent)
    except OSError as exc:
        raise UsageError(f"cannot create the folder of {path} ({exc.strerror or type(exc).__name__}); choose another place") from None
    with atomic_path(path, mode=LINK_FILE_MODE) as tmp:
        yield tmp


def write_link_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` by :func:`link_file`."""
    with link_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")

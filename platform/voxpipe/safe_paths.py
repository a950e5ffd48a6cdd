"""Output paths that stay inside the output root.

Names that reach the file system from outside (case ids, config file names, names derived
from data) are joined with :func:`safe_join`, which refuses absolute parts, ``..``,
separators inside a name and any existing symlink on the way (a link planted in the
output folder could otherwise send a write anywhere the user can write).
:func:`inside` answers whether a path lies under a folder, for keys that must stay
*outside* the output tree; :func:`check_separate` refuses an output tree that overlaps
the input (a rerun would take earlier outputs for new cases: 1 -> 4 -> 13).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from voxpipe.errors import UsageError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}$")


class UnsafePathError(UsageError):
    """A name or path that would write outside the output root."""


def check_name(name: str) -> str:
    """One path component: letters, digits, ``_.+-``; no separators, no leading dot, not ``..``."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", "..") or "/" in name or "\\" in name:
        raise UnsafePathError(f"unsafe output name {name!r}: use letters, digits and _.+- only (no folders, no leading dot)")
    return name


def safe_join(root: Path, *parts: str, make_dirs: bool = False, dir_mode: int | None = None) -> Path:
    """``root/part/...`` after checking every part, refusing symlinks below ``root``.

    With ``make_dirs`` the folders between root and the last part are created (with
    ``dir_mode``; default 0700) and checked again after creation, so a link swapped in
    meanwhile is still caught.
    """
    from voxpipe.atomic import dir_mode as default_dir_mode

    root = Path(root)
    current = root
    for i, part in enumerate(parts):
        check_name(part)
        current = current / part
        last = i == len(parts) - 1
        if current.is_symlink():
            raise UnsafePathError(f"refusing to write through a symbolic link in the output folder ({current.name}); remove it")
        if not last and make_dirs:
            try:
                os.mkdir(current, dir_mode if dir_mode is not None else default_dir_mode())
            except FileExistsError:
                pass
            if current.is_symlink() or not current.is_dir():
                raise UnsafePathError(f"refusing to write through {current.name}: not a real folder; remove it")
    if not inside(current, root):
        raise UnsafePathError(f"output path escapes the output folder ({parts[-1] if parts else ''})")
    return current


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (resolved, links followed) lies in or under ``folder`` (resolved)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def within(path: Path, folder: Path) -> bool:
    """Like :func:`inside`, and also true when an existing ancestor of ``path`` *is* ``folder``
    by device and inode (a bind mount or another spelling that ``resolve`` does not unify)."""
    if inside(path, folder):
        return True
    try:
        target = os.stat(folder)
    except OSError:
        return False
    current = Path(os.path.abspath(path))
    while True:
        try:
            if os.path.samestat(os.stat(current), target):
                return True
        except OSError:
            pass
        if current == current.parent:
            return False
        current = current.parent


def check_separate(input_path: Path, output: Path, input_option: str = "-i", output_option: str = "-o") -> None:
    """Refuse an output equal to, inside or around the input, links and ``..`` resolved.

    Raises:
        UsageError: one line naming both options.
    """
    input_path, output = Path(input_path), Path(output)
    try:
        if within(output, input_path) and (input_path.is_dir() or Path(output).resolve() == input_path.resolve()):
            where = "is" if output.resolve() == input_path.resolve() else "is inside"
            raise UsageError(
                f"the output {output} {where} the input {input_path}: a rerun would take earlier outputs "
                f"for new inputs; choose {output_option} outside {input_option}"
            )
        if within(input_path, output):
            raise UsageError(
                f"the input {input_path} is inside the output {output}: outputs would be mixed with inputs; "
                f"choose {output_option} outside {input_option}"
            )
    except (OSError, RuntimeError) as exc:  # a link loop
        raise UsageError(
            f"cannot resolve {input_option} / {output_option} ({type(exc).__name__}); check for a symbolic link loop"
        ) from None

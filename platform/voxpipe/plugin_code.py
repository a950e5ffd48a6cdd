"""Content digests of the plugin code a config uses, for the config hash.

A distribution's version says when an installed plugin changed, but an editable install (or a
plugin being written) changes without a new version, and a rerun would then keep outputs made
by the old code. So the config hash also covers the source of each stage's package: the folder
of the module that holds its factory (and its ``discover``), every ``.py`` file in it, by
relative path and contents. VoxPipe's own core (``voxpipe.*``) is left out: its version counts.

Digests are cached per folder and recomputed when a file's size or modification time changes,
so asking for the hash once per case costs a few ``stat`` calls.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CORE_PACKAGE = "voxpipe"
_cache: dict[Path, tuple[tuple, str]] = {}


def code_digests(specs: Iterable[Any]) -> list[str]:
    """``"<package>:<sha256>"`` for each plugin package the stage specs' factories live in, sorted."""
    roots: dict[Path, str] = {}
    for spec in specs:
        for ref in (spec.factory, spec.discover):
            module = _module_of(ref)
            if module is None or module.split(".")[0] in (CORE_PACKAGE, *sys.stdlib_module_names):
                continue
            found = _source_root(module)
            if found is not None:
                roots.setdefault(found[0], found[1])
    return sorted(f"{name}:{_digest(root)}" for root, name in roots.items())


def _module_of(ref: Any) -> str | None:
    if ref is None:
        return None
    if isinstance(ref, str):
        return ref.partition(":")[0] or None
    while hasattr(ref, "func"):  # functools.partial: the function it wraps
        ref = ref.func
    return getattr(ref, "__module__", None)


def _source_root(module: str) -> tuple[Path, str] | None:
    """The folder of ``module``'s package (or the module file itself when it is top-level)."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None  # a factory that cannot be found: `run` reports it when it builds the stage
    if found is None or not found.origin or not found.has_location:
        return None
    origin = Path(found.origin)
    if found.submodule_search_locations is not None:  # a package: its own folder
        return origin.parent, module
    if "." not in module:  # a top-level single-file module
        return origin, module
    return origin.parent, module.rpartition(".")[0]


def _digest(root: Path) -> str:
    files = sorted(_python_files(root))
    signature = tuple((str(f), *_stat(f)) for f in files)
    cached = _cache.get(root)
    if cached is not None and cached[0] == signature:
        return cached[1]
    digest = hashlib.sha256()
    base = root if root.is_dir() else root.parent
    for file in files:
        try:
            content = file.read_bytes()
        except OSError:
            continue
        digest.update(file.relative_to(base).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(content).digest())
    value = digest.hexdigest()
    _cache[root] = (signature, value)
    return value


def _python_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        found.extend(Path(folder) / name for name in names if name.endswith(".py"))
    return found


def _stat(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except OSError:
        return (-1, -1)
    return (info.st_size, info.st_mtime_ns)

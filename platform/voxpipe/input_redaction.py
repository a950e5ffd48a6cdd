"""Input names out of tracebacks and internal-error lines, for every command.

A case's own error line is redacted where it is made (:func:`voxpipe.pipeline.redact`:
folders dropped, scanner-style DICOM names kept, any other name ``<input file N>``);
``convert`` uses that same function. What is left are texts no case owns: the traceback
``--debug`` prints and the one line of an internal error, which quote whatever path an
exception carried. Commands :func:`register_input` their input; :func:`redact_inputs`
then replaces every path under it (as typed, absolute or resolved) and every name found
under it that is not scanner-style, also where it appears bare. ``--show-phi`` (or
``VOXPIPE_SHOW_PHI=1``) is the explicit request that shows them.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path

SHOW_PHI_ENV = "VOXPIPE_SHOW_PHI"
MAX_NAMES = 200_000  # a walk that long is a whole archive; paths under it are still redacted
MIN_BARE = 4  # shorter bare names are common words ("ct", "t1"); in paths they still go

_roots: list[Path] = []
_secrets: list[str] = []  # values of a URL input's query (PatientID, AccessionNumber, UIDs...): see register_secret
_names_cache: dict[tuple[str, ...], tuple[set[str], set[str]]] = {}


def show_phi() -> bool:
    """Whether the user asked to see input names (``--show-phi`` or ``VOXPIPE_SHOW_PHI=1``)."""
    return os.environ.get(SHOW_PHI_ENV, "").lower() in {"1", "true", "yes"}


def register_input(path: Path) -> None:
    """Remember an input file or folder of this command: its names are redacted from now on."""
    path = Path(path)
    if path not in _roots:
        _roots.append(path)


def register_secret(value: str) -> None:
    """Remember a value of this command's input that may identify someone (a URL input's query value).

    Library errors quote the request URL, so ``--debug`` tracebacks would show it; every spelling
    a URL gives it (as typed, percent-encoded, ``+`` for spaces) becomes ``<input value>``.
    """
    from urllib.parse import quote, quote_plus

    for form in {value, quote(value, safe=""), quote(value), quote_plus(value)}:
        if len(form) >= 2 and form not in _secrets:
            _secrets.append(form)
    _secrets.sort(key=len, reverse=True)


def clear_inputs() -> None:
    """Forget registered inputs (the CLI calls it when a command ends; tests run many)."""
    _roots.clear()
    _secrets.clear()
    _names_cache.clear()


def redact_inputs(text: str, roots: list[Path] | None = None) -> str:
    """``text`` with input paths and non-scanner input names replaced by ``<input>``, ``<input file>``, ``<input folder>``."""
    if roots is None and text:
        for secret in _secrets:
            text = text.replace(secret, "<input value>")
    roots = list(_roots if roots is None else roots)
    if not roots or not text:
        return text
    for form in _forms(roots):  # the root itself, however spelt; a short one (`-i in`) only as a path
        after = r"(?![^/\s'\"<>])" if len(form) >= MIN_BARE else r"(?=/)"
        text = re.sub(r"(?<![\w.-])" + re.escape(form) + after, "<input>", text)
    files, folders = _names(roots)  # then every name under it, also bare; they may hold spaces
    for name, placeholder in sorted(
        [(n, "<input file>") for n in files] + [(n, "<input folder>") for n in folders], key=lambda item: len(item[0]), reverse=True
    ):
        if name in text:
            text = re.sub(r"(?<![\w.-])" + re.escape(name) + r"(?![\w-])", placeholder, text)
    return _UNDER_INPUT.sub(_path_replacement, text)  # what is under <input> but not on disk (gone, or never there)


def debug_traceback() -> str:
    """The current exception's traceback for ``--debug``: input names redacted unless ``--show-phi``."""
    text = traceback.format_exc()
    if show_phi():
        return text
    return redact_inputs(text) + "(input names redacted; add --show-phi to see them)\n"


def print_debug_traceback() -> None:
    sys.stderr.write(debug_traceback())
    sys.stderr.flush()


class RedactingStream:
    """A text stream wrapper that redacts every write: what code we do not own prints under ``--debug``."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_inputs(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _forms(roots: list[Path]) -> list[str]:
    forms: set[str] = set()
    for root in roots:
        for form in (str(root), os.path.abspath(root), _resolved(root)):
            form = form.rstrip("/")
            if form and form not in (".", ".."):
                forms.add(form)
    return sorted(forms, key=len, reverse=True)


def _resolved(path: Path) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return ""


_UNDER_INPUT = re.compile(r"<input>((?:/(?:<input [a-z]+>|[^/\s'\"<>:,;()\[\]]+))+)")


def _path_replacement(match: re.Match) -> str:
    from voxpipe.redaction import technical_name

    parts = match.group(1).split("/")[1:]
    kept = [p if p.startswith("<input") and p.endswith(">") or technical_name(p) else "..." for p in parts]
    return "<input>/" + "/".join(kept)


def _names(roots: list[Path]) -> tuple[set[str], set[str]]:
    """Names of files and folders under the roots (the roots' own included) that may identify someone."""
    from voxpipe.redaction import technical_name

    key = tuple(str(r) for r in roots)
    if key in _names_cache:
        return _names_cache[key]
    files: set[str] = set()
    folders: set[str] = set()
    seen = 0
    for root in roots:
        root = Path(root)
        (folders if root.is_dir() else files).add(root.name)
        if not root.is_dir():
            continue
        for _directory, subdirs, names in os.walk(root):
            folders.update(subdirs)
            files.update(names)
            seen += len(subdirs) + len(names)
            if seen > MAX_NAMES:
                break

    def keep(name: str) -> bool:
        return len(name) >= MIN_BARE and not technical_name(name)

    result = ({n for n in files if keep(n)}, {n for n in folders if keep(n)} - files)
    _names_cache[key] = result
    return result

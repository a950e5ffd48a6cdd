"""Finding cases under an input path, and naming them without revealing who they are.

A *case* is one unit of work: a NIfTI file, a 2D image, (later) a DICOM series. The
pipeline's loader decides what counts as a case through its spec's ``discover`` function;
this module holds the shared pieces: the :class:`CaseSource` record, a suffix-based file
walker, and pseudonymous case ids.

Case ids are ``case-`` plus 12 hex digits of an HMAC-SHA256 of the source's identity,
keyed with a secret kept *outside* the output tree (``~/.config/voxpipe/id.key``, under
``$XDG_CONFIG_HOME`` when set, or the file named by ``VOXPIPE_ID_KEY_FILE``). They are stable across runs on the same machine
(so runs can resume), reveal nothing of file or patient names, and cannot be reversed
by hashing a list of likely names without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ID_KEY_ENV = "VOXPIPE_ID_KEY_FILE"


@dataclass(frozen=True)
class CaseSource:
    """Where one case comes from. ``identity`` is hashed into the case id and never shown."""

    identity: str
    paths: tuple[Path, ...]
    kind: str  # "nifti", "image", "dicom", ...
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)  # loader-specific, never shown

    @property
    def path(self) -> Path:
        return self.paths[0]


@dataclass
class Discovery:
    """The cases found under an input path, and counts of what was passed over and why."""

    cases: list[CaseSource] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def iter_files(root: Path):
    """Every regular file under ``root`` (or ``root`` itself), sorted, hidden entries skipped."""
    if root.is_file():
        yield root
        return
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(directory) / name


def suffix_of(path: Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def discover_by_suffix(root: Path, kinds: dict[str, str]) -> Discovery:
    """One case per file whose suffix is in ``kinds`` (suffix -> case kind)."""
    found = Discovery()
    for file in iter_files(root):
        kind = kinds.get(suffix_of(file))
        if kind is None:
            found.skipped[f"not a supported file type ({suffix_of(file) or 'no suffix'})"] += 1
            continue
        found.cases.append(CaseSource(identity=str(file.resolve()), paths=(file,), kind=kind))
    return found


def key_file_path(env_var: str, name: str) -> Path:
    """Where a secret key lives: ``$env_var`` if set, else the user's config folder (never the output tree)."""
    explicit = os.environ.get(env_var)
    if explicit:
        return Path(explicit).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "voxpipe" / name


def _key_file() -> Path:
    return key_file_path(ID_KEY_ENV, "id.key")


def id_key() -> bytes:
    """The secret behind case ids; created (mode 0600) on first use."""
    path = _key_file()
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return bytes.fromhex(key)


def case_id(source: CaseSource, key: bytes | None = None) -> str:
    """Pseudonymous, stable id for a case: ``case-`` + 12 hex digits of HMAC-SHA256."""
    digest = hmac.new(key if key is not None else id_key(), source.identity.encode(), hashlib.sha256)
    return "case-" + digest.hexdigest()[:12]

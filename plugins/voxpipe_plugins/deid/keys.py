"""The de-identification key: a file of 64 hex digits, outside the output tree, 0600.

Whoever holds the key can recompute every pseudonym (and so link outputs back to
inputs they already have); whoever does not, cannot. That is why the key must never
travel with the output: a key path inside the output folder is refused.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from voxpipe.cases import key_file_path
from voxpipe.errors import UsageError
from voxpipe.safe_paths import inside

KEY_ENV = "VOXPIPE_DEID_KEY_FILE"


def default_key_file() -> Path:
    return key_file_path(KEY_ENV, "deid.key")


def load_or_create(path: Path, output_root: Path | None = None) -> tuple[bytes, bool]:
    """The key in ``path`` (created with a fresh random key, mode 0600, when missing) and whether it was created."""
    path = Path(path).expanduser()
    if output_root is not None and (inside(path, output_root) or inside(path.parent, output_root)):
        raise UsageError(f"the key file {path} is inside the output folder {output_root}; keep it outside (it would travel with the data)")
    created = False
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise UsageError(f"cannot create the key file {path} ({exc.strerror}); choose another with --key") from None
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            created = True
    if path.is_dir():
        raise UsageError(f"the key file {path} is a folder; give a file path with --key")
    try:
        text = path.read_text().strip()
        key = bytes.fromhex(text)
    except (OSError, ValueError):
        raise UsageError(f"the key file {path} does not hold a hex key (64 hex digits); fix it or point --key at a new file") from None
    if len(key) < 16:
        raise UsageError(f"the key in {path} is shorter than 128 bits; point --key at a new file to create a fresh one")
    return key, created


def is_private(path: Path) -> bool:
    """Whether only the owner can read the key file."""
    return not (stat.S_IMODE(os.stat(path).st_mode) & 0o077)


def fingerprint(key: bytes) -> str:
    """A short, non-reversible name for a key, so reports can say which key was used."""
    import hashlib
    import hmac

    return hmac.new(key, b"voxpipe-deid-fingerprint", hashlib.sha256).hexdigest()[:12]

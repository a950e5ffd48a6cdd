"""DICOMweb credentials and TLS settings, from the environment only (never a config, never a URL).

``VOXPIPE_DICOMWEB_USER`` + ``VOXPIPE_DICOMWEB_PASSWORD`` (HTTP basic) or ``VOXPIPE_DICOMWEB_TOKEN``
(bearer). ``VOXPIPE_DICOMWEB_CA_BUNDLE`` (or a command's ``--ca-bundle``) names the PEM file that
verifies an https server; without it the system's trust store is used. The session ignores
proxy variables and ``~/.netrc`` (``trust_env`` off), so no credential arrives from elsewhere and
nothing is sent to a host the user did not name.
"""

from __future__ import annotations

import os
from pathlib import Path

from voxpipe.input_sources import InputSourceError

USER_ENV = "VOXPIPE_DICOMWEB_USER"
PASSWORD_ENV = "VOXPIPE_DICOMWEB_PASSWORD"
TOKEN_ENV = "VOXPIPE_DICOMWEB_TOKEN"
CA_BUNDLE_ENV = "VOXPIPE_DICOMWEB_CA_BUNDLE"


def credentials() -> tuple[str, str] | str | None:
    """``(user, password)``, a bearer token, or None; a half-given pair or both kinds is one line."""
    user, password, token = (os.environ.get(name, "") for name in (USER_ENV, PASSWORD_ENV, TOKEN_ENV))
    if token and (user or password):
        raise InputSourceError(f"both {TOKEN_ENV} and {USER_ENV}/{PASSWORD_ENV} are set; set one kind of credential")
    if token:
        return token
    if bool(user) != bool(password):
        missing = PASSWORD_ENV if user else USER_ENV
        raise InputSourceError(f"{missing} is not set; set both {USER_ENV} and {PASSWORD_ENV} (or neither)")
    return (user, password) if user else None


def ca_bundle(option: str | os.PathLike | None = None) -> Path | None:
    """The CA bundle to verify https servers with: the option, else the environment, else None (system store)."""
    value = option or os.environ.get(CA_BUNDLE_ENV, "")
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        where = "--ca-bundle" if option else CA_BUNDLE_ENV
        raise InputSourceError(f"{where}: the CA bundle {path} is not a file; give a PEM file of trusted certificates")
    return path


def session(ca_bundle_path: Path | None = None):
    """A requests session with the environment's credentials and the CA bundle, and nothing else from the environment."""
    import requests

    result = requests.Session()
    result.trust_env = False
    found = credentials()
    if isinstance(found, tuple):
        result.auth = found
    elif isinstance(found, str):
        result.headers["Authorization"] = f"Bearer {found}"
    result.verify = str(ca_bundle_path) if ca_bundle_path else True
    return result

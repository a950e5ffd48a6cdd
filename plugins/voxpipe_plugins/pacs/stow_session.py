"""The HTTP session ``write.stow`` talks through: credentials from the environment only, certificates verified.

Kept apart so no credential ever passes through a config, a parameter model or a record:
the values go straight from the environment into the session and are never formatted
into text.
"""

from __future__ import annotations

import os

USER_ENV, PASSWORD_ENV, TOKEN_ENV = "VOXPIPE_DICOMWEB_USER", "VOXPIPE_DICOMWEB_PASSWORD", "VOXPIPE_DICOMWEB_TOKEN"


class CredentialError(ValueError):
    """The environment's credentials are incomplete or contradictory (the message names variables, never values)."""


def session_from_env(verify: str | bool = True):
    """A ``requests.Session`` with basic auth (user + password) or a bearer token from the environment, or neither."""
    import requests

    user, password, token = (os.environ.get(name, "") for name in (USER_ENV, PASSWORD_ENV, TOKEN_ENV))
    if token and (user or password):
        raise CredentialError(f"set either {TOKEN_ENV} or {USER_ENV}/{PASSWORD_ENV}, not both")
    if bool(user) != bool(password):
        missing = PASSWORD_ENV if user else USER_ENV
        raise CredentialError(f"{missing} is not set; basic auth needs both {USER_ENV} and {PASSWORD_ENV}")
    session = requests.Session()
    session.trust_env = False  # no ~/.netrc credential, no proxy from the environment: only what is named here
    session.verify = verify
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif user:
        session.auth = (user, password)
    return session

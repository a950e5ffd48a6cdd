"""The two ways a run writes values into its JSON records (``case.json``, ``manifest.json``).

One place, so the manifest and the case records agree on time stamps and on what becomes
of a value JSON has no type for.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Literal


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data; anything JSON has no type for becomes its ``str()``."""
    return json.loads(json.dumps(value, default=str))


def utc_now(timespec: Literal["seconds", "microseconds"] = "seconds") -> str:
    """The time now in UTC, ISO 8601 (``microseconds`` orders records written within one second)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec=timespec)

"""Value grammars of PS3.5 6.2: whether a kept value is what its VR says it is.

De-identification keeps numbers, codes, dates, times and UIDs because they are supposed to be
exactly that. A value that fails its VR's grammar (a name typed into SliceThickness, text in
a date, a lowercase sentence in a code string) is free text in disguise and may identify the
patient, so the engine removes it instead of copying it. VRs without a grammar (free text,
names) are judged by the profile, not here.
"""

from __future__ import annotations

import datetime as _dt
import re

_DS = re.compile(r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$")
_IS = re.compile(r"^\s*[+-]?\d+\s*$")
_TM = re.compile(r"^(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,6})?)?)?$")
_DT = re.compile(r"^(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
_AS = re.compile(r"^\d{3}[DWMY]$")
_UI = re.compile(r"^(?:0|[1-9]\d*)(?:\.(?:0|[1-9]\d*))*$")
_CS = re.compile(r"^[A-Z0-9 _]*$")
MAX_LENGTH = {"DS": 16, "IS": 12, "DA": 8, "TM": 14, "DT": 26, "AS": 4, "UI": 64, "CS": 16, "AE": 16, "SH": 16, "LO": 64}

GRAMMAR_VRS = frozenset({"DS", "IS", "DA", "TM", "DT", "AS", "UI", "CS", "AE", "SH", "LO"})
"""The VRs whose values :func:`valid` checks."""


def valid(vr: str, value) -> bool:
    """Whether every component of ``value`` satisfies ``vr``'s grammar (empty values do)."""
    if vr not in GRAMMAR_VRS or value is None:
        return True
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return False
        value = value.split("\\")
    items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return all(_one(vr, item) for item in items)


def _one(vr: str, item) -> bool:
    if item is None:
        return True
    if vr in ("DS", "IS") and isinstance(item, (int, float)) and not isinstance(item, bool):
        text = getattr(item, "original_string", None)
        if text is None:
            return vr == "DS" or float(item).is_integer()
        item = text
    text = str(item)
    stripped = text.rstrip(" \x00") if vr != "UI" else text.rstrip("\x00")
    if not stripped.strip():
        return True
    if len(stripped) > MAX_LENGTH.get(vr, 10**6) or any(ord(c) < 32 for c in stripped):
        return False
    if vr == "DS":
        return bool(_DS.match(stripped))
    if vr == "IS":
        return bool(_IS.match(stripped)) and -(2**31) <= int(stripped) < 2**31
    if vr == "DA":
        return _date(stripped)
    if vr == "TM":
        return _time(stripped)
    if vr == "DT":
        return _datetime(stripped)
    if vr == "AS":
        return bool(_AS.match(stripped))
    if vr == "UI":
        return bool(_UI.match(stripped))
    if vr == "CS":
        return bool(_CS.match(stripped))
    if vr == "AE":
        return "\\" not in stripped
    return "\\" not in stripped  # SH, LO: any text without a value delimiter, within the length


def _date(text: str) -> bool:
    if not re.fullmatch(r"\d{8}", text):
        return False
    try:
        _dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def _time(text: str) -> bool:
    match = _TM.match(text)
    if not match:
        return False
    hour, minute, second = (int(g) if g else 0 for g in match.groups())
    return hour < 24 and minute < 60 and second <= 60


def _datetime(text: str) -> bool:
    match = _DT.match(text)
    if not match:
        return False
    year, month, day, hour, minute, second, offset = match.groups()
    if month and not 1 <= int(month) <= 12:
        return False
    if day:
        try:
            _dt.date(int(year), int(month), int(day))
        except ValueError:
            return False
    if (hour and int(hour) > 23) or (minute and int(minute) > 59) or (second and int(second) > 60):
        return False
    return not offset or (int(offset[1:3]) <= 14 and int(offset[3:]) < 60)

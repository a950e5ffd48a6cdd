"""Keyed, repeatable replacements: UIDs, patient ids and date offsets.

Every replacement is an HMAC-SHA256 of the original value under the user's key, so the
same input gives the same output in any run, in any order, on any machine holding the key
(two series of one study processed a week apart still share a Study Instance UID), while
nobody without the key can link the output to the input by hashing guesses.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re

UID_ROOT = "2.25."
"""PS3.5 B.2: a UID derived from a UUID-sized integer needs no registered root."""


class Pseudonyms:
    """The keyed mappings of one de-identification key."""

    def __init__(self, key: bytes, max_shift_days: int = 3650) -> None:
        if len(key) < 16:
            raise ValueError("de-identification key is shorter than 128 bits")
        self._key = key
        self.max_shift_days = max_shift_days

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\x00{value}".encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """``2.25.<128-bit integer>``: at most 44 characters, well inside UI's 64."""
        value = str(original).strip().rstrip("\x00")
        if not value:
            return ""
        return UID_ROOT + str(int.from_bytes(self._digest("uid", value)[:16], "big"))

    def token(self, purpose: str, original: str, length: int = 12) -> str:
        """A short hex pseudonym (patient ids, file and folder names)."""
        return self._digest(purpose, str(original)).hex()[:length]

    def day_offset(self, patient: str) -> int:
        """Days to move this patient's dates back: 1..max_shift_days, the same for all of their files."""
        return 1 + int.from_bytes(self._digest("days", patient)[:8], "big") % self.max_shift_days


_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DT = re.compile(r"^(\d{4})(\d{2})(\d{2})(.*)$")


def shift_date(value: str, days: int) -> str | None:
    """A DA value moved ``days`` back; None when it is not a valid date (the caller removes it)."""
    match = _DA.match(str(value).strip())
    if not match:
        return None
    try:
        day = _dt.date(*map(int, match.groups()))
    except ValueError:
        return None
    try:
        return (day - _dt.timedelta(days=days)).strftime("%Y%m%d")
    except OverflowError:
        return None


def shift_datetime(value: str, days: int) -> str | None:
    """A DT value with its date part moved back; time of day and UTC offset kept."""
    text = str(value).strip()
    match = _DT.match(text)
    if not match:
        return None
    rest = match.group(4)
    if rest and not re.fullmatch(r"\d{0,6}(\.\d{1,6})?([+-]\d{4})?", rest):
        return None
    shifted = shift_date("".join(match.groups()[:3]), days)
    return None if shifted is None else shifted + rest

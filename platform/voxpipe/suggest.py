"""'Did you mean ...?' for mistyped stage ids, fields and options."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The most similar candidate, or ``None`` when nothing is close enough."""
    options = list(candidates)
    matches = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    if not matches:
        lowered = {c.lower(): c for c in options}
        matches = [lowered[m] for m in difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=cutoff)]
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean `x`?"`` or an empty string."""
    match = closest(word, candidates)
    return f"; did you mean `{match}`?" if match else ""

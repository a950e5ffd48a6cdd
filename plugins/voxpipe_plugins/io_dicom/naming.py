"""``voxpipe convert -f``: output names from a template, like dcm2niix's ``-f``, free of PHI by default.

Why: dcm2niix users name outputs by series number, modality or description. Header
values are text a scanner or a person typed, so every value is sanitised to a safe path
component (:func:`voxpipe.safe_paths.check_name` rules), and the free-text fields, which
may name a patient, are refused unless ``--show-phi`` is given. Patient name, ID and dates
are not offered at all: the pseudonymous case id is how a file is tied to its patient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voxpipe.errors import UsageError
from voxpipe.safe_paths import check_name

DEFAULT_TEMPLATE = "%i_%m"
"""Today's names: ``case-<12 hex>_<MODALITY>``."""


@dataclass(frozen=True)
class Field:
    keyword: str  # DICOM keyword, or "" for what VoxPipe computes
    help: str
    phi: bool = False


FIELDS: dict[str, Field] = {
    "i": Field("", "pseudonymous case id (case-<12 hex>)"),
    "m": Field("Modality", "modality (CT, MR...)"),
    "s": Field("SeriesNumber", "series number"),
    "e": Field("EchoNumbers", "echo number"),
    "a": Field("AcquisitionNumber", "acquisition number"),
    "d": Field("SeriesDescription", "series description (free text: needs --show-phi)", phi=True),
}

TEMPLATE_HELP = (
    "Output file name template, like dcm2niix -f: "
    + ", ".join(f"%{k} {f.help}" for k, f in FIELDS.items())
    + ". Values are sanitised to letters, digits and _.+-; a missing value becomes 'NA'."
)

_FIELD = re.compile(r"%(.)")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def check_template(template: str, show_phi: bool = False) -> str:
    """The template, or a one-line UsageError naming the bad field."""
    if not template or "/" in template or "\\" in template:
        raise UsageError(f"-f/--filename {template!r}: give a file name template without folders, e.g. {DEFAULT_TEMPLATE}")
    if "%" in _FIELD.sub("", template):
        raise UsageError(f"-f/--filename {template!r}: a % must be followed by a field letter, e.g. {DEFAULT_TEMPLATE}")
    for letter in _FIELD.findall(template):
        field = FIELDS.get(letter)
        if field is None:
            known = ", ".join(f"%{k}" for k in FIELDS)
            raise UsageError(f"-f/--filename: unknown field %{letter}; use {known}")
        if field.phi and not show_phi:
            raise UsageError(
                f"-f/--filename: %{letter} ({field.keyword}) is free text that may identify the patient; add --show-phi to use it"
            )
    check_name(_UNSAFE.sub("_", _FIELD.sub("x", template)).strip("._") or "x")
    return template


def render(template: str, case_id: str, header_get) -> str:
    """The file stem for one series; ``header_get(keyword)`` reads the series' first header."""

    def value(match: re.Match) -> str:
        field = FIELDS[match.group(1)]
        raw = case_id if not field.keyword else header_get(field.keyword)
        if isinstance(raw, (list, tuple)):
            raw = raw[0] if raw else None
        return sanitise(raw)

    stem = _FIELD.sub(value, template)
    stem = _UNSAFE.sub("_", stem).strip("._-") or "NA"
    return check_name(stem[:180])


def sanitise(raw: object) -> str:
    """One header value as a path-safe fragment: runs of other characters become ``_``; empty -> ``NA``."""
    if raw is None:
        return "NA"
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    text = _UNSAFE.sub("_", str(raw).strip())
    text = re.sub(r"_+", "_", re.sub(r"[_.]*\.\.[_.]*", "_", text)).strip("._")
    return text[:64] or "NA"


def stale_pattern(template: str) -> str:
    """A regular expression for the names ``template`` can give (so a rerun clears only its own temporary files)."""
    pieces = _FIELD.split(template)  # literal, field letter, literal, ...
    body = "".join(re.escape(_UNSAFE.sub("_", p)) if i % 2 == 0 else "[A-Za-z0-9_.+-]+" for i, p in enumerate(pieces))
    return rf"[A-Za-z0-9_.+-]*{body}[A-Za-z0-9_.+-]*\.(nii\.gz|nii|json)"

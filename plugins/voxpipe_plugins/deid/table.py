"""The standard's attribute table (PS3.15 Table E.1-1) as the engine uses it.

The table is data, not code: ``data/annex_e.tsv`` names every attribute the standard lists,
its Basic Profile action and its action under each option. This module reads it once and
answers "what happens to this tag under these options".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

TABLE_PATH = Path(__file__).resolve().parent / "data" / "annex_e.tsv"

BASIC_ACTIONS = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
"""Every action code Table E.1-1 uses in its Basic Profile column."""

OPTION_COLUMNS = (
    "rtn_safe_private",
    "rtn_uids",
    "rtn_device",
    "rtn_institution",
    "rtn_patient_chars",
    "rtn_long_full_dates",
    "rtn_long_modified_dates",
    "clean_descriptors",
    "clean_structured",
    "clean_graphics",
)


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1: a tag (``0010xxxx`` style masks allowed), its name and actions."""

    tag: str
    name: str
    basic: str
    options: dict
    options_source: str

    def action(self, enabled: frozenset[str]) -> str:
        """The action under the enabled options: a K from any option wins, then C, then the profile.

        Retain options exist to *keep* information, clean options to keep it after cleaning;
        where several apply (Allergies: Retain Patient Characteristics C and Clean Descriptors
        C) the most permissive enabled one decides, as the standard's option semantics imply.
        An option column holding X (Referenced Patient Sequence under Retain UIDs) still removes.
        """
        found = [self.options[name] for name in enabled if self.options.get(name)]
        for code in ("K", "C", "X"):
            if code in found:
                return code
        return self.basic


@dataclass(frozen=True)
class Table:
    rows: dict[str, Row]
    masks: tuple[Row, ...]
    private: Row
    header: tuple[str, ...]

    def lookup(self, tag: int) -> Row | None:
        """The row for a public tag, exact rows first, then group masks (``60xx3000``)."""
        key = f"{tag:08x}"
        row = self.rows.get(key)
        if row is not None:
            return row
        for mask in self.masks:
            if all(m == "x" or m == k for m, k in zip(mask.tag, key)):
                return mask
        return None


@functools.lru_cache(maxsize=1)
def load_table(path: Path = TABLE_PATH) -> Table:
    """Read ``annex_e.tsv``; comment lines (``#``) carry the source and edition."""
    header: list[str] = []
    rows: dict[str, Row] = {}
    masks: list[Row] = []
    private = None
    columns: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            header.append(line[1:].strip())
            continue
        fields = line.split("\t")
        if columns is None:
            columns = fields
            continue
        record = dict(zip(columns, fields))
        options = {name: record.get(name, "") for name in OPTION_COLUMNS}
        row = Row(record["tag"], record["name"], record["basic"], options, record.get("options_source", ""))
        if row.tag == "private":
            private = row
        elif "x" in row.tag:
            masks.append(row)
        else:
            rows[row.tag] = row
    if private is None:
        raise ValueError(f"{path.name}: no row for private attributes")
    return Table(rows, tuple(masks), private, tuple(header))

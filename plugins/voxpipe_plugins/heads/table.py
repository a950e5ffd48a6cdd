"""The training table: a CSV of image path, class label, regression target and patient id, checked row by row.

Light (no torch): ``voxpipe test`` and the trainer read it the same way. Every problem a user
can cause names the file and the CSV row (the header is row 1), and is found before
anything is written.
"""

from __future__ import annotations

import csv
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from voxpipe.errors import VoxpipeError


class TableError(VoxpipeError):
    """A training table that cannot be used as it is; the message names the file and row."""


@dataclass(frozen=True)
class Row:
    """One labelled image. ``label`` is the class name as written; ``target`` the regression value."""

    row: int
    image: Path
    label: str | None
    target: float | None
    patient: str


@dataclass(frozen=True)
class Columns:
    image: str = "image"
    label: str | None = "class"
    target: str | None = "target"
    patient: str | None = "patient"


def read_table(path: Path, columns: Columns) -> list[Row]:
    """Rows of ``path``; missing files, empty labels and non-finite targets are refused with the row number."""
    if not path.is_file():
        raise TableError(f"training table {path} not found; give a CSV with columns {columns.image},{columns.label},{columns.target}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            needed = [c for c in (columns.image, columns.label, columns.target) if c]
            absent = [c for c in needed if c not in header]
            if absent:
                raise TableError(
                    f"{path}: column(s) {', '.join(absent)} missing (the header has {', '.join(header) or 'nothing'}); "
                    "rename them or set image_column/class_column/target_column"
                )
            has_patient = bool(columns.patient) and columns.patient in header
            rows = []
            for number, record in enumerate(reader, start=2):
                rows.append(_row(path, number, record, columns, has_patient))
    except UnicodeDecodeError:
        raise TableError(f"{path}: not a UTF-8 text CSV") from None
    if not rows:
        raise TableError(f"{path}: no rows below the header")
    return rows


def _row(path: Path, number: int, record: dict, columns: Columns, has_patient: bool) -> Row:
    where = f"{path.name} row {number}"
    image_text = (record.get(columns.image) or "").strip()
    if not image_text:
        raise TableError(f"{where}: empty `{columns.image}`; every row needs an image path")
    image = path.parent / image_text
    if not image.exists():
        raise TableError(f"{where}: image {image_text} does not exist (paths are relative to the CSV)")
    label = None
    if columns.label:
        label = (record.get(columns.label) or "").strip()
        if not label:
            raise TableError(f"{where}: empty `{columns.label}`; give every row a class label or drop the row")
    target = None
    if columns.target:
        text = (record.get(columns.target) or "").strip()
        try:
            target = float(text)
        except ValueError:
            raise TableError(f"{where}: `{columns.target}` is {text!r}, not a number") from None
        if not math.isfinite(target):
            raise TableError(f"{where}: `{columns.target}` is {text}; regression targets must be finite numbers")
    patient = (record.get(columns.patient) or "").strip() if has_patient else ""
    return Row(number, image, label, target, patient or f"row{number}")


def class_names(rows: list[Row], given: list[str] | None, source: str) -> list[str]:
    """The class list (index = class number): ``given``, or the labels sorted (numerically when they are numbers)."""
    counts = Counter(r.label for r in rows)
    if given:
        unknown = [(r.row, r.label) for r in rows if r.label not in given]
        if unknown:
            raise TableError(f"{source} row {unknown[0][0]}: class {unknown[0][1]!r} is not in the stage's classes {given}")
        names = list(given)
    else:
        labels = list(counts)
        try:
            names = sorted(labels, key=float)
        except ValueError:
            names = sorted(labels)
    if len(names) < 2:
        raise TableError(f"{source}: only one class ({names[0] if names else 'none'}); classification needs at least two")
    single = [n for n in names if counts.get(n, 0) == 1]
    if single:
        row = next(r.row for r in rows if r.label == single[0])
        raise TableError(
            f"{source}: class {single[0]!r} has one sample (row {row}); it cannot be both trained on and tested: "
            "add samples or merge the class"
        )
    return names


@dataclass
class Split:
    train: list[Row]
    val: list[Row]
    test: list[Row]

    def part(self, name: str) -> list[Row]:
        if name == "all":
            return self.train + self.val + self.test
        return getattr(self, name)


def split_rows(rows: list[Row], val_fraction: float, test_fraction: float, seed: int, source: str) -> Split:
    """Train/val/test by patient: all rows of one patient land in one part; stratified by each patient's main class.

    The same table, fractions and seed always give the same split, so ``voxpipe test`` finds the
    test set the trainer held out.
    """
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r.patient].append(r)
    if len(groups) < 3:
        raise TableError(f"{source}: {len(groups)} patient(s); train, validation and test need at least 3 patients")
    by_class: dict[str | None, list[str]] = defaultdict(list)
    for patient, members in sorted(groups.items()):
        main = Counter(r.label for r in members).most_common(1)[0][0]
        by_class[main].append(patient)
    rng = random.Random(seed)
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    carry_val = carry_test = 0.0
    for label in sorted(by_class, key=str):
        patients = by_class[label]
        rng.shuffle(patients)
        exact_test, exact_val = test_fraction * len(patients) + carry_test, val_fraction * len(patients) + carry_val
        n_test, n_val = int(round(exact_test)), int(round(exact_val))
        if len(patients) >= 3:
            n_test, n_val = max(1, n_test), max(1, n_val)
        n_test = min(n_test, len(patients) - 1)
        n_val = min(n_val, len(patients) - 1 - n_test)
        carry_test, carry_val = exact_test - n_test, exact_val - n_val
        parts["test"] += patients[:n_test]
        parts["val"] += patients[n_test : n_test + n_val]
        parts["train"] += patients[n_test + n_val :]
    for name in ("val", "test"):
        if not parts[name]:  # small tables: take one patient from the largest training class
            parts[name].append(parts["train"].pop())
    split = Split(*([r for p in sorted(parts[name]) for r in groups[p]] for name in ("train", "val", "test")))
    return split

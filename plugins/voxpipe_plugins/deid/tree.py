"""``voxpipe deid INPUT OUTPUT``: de-identify every DICOM file under a folder.

Each file is read within the limits, de-identified, and written under OUTPUT by its new
UIDs. Nothing else is copied: a DICOMDIR repeats patient names and is skipped, non-DICOM
files are skipped, quarantined and refused files are counted with their reason. The
report (``deid-report.json``) holds counts, the options, the table edition and the key's
fingerprint: no names, no input paths. An optional list (``--list``) of input path ->
output path / reason is written only where the user asks, outside OUTPUT, mode 0600.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from voxpipe.atomic import make_dirs, write_json
from voxpipe.cases import iter_files
from voxpipe.errors import UsageError
from voxpipe.limits import ResourceLimitError, max_bytes
from voxpipe.private_files import check_link_file, write_link_file
from voxpipe.progress import counted
from voxpipe.safe_paths import UnsafePathError, check_separate
from voxpipe_plugins.deid.engine import AlreadyDeidentified, Deidentifier, DeidError, DeidOptions, Quarantined
from voxpipe_plugins.deid.keys import fingerprint, load_or_create
from voxpipe_plugins.deid.reading import DICOMDIR_CLASS, NotDicomFile, read_dicom
from voxpipe_plugins.deid.writer import relative_parts, write_dataset

REPORT = "deid-report.json"


@dataclass
class TreeSummary:
    written: int = 0
    series: set = field(default_factory=set)
    skipped: Counter = field(default_factory=Counter)  # reason -> count, never names
    quarantined: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    library_warnings: int = 0
    key_created: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def deidentify_tree(
    input_path: Path,
    output: Path,
    key_file: Path,
    options: DeidOptions,
    max_gib: float | None = None,
    listing: Path | None = None,
    progress=None,
) -> TreeSummary:
    """De-identify every file under ``input_path``; ``progress`` (a :class:`voxpipe.progress.ItemProgress`) counts files."""
    input_path, output = Path(input_path), Path(output)
    if not input_path.exists():
        raise UsageError(f"input path {input_path} does not exist; pass a DICOM file or folder")
    check_separate(input_path, output, "the input", "the output")  # the command's rules hold for the Python API too
    if listing is not None:
        check_link_file(listing, output, "--list")
    key, created = load_or_create(key_file, output)
    try:
        make_dirs(output)
    except OSError as exc:
        raise UsageError(f"output folder {output} cannot be created ({exc.strerror}); choose another") from None
    engine = Deidentifier(key, options)
    summary = TreeSummary(key_created=created)
    cap = max_bytes(max_gib)
    lines = ["source\tresult"]
    files = list(iter_files(input_path))
    if progress is not None:
        progress.start(len(files))
    for path in counted(files, progress.step if progress is not None else None):
        result = _one(path, output, engine, cap, summary)
        lines.append(f"{path}\t{result}")
    write_json(output / REPORT, _report(summary, options, engine, key))
    if listing is not None:
        write_link_file(listing, "\n".join(lines) + "\n")
    return summary


def _one(path: Path, output: Path, engine: Deidentifier, cap: int, summary: TreeSummary) -> str:
    if path.name.upper() == "DICOMDIR":
        summary.skipped["DICOMDIR (not copied: it repeats patient names)"] += 1
        return "skipped: DICOMDIR"
    try:
        ds = read_dicom(path, cap)
    except NotDicomFile:
        summary.skipped["not a DICOM file"] += 1
        return "skipped: not DICOM"
    except ResourceLimitError as exc:
        summary.failed[str(exc)] += 1
        return f"refused: {exc}"
    except Exception as exc:  # noqa: BLE001 - a corrupt file is counted, the rest go on
        summary.failed[f"unreadable ({type(exc).__name__})"] += 1
        return f"failed: unreadable ({type(exc).__name__})"
    if (
        str(ds.get("SOPClassUID", "")) == DICOMDIR_CLASS
        or str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS
    ):
        summary.skipped["DICOMDIR (not copied: it repeats patient names)"] += 1
        return "skipped: DICOMDIR"
    try:
        outcome = engine.apply(ds)
    except Quarantined as exc:
        summary.quarantined[str(exc).split(" (")[0]] += 1
        return f"quarantined: {exc}"
    except AlreadyDeidentified:
        summary.failed["already de-identified by VoxPipe (refused: dates would shift twice)"] += 1
        return "refused: already de-identified by VoxPipe"
    except DeidError as exc:
        summary.failed[str(exc)] += 1
        return f"failed: {exc}"
    summary.library_warnings += outcome.library_warnings
    try:
        target = write_dataset(ds, output, relative_parts(ds, engine.pseudonyms))
    except UnsafePathError as exc:
        summary.failed[str(exc)] += 1
        return f"refused: {exc}"
    summary.written += 1
    summary.series.add(str(ds.get("SeriesInstanceUID", "")))
    return str(target)


def _report(summary: TreeSummary, options: DeidOptions, engine: Deidentifier, key: bytes) -> dict:
    from dataclasses import asdict

    return {
        "profile": "DICOM PS3.15 E.1.1 Basic Application Level Confidentiality Profile",
        "table": [line for line in engine.table.header if line.startswith(("edition", "DICOM"))],
        "options": asdict(options),
        "key_fingerprint": fingerprint(key),
        "written": summary.written,
        "series": len(summary.series),
        "skipped": dict(summary.skipped),
        "quarantined": dict(summary.quarantined),
        "failed": dict(summary.failed),
        "library_warnings_withheld": summary.library_warnings,
    }

"""``voxpipe convert`` (DICOM -> NIfTI + JSON sidecar) and ``voxpipe info`` (every input kind): the click commands and the work behind them.

Both are registered by :mod:`voxpipe_plugins.io_dicom.plugin` through the commands hook,
like any plugin's command, and this module is imported only when one of them runs.
``convert`` behaves as dcm2niix users expect (docs/io.md): ``-f`` names (:mod:`.naming`),
a PHI-free sidecar (:mod:`.sidecar`), and no existing file replaced without ``--force``.

``convert`` follows the rules of ``voxpipe run``: its output never overlaps the input, new
folders are private, a series' error is redacted by the run's own function
(:func:`voxpipe.pipeline.redact`), and a rerun removes the temporary files a killed
convert left, under a lock on the output folder so no running convert loses its own.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click

from voxpipe.cases import case_id, id_key
from voxpipe.cli_conventions import PATH_OR_URL, force_option, input_option, json_option, source_options
from voxpipe.errors import UsageError, one_line
from voxpipe_plugins.io_dicom.frames import frames_of
from voxpipe_plugins.io_dicom.geometry import stack_geometry
from voxpipe_plugins.io_dicom.loader import (
    DicomOptions,
    case_source,
    choose_one_hint,
    discover_series,
    load_volume,
    select_series,
)
from voxpipe_plugins.io_dicom.naming import DEFAULT_TEMPLATE, TEMPLATE_HELP, check_template, render, stale_pattern
from voxpipe_plugins.io_dicom.series import Series
from voxpipe_plugins.io_dicom.sidecar import sidecar_fields, sidecar_path, write_sidecar_fields
from voxpipe_plugins.io_nifti.summary import nifti_geometry


def syntax_name(uid: str) -> str:
    """pydicom's name for a transfer syntax UID (the UID itself when pydicom does not know it)."""
    from pydicom.uid import UID

    return UID(uid).name if uid else "?"


@dataclass
class ConvertResult:
    case_id: str
    output: Path | None
    error: str | None
    warnings: list[str]
    status: str = "converted"  # converted | exists | failed
    sidecar: Path | None = None
    size: str = ""
    spacing: str = ""

    def summary(self) -> dict:
        """The JSON form of this result (``convert --json``)."""
        return {
            "case_id": self.case_id,
            "status": self.status,
            "file": str(self.output) if self.output else None,
            "sidecar": str(self.sidecar) if self.sidecar else None,
            "size": self.size,
            "spacing": self.spacing,
            "warnings": self.warnings,
            "error": self.error,
        }


@dataclass(frozen=True)
class WriteOptions:
    """How convert names and writes its outputs (the dcm2niix-like options)."""

    template: str = DEFAULT_TEMPLATE
    force: bool = False
    sidecar: bool = True
    sidecar_phi: bool = False


def find_series(
    input_path: Path, options: DicomOptions, series_uid: str | None = None, files: list[Path] | None = None
) -> tuple[list[Series], Counter]:
    """The series under ``input_path`` (or among ``files``, a part of it); none is an error."""
    if not input_path.exists():
        raise UsageError(f"input path {input_path} does not exist")
    from voxpipe.input_redaction import register_input

    register_input(input_path)
    skipped: Counter = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = discover_series(files if files is not None else input_path, options.selection, skipped)
    if series_uid:
        series = select_series(series, series_uid, id_key())
        if not series:
            raise UsageError(f"no series with case id or SeriesInstanceUID {series_uid} under {input_path} (see `voxpipe info`)")
    if not series:
        passed = "; ".join(f"{n} {reason}" for reason, n in skipped.most_common()) or "no files"
        raise UsageError(f"no DICOM image series found under {input_path} ({passed})")
    return series, skipped


def convert(
    input_path: Path,
    output: Path,
    options: DicomOptions,
    series_uid: str | None = None,
    write: WriteOptions | None = None,
    progress=None,
) -> tuple[list[ConvertResult], Counter]:
    """Write each series as NIfTI (+ JSON sidecar): to ``output`` if it names a .nii/.nii.gz file, else into the folder ``output``.

    Regular uncompressed series stream slice by slice (:mod:`.streaming`); the rest are
    loaded whole first. Both give the same file. An existing output is refused (that
    series only) unless ``write.force``.
    """
    from voxpipe.atomic import clear_stale_temps, folder_lock, make_dirs
    from voxpipe.safe_paths import check_separate

    write = write or WriteOptions()
    if input_path.exists():  # else find_series says so
        check_separate(input_path, output, "-i/--input", "-o/--output")
    series, skipped = find_series(input_path, options, series_uid)
    single_file = output.name.lower().endswith((".nii", ".nii.gz"))
    if single_file and write.template != DEFAULT_TEMPLATE:
        raise UsageError(f"-f/--filename names the files written into an output folder; {output.name} already names the file")
    if single_file and len(series) > 1:
        raise UsageError(f"{len(series)} series found under {input_path}; {choose_one_hint(series, id_key())}, or give an output folder")
    if not single_file:
        if output.exists() and not output.is_dir():
            raise UsageError(f"output {output} exists and is not a folder; give a .nii/.nii.gz file name or a folder")
        try:
            make_dirs(output)
        except OSError as exc:
            raise UsageError(f"output folder {output} cannot be created ({exc.strerror or type(exc).__name__}); choose another") from None
    elif not output.parent.exists():
        raise UsageError(f"output folder {output.parent} does not exist")
    folder = output.parent if single_file else output
    with folder_lock(folder, "voxpipe convert"):
        if single_file:
            names = re.escape(output.name) + (f"|{re.escape(sidecar_path(output).name)}" if write.sidecar else "")
        else:
            names = OUTPUT_NAME if write.template == DEFAULT_TEMPLATE else stale_pattern(write.template)
        clear_stale_temps(folder, names)
        return _convert_each(series, output, single_file, options, write, progress), skipped


OUTPUT_NAME = r"case-[0-9a-f]{12}_[A-Z0-9]+\.(nii\.gz|json)"
"""What convert names the files it writes into a folder by default (and so the only temporary folders it clears there)."""


def _convert_each(
    series: list[Series], output: Path, single_file: bool, options: DicomOptions, write: WriteOptions, progress=None
) -> list[ConvertResult]:
    """Convert each series; ``progress`` (a :class:`voxpipe.progress.ItemProgress`) counts them as they finish."""
    from voxpipe.input_redaction import print_debug_traceback
    from voxpipe.pipeline import redact

    key = id_key()
    results = []
    used: set[str] = set()
    from voxpipe.progress import counted

    if progress is not None:
        progress.start(len(series))
    for item in counted(series, progress.step if progress is not None else None):
        source = case_source(item)
        cid = case_id(source, key)
        try:
            target = output if single_file else output / (render(write.template, cid, item.first.get) + ".nii.gz")
        except UsageError as exc:
            results.append(ConvertResult(cid, None, one_line(exc), [], status="failed"))
            continue
        sidecar = sidecar_path(target) if write.sidecar else None
        if target.name in used:
            error = f"-f/--filename gives {target.name} to an earlier series too; add %i or %s to the template"
            results.append(ConvertResult(cid, None, error, [], status="failed"))
            continue
        used.add(target.name)
        existing = [p for p in (target, sidecar) if p is not None and os.path.lexists(p)]
        if existing and not write.force:
            error = f"{existing[0]} exists; add --force to overwrite it"
            results.append(ConvertResult(cid, None, error, [], status="exists"))
            continue
        try:
            results.append(_convert_one(item, target, sidecar, cid, options, write))
        except Exception as exc:  # noqa: BLE001 - one bad series never stops the others
            if os.environ.get("VOXPIPE_DEBUG"):
                print_debug_traceback()
            results.append(ConvertResult(cid, None, redact(one_line(exc), source), [], status="failed"))
    return results


def _convert_one(item: Series, target: Path, sidecar: Path | None, cid: str, options: DicomOptions, write: WriteOptions) -> ConvertResult:
    """One series -> NIfTI (+ sidecar); the sidecar's fields are read first, so a failure leaves neither file."""
    from voxpipe.pipeline import redact
    from voxpipe_plugins.io_dicom.streaming import NotStreamable, stream_to_nifti
    from voxpipe_plugins.io_nifti.writer import (  # numpy only: no torch, no nibabel for convert
        GZIP_LEVEL,
        write_nifti,
    )

    fields = sidecar_fields(item.first.path, write.sidecar_phi) if sidecar else None
    try:
        stream_to_nifti(item, target, options, gzip_level=GZIP_LEVEL)
        found: list[str] = []
    except NotStreamable:
        volume = load_volume([h.path for h in item.headers], options, item.frames, item.headers)
        write_nifti(volume.array, target, affine=volume.affine, meta=volume.meta)
        found = [redact(warning, case_source(item)) for warning in volume.warnings]
    if sidecar is not None and fields is not None:
        try:
            write_sidecar_fields(sidecar, fields, write.sidecar_phi)
        except Exception:
            target.unlink(missing_ok=True)  # no NIfTI without its sidecar
            raise
    size, spacing = nifti_geometry(target)
    return ConvertResult(cid, target, None, found, sidecar=sidecar, size=size, spacing=spacing)


def describe(
    input_path: Path, options: DicomOptions, show_phi: bool = False, files: list[Path] | None = None
) -> tuple[list[dict], Counter]:
    """One row per series from headers only (no pixel data read)."""
    series, skipped = find_series(input_path, options, files=files)
    key = id_key()
    rows = []
    for item in series:
        first = item.first
        row = {
            "case_id": case_id(case_source(item), key),
            "modality": item.modality or "?",
            "orientation": item.orientation,
            "slices": item.slice_count,
            "size": f"{first.get('Columns', '?')}x{first.get('Rows', '?')}x{item.slice_count}",
            "spacing": "",
            "transfer_syntax": syntax_name(first.transfer_syntax),
            "warnings": [],
        }
        try:
            frames = frames_of(item.headers, item.frames)
            usable = [f for f in frames if f.position is not None and f.orientation is not None and f.pixel_spacing]
            if len(usable) == len(frames) and frames:
                geometry = stack_geometry(
                    [f.position for f in frames],
                    frames[0].orientation,
                    frames[0].pixel_spacing,
                    first.get("SliceThickness"),
                    options.spacing_tolerance,
                )
                row["spacing"] = f"{geometry.pixel_spacing[1]:.3g}x{geometry.pixel_spacing[0]:.3g}x{geometry.spacing:.3g}"
                row["warnings"] = list(geometry.problems)
            elif frames and frames[0].pixel_spacing:
                row["spacing"] = f"{frames[0].pixel_spacing[1]:.3g}x{frames[0].pixel_spacing[0]:.3g}"
        except ValueError as exc:
            row["warnings"] = [one_line(exc)]
        if item.dropped:
            row["warnings"].append("dropped: " + ", ".join(f"{n} {reason}" for reason, n in item.dropped.items()))
        if show_phi:
            row.update(_identifying(first.path, item))
        rows.append(row)
    return rows, skipped


def _identifying(path: Path, item: Series) -> dict:
    """Identifying attributes, shown only with --show-phi."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {
        "patient_name": str(ds.get("PatientName", "")),
        "patient_id": str(ds.get("PatientID", "")),
        "study_date": str(ds.get("StudyDate", "")),
        "series_description": item.description,
        "series_uid": item.series_uid,
    }


def render_table(rows: list[dict], skipped: Counter, show_phi: bool, note: bool = True) -> str:
    columns = ["case_id", "modality", "orientation", "size", "spacing", "transfer_syntax"]
    if show_phi:
        columns += ["patient_name", "patient_id", "study_date", "series_description", "series_uid"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    for row in rows:
        lines.append("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
        lines += [f"    warning: {w}" for w in row["warnings"]]
    if skipped:
        lines.append("passed over: " + ", ".join(f"{n} {reason}" for reason, n in skipped.most_common()))
    if not show_phi and note:
        lines.append("(identifying attributes hidden; --show-phi shows them)")
    return "\n".join(lines)


def _options(irregular: str = "refuse", dtype: str = "auto") -> DicomOptions:
    return DicomOptions(dtype=dtype, irregular=irregular)


def paths_from(option: Path | None, positional: list[Path]) -> tuple[Path | None, list[Path]]:
    """``-i X`` or the next positional (the dcm2niix-style alias), never both."""
    if option is not None:
        return option, positional
    if positional:
        return positional[0], positional[1:]
    return None, positional


@click.command("convert")
@click.argument("positional", metavar="[INPUT] [OUTPUT]", nargs=-1, type=PATH_OR_URL)
@input_option("DICOM file or folder, or a PACS URL (dicomweb+http(s)://..., dimse://...; or give it as INPUT).", urls=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="A .nii/.nii.gz file (one series) or a folder that receives one file per series (or give it as OUTPUT).",
)
@click.option("-f", "--filename", "template", default=DEFAULT_TEMPLATE, show_default=True, help=TEMPLATE_HELP)
@force_option("Overwrite existing outputs; without it an existing file is never replaced (that series is refused).")
@click.option("--no-sidecar", is_flag=True, help="Do not write the BIDS-style JSON sidecar beside each NIfTI.")
@click.option(
    "--sidecar-phi",
    is_flag=True,
    help="Also put free text, institution, station, device serial, acquisition time and UIDs in the sidecar (may identify the patient).",
)
@click.option(
    "--series", "series_uid", metavar="ID", help="Convert only the series with this case id (see `voxpipe info`) or SeriesInstanceUID."
)
@click.option(
    "--irregular",
    type=click.Choice(["refuse", "resample"]),
    default="refuse",
    show_default=True,
    help="Missing slices, uneven spacing or gantry tilt: fail the series, or interpolate onto a uniform grid.",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32"]),
    default="auto",
    show_default=True,
    help="auto keeps exact integers when the rescale allows it.",
)
@json_option("Print the summary as JSON on stdout (the per-series lines still go to stderr).")
@source_options
def convert_command(
    positional: tuple[Path, ...],
    input_option: Path | str | None,
    output: Path | None,
    template: str,
    force: bool,
    no_sidecar: bool,
    sidecar_phi: bool,
    series_uid: str | None,
    irregular: str,
    dtype: str,
    as_json: bool,
    ae_title: str | None = None,
    ca_bundle: Path | None = None,
) -> int:
    """Convert DICOM series to NIfTI with a JSON sidecar, like dcm2niix.

    The output is a .nii/.nii.gz file (one series: use --series when there are several) or
    a folder that receives one file per series, named by -f (default: pseudonymous case id
    and modality, never patient or file names). Beside each NIfTI a BIDS-style .json holds
    the acquisition parameters (times in seconds), without PHI unless --sidecar-phi.
    Existing files are refused (one line each, exit 1; the other series are still
    converted) unless --force.

    \b
    Examples:
      voxpipe convert -i study/ -o nifti/
      voxpipe convert study/ ct.nii.gz --series 1.2.840.113619.2.55.3
      voxpipe convert -i study/ -o nifti/ -f %i_%s_%m --force
      voxpipe convert -i 'dicomweb+https://pacs.example.org/dicom-web?StudyInstanceUID=1.2.3' -o nifti/
    """
    from voxpipe.input_redaction import show_phi

    input_path, rest = paths_from(input_option, list(positional))
    output, rest = paths_from(output, rest)
    if input_path is None or output is None:
        raise UsageError("convert needs an input and an output: voxpipe convert -i DICOM_FOLDER -o OUT_FOLDER (or OUT.nii.gz)")
    if rest:
        raise UsageError(
            f"convert takes one input and one output; {len(rest)} extra path(s) given (an input given twice, as -i and INPUT?)"
        )
    write = WriteOptions(check_template(template, show_phi()), force, not no_sidecar, sidecar_phi)
    from voxpipe.input_sources import open_input, opener_options
    from voxpipe.progress import ItemProgress

    if isinstance(output, str):
        raise UsageError("-o/--output is a local file or folder, not a URL")
    with open_input(input_path, opener_options(ae_title, ca_bundle)) as local:  # a URL: fetched into a private folder first
        progress = ItemProgress("series")
        results, skipped = convert(local, output, _options(irregular, dtype), series_uid, write, progress)
    progress.close()
    counts = Counter(r.status for r in results)
    for result in results:
        click.echo(_summary_line(result), err=True)
        for warning in result.warnings:
            click.echo(f"    warning: {warning}", err=True)
    if skipped:
        click.echo("passed over: " + ", ".join(f"{n} {reason}" for reason, n in skipped.most_common()), err=True)
    click.echo(
        f"converted {counts['converted']} of {len(results)} series; {counts['exists']} refused (exists), {counts['failed']} failed",
        err=True,
    )
    if as_json:
        summary = {"series": [r.summary() for r in results], "counts": {k: counts[k] for k in ("converted", "exists", "failed")}}
        click.echo(json.dumps({**summary, "passed_over": dict(skipped)}, indent=2))
    return 1 if counts["exists"] or counts["failed"] else 0


def _summary_line(result: ConvertResult) -> str:
    """One line per series: what was written (case id, size, spacing, file), or why not."""
    if result.status == "converted":
        extra = f" + {result.sidecar.name}" if result.sidecar else ""
        return f"{result.case_id}  {result.size}  {result.spacing} mm  -> {result.output}{extra}"
    if result.status == "exists":
        return f"{result.case_id}  refused: {result.error}"
    return f"{result.case_id}  failed: {result.error}"


@click.command("info")
@click.argument("positional", metavar="[PATH]", required=False, type=PATH_OR_URL)
@input_option("DICOM folder or file, NIfTI file, 2D image, a folder mixing them, or a PACS URL (or give it as PATH).", urls=True)
@json_option("Print machine-readable JSON on stdout instead of the tables.")
@click.option("--show-phi", is_flag=True, help="Also show patient name, ID, study date, series description, UID and file names.")
@source_options
def info_command(
    positional: Path | str | None,
    input_option: Path | str | None,
    as_json: bool,
    show_phi: bool,
    ae_title: str | None = None,
    ca_bundle: Path | None = None,
) -> None:
    """Describe every input VoxPipe reads under PATH: DICOM series, NIfTI volumes and 2D images.

    DICOM: modality, size, spacing, orientation, transfer syntax, warnings (headers only).
    NIfTI and 2D images: size, spacing, orientation code, dtype and value range. Nothing
    identifying is shown (no patient attributes, no NIfTI description fields, no file
    names: each input is named by its pseudonymous case id) unless --show-phi is given.

    \b
    Examples:
      voxpipe info study/ --json
      voxpipe info -i ct.nii.gz
    """
    from voxpipe.cli_conventions import one_path
    from voxpipe.input_sources import is_url, open_input, opener_options

    path = one_path(positional, input_option, "input", "-i/--input")
    if not is_url(path) and not Path(path).exists():
        raise UsageError(f"input path {path} does not exist")
    with open_input(path, opener_options(ae_title, ca_bundle)) as local:  # a URL: fetched into a private folder first
        rows, file_rows, skipped = inventory(local, show_phi)
    if as_json:
        click.echo(json.dumps({"series": rows, "files": file_rows, "passed_over": dict(skipped)}, indent=2))
        return
    from voxpipe_plugins.io_auto.describe import render_files

    parts = []
    if rows or not file_rows:
        parts.append(render_table(rows, Counter(), show_phi, note=False))  # the PHI note comes once, below
    if file_rows:
        parts.append(("\n" if parts else "") + "\n".join(render_files(file_rows, show_phi)))
    if skipped:
        parts.append("passed over: " + ", ".join(f"{n} {reason}" for reason, n in skipped.most_common()))
    if not show_phi:
        parts.append("(identifying attributes and file names hidden; --show-phi shows them)")
    click.echo("\n".join(parts))


def inventory(path: Path, show_phi: bool) -> tuple[list[dict], list[dict], Counter]:
    """DICOM series rows, NIfTI/2D rows and what was passed over, for everything under ``path``."""
    from voxpipe.cases import iter_files, suffix_of
    from voxpipe.input_redaction import register_input
    from voxpipe_plugins.io_auto.describe import describe_file, kind_of
    from voxpipe_plugins.io_auto.loader import NOT_DICOM_SUFFIXES

    register_input(path)
    known, candidates, skipped = [], [], Counter()
    for file in iter_files(path):
        if kind_of(file):
            known.append(file)
        elif suffix_of(file) in NOT_DICOM_SUFFIXES:
            skipped[f"not a supported file type ({suffix_of(file)})"] += 1
        else:
            candidates.append(file)
    key = id_key()
    file_rows = [describe_file(file, key, show_phi) for file in known]
    if not known:
        rows, found = describe(path, _options(), show_phi)  # as before: no series is an error that says why
        return rows, [], found
    rows: list[dict] = []
    if candidates:
        try:
            rows, found = describe(path, _options(), show_phi, candidates)
        except UsageError:  # only the files above: the rest was not DICOM
            found = Counter()
            discover_series(candidates, _options().selection, found)
        skipped.update(found)
    if path.is_file() and file_rows and file_rows[0].get("error"):
        raise UsageError(f"-i/--input: {file_rows[0]['error']}")
    return rows, file_rows, skipped

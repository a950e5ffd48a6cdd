"""``voxpipe deid -i INPUT -o OUTPUT --key KEYFILE`` (or ``deid INPUT OUTPUT``): DICOM de-identification from the command line.

Registered by :mod:`voxpipe_plugins.deid.plugin` through the commands hook, like any
plugin's command. Light at import (click only); pydicom and the engine load when it runs. The
options mirror the `deid.dicom` stage's parameters; docs/security.md explains each.
OUTPUT follows the rules of ``voxpipe run``: never overlapping INPUT, private, locked while
written, a killed run's temporary files cleared; ``--list`` follows ``--source-map``'s
(:mod:`voxpipe.private_files`).
"""

from __future__ import annotations

from pathlib import Path

import click

from voxpipe.cli_conventions import input_option, one_path, output_option
from voxpipe.errors import UsageError


@click.command("deid")
@click.argument("input_path", metavar="[INPUT", required=False, type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUTPUT]", required=False, type=click.Path(file_okay=False, path_type=Path))
@input_option("DICOM file or folder to de-identify (or give it as the first argument).")
@output_option("Folder for the de-identified tree (or give it as the second argument).", dest="output_option")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key file (64 hex digits) that keys every pseudonym. Must exist (see --new-key) and lie outside OUTPUT.",
)
@click.option(
    "--new-key",
    is_flag=True,
    help="Create --key with a fresh random key (mode 0600); refused if it exists. New keys give pseudonyms unlinked to earlier runs.",
)
@click.option(
    "--retain-dates",
    type=click.Choice(["off", "full", "modified"]),
    default="modified",
    show_default=True,
    help="modified: shift dates by a keyed per-patient offset; full: keep; off: remove (Basic Profile).",
)
@click.option("--retain-patient-chars", is_flag=True, help="Keep sex, age, size, weight and similar.")
@click.option("--retain-device", is_flag=True, help="Keep device identity (serial numbers, station names).")
@click.option("--retain-institution", is_flag=True, help="Keep institution name, address and department.")
@click.option("--retain-uids", is_flag=True, help="Keep the original UIDs (outputs can then be linked to the originals).")
@click.option(
    "--safe-private", multiple=True, metavar="GGGG,CREATOR,EE", help="Keep this private element (repeatable); all others are removed."
)
@click.option(
    "--clean-descriptors", is_flag=True, help="Keep descriptions/comments with identifying values removed, instead of removing them."
)
@click.option("--clean-structured", is_flag=True, help="Keep SR content, processed item by item.")
@click.option("--clean-graphics", is_flag=True, help="Keep graphic annotations and overlays, processed item by item.")
@click.option(
    "--burned-in",
    type=click.Choice(["quarantine", "blank"]),
    default="quarantine",
    show_default=True,
    help="Images that may show burned-in text: quarantine (not written) or blank --blank-region areas.",
)
@click.option("--blank-region", multiple=True, metavar="R0,C0,R1,C1", help="Rectangle to blank with --burned-in blank (repeatable).")
@click.option(
    "--max-gib",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    show_default="$VOXPIPE_MAX_GIB, else 16",
    help="Refuse files that are, or inflate to, more than this many GiB.",
)
@click.option(
    "--list",
    "listing",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write input path -> result (TSV, mode 0600) here; it names input files, so it must lie outside OUTPUT.",
)
def deid(
    input_path: Path | None,
    output_path: Path | None,
    input_option: Path | None,
    output_option: Path | None,
    key_file: Path,
    new_key: bool,
    retain_dates: str,
    retain_patient_chars: bool,
    retain_device: bool,
    retain_institution: bool,
    retain_uids: bool,
    safe_private: tuple[str, ...],
    clean_descriptors: bool,
    clean_structured: bool,
    clean_graphics: bool,
    burned_in: str,
    blank_region: tuple[str, ...],
    max_gib: float | None,
    listing: Path | None,
) -> int:
    """De-identify every DICOM file under INPUT (-i) into OUTPUT (-o) (DICOM PS3.15 Annex E Basic Profile).

    INPUT and OUTPUT may also be given as two arguments, as in earlier versions.

    Files are written as OUTPUT/study-<id>/series-<id>/<id>.dcm, names derived from the new
    UIDs. UIDs are remapped with the key (the same in every run and order), dates move by a
    keyed per-patient offset, private tags are removed, DICOMDIR and non-DICOM files are not
    copied, and images that may show burned-in text are quarantined. OUTPUT/deid-report.json
    counts what happened; it names no patient and no input file.

    \b
    Example:
      voxpipe deid -i study/ -o study-deid/ --key ~/keys/trial.key --new-key   # first time
      voxpipe deid -i study2/ -o study2-deid/ --key ~/keys/trial.key           # same pseudonyms
    """
    from pydantic import ValidationError

    from voxpipe_plugins.deid.plugin import DeidOptionParams

    try:
        regions = [[int(v) for v in region.split(",")] for region in blank_region]
    except ValueError:
        raise UsageError("--blank-region takes four integers R0,C0,R1,C1") from None
    try:
        params = DeidOptionParams(
            retain_long_dates=retain_dates,
            retain_patient_chars=retain_patient_chars,
            retain_device=retain_device,
            retain_institution=retain_institution,
            retain_uids=retain_uids,
            safe_private=list(safe_private),
            clean_descriptors=clean_descriptors,
            clean_structured=clean_structured,
            clean_graphics=clean_graphics,
            burned_in=burned_in,
            blank_regions=regions,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    input_path = one_path(input_path, input_option, "INPUT", "-i/--input")
    output = one_path(output_path, output_option, "OUTPUT", "-o/--output")
    _check_key(key_file, new_key)
    summary = _deidentify(input_path, output, key_file, params.engine_options(), max_gib, listing)
    from voxpipe_plugins.deid.keys import is_private

    if summary.key_created:
        click.echo(f"created a new key in {key_file} (mode 0600); keep it safe and outside the data", err=True)
    elif not is_private(key_file):
        click.echo(f"warning: the key file {key_file} is readable by other users; `chmod 600` it", err=True)
    click.echo(f"de-identified {summary.written} files in {len(summary.series)} series -> {output}")
    for title, counter in (("quarantined", summary.quarantined), ("skipped", summary.skipped), ("failed", summary.failed)):
        for reason, n in counter.most_common():
            click.echo(f"  {title}: {n} ({reason})")
    if summary.library_warnings:
        click.echo(f"  {summary.library_warnings} warnings from pydicom about unusual values (not shown: they quote header values)")
    return summary.exit_code


def _check_key(key_file: Path, new_key: bool) -> None:
    """A missing key is created only when asked: a typo in --key must not silently start unrelated pseudonyms."""
    path = key_file.expanduser()
    if new_key and path.exists():
        raise UsageError(f"--new-key: {key_file} already exists; drop --new-key to use that key, or give --key a new path")
    if not new_key and not path.exists():
        raise UsageError(f"--key {key_file}: no such key file; check the path, or add --new-key to create a fresh key there")


def _deidentify(input_path: Path, output: Path, key_file: Path, options, max_gib: float | None, listing: Path | None):
    """Check the paths, then de-identify under a lock on OUTPUT; the list appears whole, 0600, only at the end."""
    import contextlib

    from voxpipe.atomic import clear_stale_temps, folder_lock
    from voxpipe.input_redaction import register_input
    from voxpipe.private_files import check_link_file
    from voxpipe.safe_paths import check_separate
    from voxpipe_plugins.deid.tree import deidentify_tree

    if input_path.exists():  # else deidentify_tree says so
        register_input(input_path)
        check_separate(input_path, output, "INPUT", "OUTPUT")
    if listing is not None:
        check_link_file(listing, output, "--list")
    with contextlib.ExitStack() as stack:
        if output.is_dir():  # a rerun: no other deid may be writing here while stale temporary files go
            stack.enter_context(folder_lock(output, "voxpipe deid"))
            for folder, _subdirs, _files in _walk_real(output):
                clear_stale_temps(folder)
        from voxpipe.progress import ItemProgress

        progress = ItemProgress("files")
        try:
            return deidentify_tree(input_path, output, key_file, options, max_gib, listing, progress)
        finally:
            progress.close()  # the list is written whole, 0600, at the end


def _walk_real(root: Path):
    """``os.walk`` that never enters a linked folder (the tree's own are never links)."""
    import os

    return os.walk(root, followlinks=False)

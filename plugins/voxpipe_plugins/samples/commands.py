"""``voxpipe sample-data -o DIRECTORY``: the click command (light at import; the data is made when it runs)."""

from __future__ import annotations

from pathlib import Path

import click

from voxpipe.cli_conventions import force_option, one_path, output_option
from voxpipe.errors import UsageError


@click.command("sample-data")
@click.argument("directory", metavar="[DIRECTORY]", required=False, type=click.Path(file_okay=False, path_type=Path))
@output_option("Folder to write the demo inputs to (or give it as the argument DIRECTORY).", dest="output")
@force_option("Write into DIRECTORY even if it already holds files (the demo files there are replaced).")
@click.option(
    "--ct-series",
    type=click.IntRange(1, 50),
    default=1,
    show_default=True,
    help="How many synthetic thorax CT series (DICOM) to write; the demo uses 3.",
)
@click.option(
    "--matching",
    is_flag=True,
    help="Also write DIRECTORY/matching/: labelled lesion volumes (labels.csv), a moved follow-up T1 and a rotated "
    "MR slice pair, the inputs of docs/matching.md's tour.",
)
def sample_data(directory: Path | None, output: Path | None, force: bool = False, ct_series: int = 1, matching: bool = False) -> None:
    """Write small demo inputs to DIRECTORY: a real T1 MRI (from nibabel's test data),
    a 3D phantom NIfTI, a 2D Shepp-Logan PNG and synthetic thorax CT series (one DICOM
    file per slice). Nothing is downloaded.

    \b
    Example:
      voxpipe sample-data -o demo-input/ --ct-series 3 && voxpipe run configs/demo.yaml -i demo-input/ -o demo-output/
    """
    from voxpipe_plugins.samples.data import write_sample_data

    directory = one_path(directory, output, "DIRECTORY", "-o/--output")
    if not force and directory.is_dir() and any(directory.iterdir()):
        raise UsageError(f"-o {directory}: the folder is not empty; add --force to write the demo files into it, or choose another")

    written = write_sample_data(directory, ct_series=ct_series)
    if matching:
        from voxpipe_plugins.samples.matching import write_matching_data

        written += write_matching_data(directory / "matching")
    for path in written:
        click.echo(str(path))

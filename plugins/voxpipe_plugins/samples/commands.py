"""``voxpipe sample-data DIRECTORY``: the click command (light at import; the data is made when it runs)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("sample-data")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--ct-series",
    type=click.IntRange(1, 50),
    default=1,
    show_default=True,
    help="How many synthetic thorax CT series (DICOM) to write; the demo uses 3.",
)
def sample_data(directory: Path, ct_series: int = 1) -> None:
    """Write small demo inputs to DIRECTORY: a real T1 MRI (from nibabel's test data),
    a 3D phantom NIfTI, a 2D Shepp-Logan PNG and synthetic thorax CT series (one DICOM
    file per slice). Nothing is downloaded.

    \b
    Example:
      voxpipe sample-data demo-input/ --ct-series 3 && voxpipe run configs/demo.yaml -i demo-input/ -o demo-output/
    """
    from voxpipe_plugins.samples.data import write_sample_data

    for path in write_sample_data(directory, ct_series=ct_series):
        click.echo(str(path))

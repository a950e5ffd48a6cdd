"""`voxpipe test CONFIG --checkpoint F`: score a trained head on the split `voxpipe train` held out.

Light at import (click only): the CLI registers this command without loading torch.
"""

from __future__ import annotations

from pathlib import Path

import click

from voxpipe.cli_conventions import force_option, json_option, output_option, print_metrics, refuse_overwrite


@click.command("test")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--checkpoint",
    "checkpoint_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A head checkpoint from `voxpipe train` (best.safetensors, with its .json sidecar).",
)
@click.option(
    "--split",
    "split_name",
    type=click.Choice(["test", "val", "train", "all"]),
    default="test",
    show_default=True,
    help="Which part of the patient-grouped split to score (the same table and seed give the same split).",
)
@output_option("Also write the metrics as JSON to this file (one file: the metrics).", folder=False)
@force_option("Overwrite an existing -o file.")
@json_option("Print the metrics as JSON on stdout instead of the table.")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.FIELD=VALUE", help="Override a config value, as for `voxpipe run`.")
@click.option("--device", metavar="auto|cpu|cuda[:N]", help="Override the config's device.")
@click.pass_obj
def test_command(
    settings,
    config: Path,
    checkpoint_path: Path,
    split_name: str,
    output: Path | None,
    overrides: tuple[str, ...],
    device: str | None,
    force: bool = False,
    as_json: bool = False,
) -> int:
    """Score CHECKPOINT on CONFIG's test split: accuracy, balanced accuracy, ROC AUC, F1, confusion matrix, MAE, RMSE, R².

    CONFIG is the config the head was trained with (its `training:` section names the table,
    the fractions and the seed that fix the split).

    \b
    Example:
      voxpipe train configs/vgg16-multitask.yaml -o build/vgg16-run
      voxpipe test configs/vgg16-multitask.yaml --checkpoint build/vgg16-run/best.safetensors -o build/test-metrics.json
    """
    from voxpipe_plugins.heads.testing import test_checkpoint

    if output is not None:
        refuse_overwrite([output], force)
    metrics, text = test_checkpoint(settings.registry(), config, checkpoint_path, split_name, overrides, device)
    print_metrics(metrics, as_json, text)  # stdout, like `voxpipe train`
    if output is not None:
        from voxpipe.atomic import write_json

        output.parent.mkdir(parents=True, exist_ok=True)
        write_json(output, metrics)
        click.echo(f"wrote {output}", err=True)
    return 0

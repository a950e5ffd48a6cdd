"""``voxpipe evaluate``: the click command (light at import; the scoring code loads when it runs)."""

from __future__ import annotations

from pathlib import Path

import click

from voxpipe.cli_conventions import echo_json, feature_set_option, feature_sets, force_option, json_option, output_option, refuse_overwrite
from voxpipe.defaults import DEFAULT_SPACE
from voxpipe.errors import UsageError

SEGMENTATION_FILES = ("per_case.csv", "summary.csv", "evaluation.md")
RETRIEVAL_FILES = ("retrieval.json",)


@click.command("evaluate")
@click.option("--ref", "ref", type=click.Path(path_type=Path), help="Folder of reference label NIfTI files.")
@click.option(
    "--pred",
    "preds",
    multiple=True,
    metavar="[NAME=]FOLDER",
    help="Predicted labels: a folder of NIfTI files, or a `voxpipe run` output; repeat to compare pipelines.",
)
@click.option(
    "--store",
    "store",
    type=click.Path(file_okay=False, path_type=Path),
    help="Instead: a feature store (`voxpipe features collect`); reports retrieval precision@k and mAP.",
)
@click.option(
    "--labels", type=click.Path(dir_okay=False, path_type=Path), help="With --store: case_id,label CSV (default: the store's labels)."
)
@click.option(
    "-k",
    "ks",
    multiple=True,
    type=click.IntRange(1, 10000),
    default=(1, 5),
    show_default=True,
    help="With --store: precision@k for these k.",
)
@feature_set_option("With --store: feature set(s) to use (repeat to concatenate); default: the only one.")
@click.option(
    "--space",
    type=click.Choice(["raw", "isomap"]),
    default=DEFAULT_SPACE,
    show_default=True,
    help="With --store: also score this space (raw is always scored).",
)
@output_option("Also write per_case.csv, summary.csv and evaluation.md (with --store: retrieval.json) here.", dest="output_dir")
@force_option()
@json_option()
@click.option(
    "--source-map",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The case id -> input TSV of `voxpipe run --source-map`, to match run outputs to references.",
)
def evaluate(
    ref: Path | None,
    preds: tuple[str, ...],
    output_dir: Path | None,
    source_map: Path | None,
    store: Path | None,
    labels: Path | None,
    ks: tuple[int, ...],
    sets: tuple[str, ...],
    deprecated_sets: tuple[str, ...],
    space: str,
    force: bool = False,
    as_json: bool = False,
) -> int:
    """Score predicted label maps against references: Dice, IoU, HD95 and ASSD (mm) per case and label.

    Files are matched by name (without .nii/.nii.gz and suffixes like _label, _seg, _pred).
    Several --pred give one side-by-side table (mean ± std per pipeline and label, then per case).

    \b
    Example:
      voxpipe run configs/ct-lungs.yaml -i scans/ -o runs/classical --source-map private/map.tsv
      voxpipe evaluate --ref labels/ --pred classical=runs/classical --pred unet=runs/unet \\
          --source-map private/map.tsv -o eval/
      voxpipe evaluate --store stores/radiomics --labels classes.csv -k 1 -k 5   # retrieval
    """
    if output_dir is not None:
        refuse_overwrite([output_dir / name for name in (RETRIEVAL_FILES if store is not None else SEGMENTATION_FILES)], force)
    if store is not None:
        try:
            from voxpipe_plugins.match.commands import evaluate_retrieval
        except ImportError:
            raise UsageError("evaluate --store needs the `match` plugin (feature stores), which is not installed") from None
        return evaluate_retrieval(store, labels, ks, output_dir, feature_sets(sets, deprecated_sets), space, as_json=as_json)
    if ref is None or not preds:
        raise UsageError("evaluate needs --ref and --pred (segmentation) or --store (retrieval); see voxpipe evaluate --help")
    from voxpipe_plugins.evaluate.compare import evaluate as run_evaluation
    from voxpipe_plugins.evaluate.compare import markdown, write_outputs

    evaluation = run_evaluation(ref, preds, source_map)
    if as_json:
        echo_json(
            {
                "pipelines": evaluation.pipelines,
                "labels": evaluation.labels,
                "summary": evaluation.summary(),
                "per_case": evaluation.rows(),
                "missing": evaluation.missing,
                "unmatched": evaluation.unmatched,
            }
        )
    else:
        click.echo(markdown(evaluation))
    if output_dir is not None:
        for path in write_outputs(evaluation, output_dir):
            click.echo(f"wrote {path}", err=True)
    return 0

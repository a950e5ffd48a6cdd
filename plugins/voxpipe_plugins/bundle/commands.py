"""`voxpipe bundle import` and `voxpipe bundle info`: a MONAI bundle read as data, never run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from voxpipe.cli_conventions import echo_json, force_option, input_option, json_option, one_path, output_option, refuse_overwrite
from voxpipe.errors import UsageError


def _bundle_dir(positional: Path | None, option: Path | None) -> Path:
    path = one_path(positional, option, "BUNDLE_DIR", "-i/--input")
    if not path.is_dir():
        raise UsageError(f"bundle folder {path} does not exist; give the folder that holds configs/ and models/")
    return path


def _imported(root: Path, config_path: Path, dicom_seg: bool):
    from voxpipe_plugins.bundle.expressions import BundleError
    from voxpipe_plugins.bundle.mapping import import_bundle

    try:
        return import_bundle(root, config_path, dicom_seg=dicom_seg)
    except BundleError as exc:
        raise UsageError(f"bundle {root.name}: {exc}") from None


def _check_weights(imported) -> None:
    """Build the network and fit the bundle's weights (``weights_only=True``) so a mismatch is found at import."""
    from voxpipe_plugins.deep.weights import WeightsError, fit_weights, make_network, read_state_dict

    deep = next(s["with"] for s in imported.config["stages"] if s["use"] == "segment.deep")
    try:
        model = make_network(deep["network"], deep["args"])
        fit_weights(model, read_state_dict(imported.weights), deep["network"], f"models/{imported.weights.name}")
    except (WeightsError, ValueError) as exc:
        raise UsageError(f"bundle {imported.weights.parent.parent.name}: {exc}") from None


@click.group("bundle")
def bundle_group() -> None:
    """MONAI Model Zoo bundles read as data: import one as a VoxPipe config, or describe it (docs/bundles.md)."""


@bundle_group.command("import")
@click.argument("positional", metavar="[BUNDLE_DIR]", required=False, type=click.Path(path_type=Path))
@input_option("Bundle folder with configs/inference.json|yaml, configs/metadata.json and models/model.pt (or give it as BUNDLE_DIR).")
@output_option("The VoxPipe config to write (YAML).", folder=False, required=True)
@force_option("Overwrite the config if it exists.")
@click.option("--dicom-seg", is_flag=True, help="Also write the label map as DICOM SEG (for DICOM inputs).")
def import_command(positional: Path | None, input_option: Path | None, output: Path, force: bool, dicom_seg: bool) -> None:
    """Write a VoxPipe config that runs the bundle in BUNDLE_DIR's inference, without executing any of the bundle.

    The bundle's `$` expressions and `@` references are read as data (Python's ast, never eval);
    its network, preprocessing, sliding window and postprocessing become registered stages with
    literal values; its weights are checked to fit the network (weights_only=True) and pinned by
    SHA-256. Anything that cannot be mapped is refused with one line naming the key.

    \b
    Examples:
      voxpipe bundle import bundles/spleen_ct_segmentation -o spleen.yaml
      voxpipe run spleen.yaml -i ct/ -o out/
    """
    root = _bundle_dir(positional, input_option)
    if output.suffix.lower() not in (".yaml", ".yml"):
        raise UsageError(f"-o/--output: {output.name}: the config must be a .yaml file")
    refuse_overwrite([output], force)
    imported = _imported(root, output, dicom_seg)
    _check_weights(imported)
    from voxpipe_plugins.bundle.writer import write_config

    write_config(output, imported, root)
    for note in imported.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(
        f"wrote {output} ({len(imported.config['stages'])} stages, {imported.network}); run it with `voxpipe run {output} -i INPUT -o DIR`"
    )


@bundle_group.command("info")
@click.argument("positional", metavar="[BUNDLE_DIR]", required=False, type=click.Path(path_type=Path))
@input_option("Bundle folder (or give it as BUNDLE_DIR).")
@json_option("Print machine-readable JSON on stdout instead of the text.")
def info_command(positional: Path | None, input_option: Path | None, as_json: bool) -> None:
    """Describe the bundle in BUNDLE_DIR: name, version, task, inputs, outputs, network, and what import would write or refuse."""
    root = _bundle_dir(positional, input_option)
    from voxpipe_plugins.bundle.info import describe

    info = describe(root)
    if as_json:
        echo_json(info)
        return
    click.echo(_text(info))


def _text(info: dict[str, Any]) -> str:
    lines = [f"{info['name']}  version {info['version']}", f"task: {info['task']}"]
    for name, spec in info["inputs"].items():
        lines.append(f"input {name}: {spec['modality']}, {spec['channels']} channel(s), spacing {spec['spacing']}")
    for name, spec in info["outputs"].items():
        lines.append(f"output {name}: labels {spec['labels']}")
    lines.append(f"network: {info['network']}")
    if info["importable"]:
        lines.append("import would write: " + " -> ".join(info["stages"]))
    else:
        lines.append(f"import refuses it: {info['refused']}")
    lines.extend(f"note: {n}" for n in info["notes"])
    return "\n".join(lines)

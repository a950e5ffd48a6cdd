"""The ``voxpipe`` command.

Commands import only what they need: ``--help``, ``plugins`` and ``validate`` never load
torch or MONAI, so they answer in a fraction of a second. Errors a user can cause print
one line (``error: ...``) and exit 2; ``run`` exits 1 when some cases failed.
``--debug`` (or ``VOXPIPE_DEBUG=1``) shows tracebacks, with input names redacted
(:mod:`voxpipe.input_redaction`) unless ``--show-phi`` asks for them. Every command runs
under :func:`voxpipe.atomic.private_umask`: what it creates is private (0600 / 0700).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from voxpipe import __version__
from voxpipe.errors import VoxpipeError

EXIT_OK, EXIT_CASES_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


@dataclass
class Settings:
    debug: bool = False
    strict: bool = False
    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()

    def registry(self):
        from voxpipe.registry import PluginSelection, Registry, strict_from_env

        registry = Registry.load(PluginSelection.from_env(self.allow, self.block), strict=self.strict or strict_from_env())
        for problem in registry.problems:
            click.echo(f"warning: {problem}", err=True)
        return registry


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("VOXPIPE_DEBUG", "").lower() in {"1", "true", "yes"}


def _command_of(args: list[str]) -> str | None:
    """The subcommand's name: the first word that is neither a global flag nor a global option's value."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--allow-plugin", "--block-plugin"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning user errors into one line and an exit code."""
    from voxpipe import input_redaction as redaction
    from voxpipe.atomic import private_umask

    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    if debug:  # accepted anywhere on the line, not only before the command
        args = ["--debug"] + [a for a in args if a != "--debug"]
        os.environ["VOXPIPE_DEBUG"] = "1"
    phi_setting = os.environ.get(redaction.SHOW_PHI_ENV)
    if "--show-phi" in args:  # info's own option; anywhere else a global flag, accepted anywhere like --debug
        os.environ[redaction.SHOW_PHI_ENV] = "1"
        if _command_of(args) != "info":
            args = ["--show-phi"] + [a for a in args if a != "--show-phi"]
    previous_umask, stderr = os.umask(private_umask()), sys.stderr
    if debug and not redaction.show_phi():  # tracebacks printed by code that is not ours are redacted too
        sys.stderr = redaction.RedactingStream(sys.stderr)
    try:
        code = _invoke(args, debug)
    finally:
        os.umask(previous_umask)
        sys.stderr = stderr
        redaction.clear_inputs()
        if phi_setting is None:  # this command's request only (tests run many in one process)
            os.environ.pop(redaction.SHOW_PHI_ENV, None)
    sys.exit(code)


def _invoke(args: list[str], debug: bool) -> int:
    from voxpipe.input_redaction import print_debug_traceback, redact_inputs, show_phi

    try:
        result = cli.main(args=args, prog_name="voxpipe", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("aborted", err=True)
        return 130
    except VoxpipeError as exc:
        if debug:
            print_debug_traceback()
        for line in str(exc).splitlines():
            click.echo(f"error: {line}", err=True)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - a bug, but still one line unless --debug
        if debug:
            print_debug_traceback()
        else:
            from voxpipe.errors import one_line

            text = one_line(exc) if show_phi() else redact_inputs(one_line(exc))  # an OSError quotes the path it failed on
            click.echo(f"error: internal error: {text} (rerun with --debug for the traceback)", err=True)
        return EXIT_INTERNAL
    return result if isinstance(result, int) else EXIT_OK


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="voxpipe", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (input names redacted unless --show-phi).")
@click.option("--show-phi", is_flag=True, help="Let --debug tracebacks show input paths and file names (also VOXPIPE_SHOW_PHI=1).")
@click.option("--strict", is_flag=True, help="Fail if any plugin cannot be loaded (also VOXPIPE_STRICT=1).")
@click.option("--allow-plugin", "allow", multiple=True, metavar="NAME", help="Load only these plugins (repeat or comma-separate; also VOXPIPE_PLUGINS_ALLOW).")
@click.option("--block-plugin", "block", multiple=True, metavar="NAME", help="Never load these plugins (also VOXPIPE_PLUGINS_BLOCK).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, strict: bool, allow: tuple[str, ...], block: tuple[str, ...], show_phi: bool = False) -> None:
    """VoxPipe: configured medical imaging pipelines over DICOM, NIfTI and 2D images.

    \b
    Examples:
      voxpipe plugins                          list the stages you can use
      voxpipe plugins show denoise.gaussian    a stage's parameters
      voxpipe validate configs/demo.yaml       check a config without running it
      voxpipe run configs/demo.yaml -i scans/ -o results/
      voxpipe sample-data demo-input/          write small demo images to try it on
      voxpipe info study/                      DICOM series under a folder
      voxpipe convert study/ nifti/            DICOM to NIfTI
    """
    ctx.obj = Settings(debug=debug, strict=strict, allow=allow, block=block)


def _overrides_option(function):
    return click.option(
        "--set", "overrides", multiple=True, metavar="STAGE.FIELD=VALUE",
        help="Override a value: STAGE is a stage's `id`, its registry id, or its 1-based position "
        "(e.g. --set denoise.gaussian.sigma_mm=2, --set device=cpu).",
    )(function)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@_overrides_option
@click.pass_obj
def validate(settings: Settings, config: Path, overrides: tuple[str, ...]) -> int:
    """Check CONFIG completely without running it or importing heavy libraries.

    \b
    Example:
      voxpipe validate configs/demo.yaml --set denoise.gaussian.sigma_mm=2
    """
    from voxpipe.config import load_config

    validated = load_config(config, settings.registry(), overrides=overrides)
    chain = " -> ".join(stage.label for stage in validated.stages)
    click.echo(f"{config}: ok: pipeline `{validated.config.name}`, {len(validated.stages)} stages: {chain}")
    click.echo(f"config hash {validated.hash[:16]}")
    return EXIT_OK


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-i", "--input", "input_path", type=click.Path(path_type=Path), help="File or folder with the cases (default: the config's inputs.path).")
@click.option("-o", "--output", "output_dir", type=click.Path(path_type=Path), help="Output folder (default: the config's outputs.path).")
@_overrides_option
@click.option("--device", metavar="auto|cpu|cuda[:N]", help="Override the config's device (auto picks CUDA when there is one).")
@click.option("--force", is_flag=True, help="Redo cases whose outputs are already complete.")
@click.option("--source-map", type=click.Path(dir_okay=False, path_type=Path), help="Write case id -> input path (TSV, mode 0600) here; keep it outside shared folders.")
@click.option("-w", "--workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Worker processes (each case isolated; threads split between them); 0 runs in this process. "
              "With --executor dask-local: the cluster's workers.")
@click.option("--executor", default="local", show_default=True, metavar="local|dask-local|tcp://HOST:PORT",
              help="Where cases run: local processes, a Dask LocalCluster started here, or an existing Dask scheduler.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop a case (and its worker) after this long and record it as failed.")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Extra attempts for a case that failed with a transient I/O error (network shares).")
@click.option("--no-report", is_flag=True, help="Do not write OUTPUT/report.html.")
@click.pass_obj
def run(settings: Settings, config: Path, input_path: Path | None, output_dir: Path | None, overrides: tuple[str, ...],
        device: str | None, force: bool, source_map: Path | None, workers: int = 1, executor: str = "local",
        timeout: float | None = None, retries: int = 2, no_report: bool = False) -> int:
    """Run CONFIG on every case under INPUT, writing OUTPUT/<case-id>/ and OUTPUT/manifest.json.

    Case ids are pseudonymous. A failing case is reported and the run goes on; a rerun
    skips cases that are already complete for the same config (a killed run resumes).
    Each case runs in a worker process: a crash or a --timeout costs that case only.

    \b
    Exit codes: 0 all cases ok, 1 some cases failed, 2 usage or config error (or the
    output disk filled up: complete cases are kept), 3 internal error (a bug: please
    report it with the --debug output).

    \b
    Example:
      voxpipe run configs/demo.yaml -i demo-input/ -o demo-output/ --set device=cpu
      voxpipe run configs/demo.yaml -i archive/ -o results/ --workers 2 --timeout 600
      voxpipe run configs/demo.yaml -i archive/ -o /shared/results/ --executor tcp://scheduler.example.org:8786
    """
    from voxpipe.config import load_config
    from voxpipe.errors import UsageError
    from voxpipe.runner import run as run_pipeline

    registry = settings.registry()
    validated = load_config(config, registry, overrides=overrides, device=device)
    input_path = input_path or _from_config(validated, "inputs")
    output_dir = output_dir or _from_config(validated, "outputs")
    if input_path is None or output_dir is None:
        missing = "-i/--input" if input_path is None else "-o/--output"
        raise UsageError(f"missing {missing}: give it on the command line or in the config's {'inputs' if input_path is None else 'outputs'}.path")

    from voxpipe.progress import Progress

    progress = Progress()
    summary = run_pipeline(validated, registry, input_path, output_dir, force=force, on_case=progress.case, source_map=source_map,
                           workers=workers, executor=executor, timeout=timeout, retries=retries, report=not no_report,
                           on_start=progress.start)
    progress.finish(summary)
    if summary.skipped_files:
        passed = ", ".join(f"{count} {reason}" for reason, count in summary.skipped_files.most_common())
        click.echo(f"input files passed over: {passed}", err=True)
    report = f", report {summary.report}" if summary.report else ""
    click.echo(
        f"{len(summary.outcomes)} cases: {summary.count('ok')} ok, {summary.count('failed')} failed, "
        f"{summary.count('skipped')} skipped; outputs in {summary.output_dir}, manifest {summary.output_dir / 'manifest.json'}{report}",
        err=True,
    )
    if summary.fatal:
        click.echo(f"error: {summary.fatal}", err=True)
    return summary.exit_code


def _from_config(validated, section: str) -> Path | None:
    value = getattr(validated.config, section).path
    return (validated.config_dir / value) if value else None


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List the stages of every installed plugin, grouped by kind.

    \b
    Examples:
      voxpipe plugins
      voxpipe plugins show segment.otsu
    """
    if ctx.invoked_subcommand is not None:
        return
    from voxpipe import cli_plugins

    registry = ctx.obj.registry()
    click.echo(cli_plugins.render_json(registry) if as_json else cli_plugins.render_list(registry))


@plugins.command("show")
@click.argument("stage_id")
@click.pass_obj
def plugins_show(settings: Settings, stage_id: str) -> None:
    """Show STAGE_ID's parameters: types, defaults, bounds and descriptions."""
    from voxpipe import cli_plugins

    click.echo(cli_plugins.render_stage(settings.registry(), stage_id))


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for checkpoints, the learning curve and the training log.")
@_overrides_option
@click.option("--device", metavar="auto|cpu|cuda[:N]", help="Override the config's device.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUTPUT.")
@click.pass_obj
def train(settings: Settings, config: Path, output_dir: Path, overrides: tuple[str, ...], device: str | None, resume: bool) -> int:
    """Train the model described by CONFIG's `training:` section, writing checkpoints to OUTPUT.

    The config's stages are the preprocessing (and, for a deep segmenter, the model that
    `voxpipe run` will use with the trained weights); `training.task` picks the trainer.

    \b
    Example:
      voxpipe train configs/unet-train.yaml -o runs/unet --set training.epochs=50
    """
    from voxpipe.config import load_config
    from voxpipe.errors import UsageError
    from voxpipe.runner import prepare_output
    from voxpipe.stage import StageContext, build_trainer

    registry = settings.registry()
    validated = load_config(config, registry, overrides=overrides, device=device)
    if validated.trainer is None:
        tasks = ", ".join(sorted(registry.trainers)) or "none installed"
        raise UsageError(f"{config} has no `training:` section; add one with `task:` ({tasks})")
    from voxpipe.device import resolve_device

    context = StageContext(device=resolve_device(validated.config.device), config_dir=validated.config_dir, stage_id=f"train.{validated.trainer.task}")
    trainer = build_trainer(validated.trainer, validated.training, validated, context)
    prepare_output(output_dir)
    summary = trainer.run(output_dir, resume=resume) or {}
    for key, value in summary.items():
        click.echo(f"{key}: {value}", err=True)
    return EXIT_OK


@cli.command()
@click.option("--ref", "ref", type=click.Path(path_type=Path), help="Folder of reference label NIfTI files.")
@click.option("--pred", "preds", multiple=True, metavar="[NAME=]FOLDER",
              help="Predicted labels: a folder of NIfTI files, or a `voxpipe run` output; repeat to compare pipelines.")
@click.option("--store", "store", type=click.Path(file_okay=False, path_type=Path),
              help="Instead: a feature store (`voxpipe features collect`); reports retrieval precision@k and mAP.")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), help="With --store: case_id,label CSV (default: the store's labels).")
@click.option("-k", "ks", multiple=True, type=click.IntRange(1, 10000), help="With --store: precision@k for these k (default 1 and 5).")
@click.option("--set", "sets", multiple=True, metavar="NAME", help="With --store: feature set(s) to use.")
@click.option("--space", type=click.Choice(["raw", "isomap"]), default="isomap", show_default=True,
              help="With --store: also score this space (raw is always scored).")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write per_case.csv, summary.csv and evaluation.md here.")
@click.option("--source-map", type=click.Path(dir_okay=False, path_type=Path),
              help="The case id -> input TSV of `voxpipe run --source-map`, to match run outputs to references.")
def evaluate(ref: Path | None, preds: tuple[str, ...], output_dir: Path | None, source_map: Path | None, store: Path | None,
             labels: Path | None, ks: tuple[int, ...], sets: tuple[str, ...], space: str) -> int:
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
    if store is not None:
        from voxpipe_plugins.match.commands import evaluate_retrieval

        return evaluate_retrieval(store, labels, ks, output_dir, sets, space)
    if ref is None or not preds:
        raise VoxpipeError("evaluate needs --ref and --pred (segmentation) or --store (retrieval); see voxpipe evaluate --help")
    from voxpipe_plugins.evaluate.compare import evaluate as run_evaluation, markdown, write_outputs

    evaluation = run_evaluation(ref, preds, source_map)
    click.echo(markdown(evaluation))
    if output_dir is not None:
        for path in write_outputs(evaluation, output_dir):
            click.echo(f"wrote {path}", err=True)
    return EXIT_OK


def _dicom_options(irregular: str, dtype: str):
    from voxpipe_plugins.io_dicom.loader import DicomOptions

    return DicomOptions(dtype=dtype, irregular=irregular)


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--series", "series_uid", metavar="ID", help="Convert only the series with this case id (see `voxpipe info`) or SeriesInstanceUID.")
@click.option("--irregular", type=click.Choice(["refuse", "resample"]), default="refuse", show_default=True,
              help="Missing slices, uneven spacing or gantry tilt: fail the series, or interpolate onto a uniform grid.")
@click.option("--dtype", type=click.Choice(["auto", "float32"]), default="auto", show_default=True,
              help="auto keeps exact integers when the rescale allows it.")
def convert(input_path: Path, output: Path, series_uid: str | None, irregular: str, dtype: str) -> int:
    """Convert DICOM series under INPUT to NIfTI, like dcm2niix.

    OUTPUT is a .nii/.nii.gz file (one series: use --series when there are several) or a
    folder that receives one file per series, named by its pseudonymous case id and
    modality (never by patient or file names).

    \b
    Examples:
      voxpipe convert study/ ct.nii.gz --series 1.2.840.113619.2.55.3
      voxpipe convert study/ nifti/
    """
    from voxpipe_plugins.io_dicom.commands import convert as convert_series

    results, skipped = convert_series(input_path, output, _dicom_options(irregular, dtype), series_uid)
    for result in results:
        status = f"-> {result.output}" if result.output else f"failed: {result.error}"
        click.echo(f"{result.case_id}  {status}", err=True)
        for warning in result.warnings:
            click.echo(f"    warning: {warning}", err=True)
    if skipped:
        click.echo("passed over: " + ", ".join(f"{n} {reason}" for reason, n in skipped.most_common()), err=True)
    return EXIT_CASES_FAILED if any(r.error for r in results) else EXIT_OK


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--show-phi", is_flag=True, help="Also show patient name, ID, study date, series description and UID.")
def info(path: Path, as_json: bool, show_phi: bool) -> None:
    """List the DICOM series under PATH: modality, size, spacing, orientation, transfer syntax, warnings.

    Reads headers only. Identifying attributes are hidden unless --show-phi is given.

    \b
    Example:
      voxpipe info study/ --json
    """
    import json

    from voxpipe_plugins.io_dicom.commands import describe, render_table

    rows, skipped = describe(path, _dicom_options("refuse", "auto"), show_phi)
    if as_json:
        click.echo(json.dumps({"series": rows, "passed_over": dict(skipped)}, indent=2))
    else:
        click.echo(render_table(rows, skipped, show_phi))


@cli.command("sample-data")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--ct-series", type=click.IntRange(1, 50), default=1, show_default=True,
              help="How many synthetic thorax CT series (DICOM) to write; the demo uses 3.")
def sample_data(directory: Path, ct_series: int = 1) -> None:
    """Write small demo inputs to DIRECTORY: a real T1 MRI (from nibabel's test data),
    a 3D phantom NIfTI, a 2D Shepp-Logan PNG and synthetic thorax CT series (one DICOM
    file per slice). Nothing is downloaded.

    \b
    Example:
      voxpipe sample-data demo-input/ --ct-series 3 && voxpipe run configs/demo.yaml -i demo-input/ -o demo-output/
    """
    from voxpipe.sample_data import write_sample_data

    for path in write_sample_data(directory, ct_series=ct_series):
        click.echo(str(path))


from voxpipe.cli_deid import deid as _deid_command  # noqa: E402 - registered after the group exists

cli.add_command(_deid_command)

from voxpipe_plugins.heads.commands import test_command as _test_command  # noqa: E402 - click only; torch loads inside

cli.add_command(_test_command)

from voxpipe_plugins.match.commands import add_commands as _add_match_commands  # noqa: E402 - click only

_add_match_commands(cli)  # features collect|export, match, cluster, register, keypoints


if __name__ == "__main__":  # pragma: no cover
    main()

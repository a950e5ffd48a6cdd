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
from dataclasses import dataclass, field
from pathlib import Path

import click

from voxpipe import __version__
from voxpipe.cli_conventions import PATH_OR_URL, output_option, source_options
from voxpipe.command_line import (
    GLOBAL_VALUED,
    options_part,
    pull_globals,
    split_command,
)
from voxpipe.commands_spec import CORE_COMMANDS
from voxpipe.defaults import DEFAULT_WORKERS
from voxpipe.errors import VoxpipeError

EXIT_OK, EXIT_CASES_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


@dataclass
class Settings:
    """The global options of one invocation, and the registry they select (loaded once, on first use)."""

    debug: bool = False
    strict: bool = False
    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()
    _registry: object = field(default=None, repr=False)

    @classmethod
    def from_args(cls, args: list[str]) -> Settings:
        """Settings from the global options among ``args`` (wherever they stand)."""
        values: dict[str, list[str]] = {name: [] for name in GLOBAL_VALUED}
        for i, arg in enumerate(args):
            name, eq, value = arg.partition("=")
            if name in GLOBAL_VALUED:
                values[name].append(value if eq else (args[i + 1] if i + 1 < len(args) else ""))
        return cls(
            debug="--debug" in args, strict="--strict" in args, allow=tuple(values["--allow-plugin"]), block=tuple(values["--block-plugin"])
        )

    def registry(self, strict: bool | None = None):
        """The registry, loaded once per command; its problems are warned about once; ``--strict`` makes them an error."""
        from voxpipe.registry import PluginSelection, Registry, strict_from_env

        if self._registry is None:
            from voxpipe.input_sources import use_registry

            self._registry = Registry.load(PluginSelection.from_env(self.allow, self.block))
            use_registry(self._registry)  # URL inputs follow this line's --allow-plugin/--block-plugin too
            for problem in self._registry.problems:
                click.echo(f"warning: {problem}", err=True)
                if self.debug and problem.details:
                    _echo_debug(problem.details)
        if (self.strict or strict_from_env()) if strict is None else strict:
            self._registry.raise_for_problems()
        return self._registry


def _echo_debug(text: str) -> None:
    """A plugin's traceback under ``--debug``, redacted like every other one unless ``--show-phi``."""
    from voxpipe.input_redaction import redact_inputs, show_phi

    click.echo(text if show_phi() else redact_inputs(text) + "(input names redacted; add --show-phi to see them)", err=True, nl=False)


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in options_part(argv) or os.environ.get("VOXPIPE_DEBUG", "").lower() in {"1", "true", "yes"}


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning user errors into one line and an exit code."""
    from voxpipe import input_redaction as redaction
    from voxpipe.atomic import private_umask

    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    if debug:  # accepted anywhere on the line, not only before the command
        os.environ["VOXPIPE_DEBUG"] = "1"
    phi_setting = os.environ.get(redaction.SHOW_PHI_ENV)
    if "--show-phi" in options_part(args):  # global, or a command's own (info): either way tracebacks may show input names
        os.environ[redaction.SHOW_PHI_ENV] = "1"
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


class PluginCommandGroup(click.Group):
    """The ``voxpipe`` group: the core's commands, then each plugin's, resolved from the registry.

    The global options are read from the whole line first (before or after the command,
    unless the command has an option of that name, as ``info --show-phi``), so the registry
    that resolves a command already honours ``--allow-plugin/--block-plugin/--strict``.
    Listing commands (``voxpipe --help``) uses the specs' summaries and imports no command
    module; a plugin command's module is imported only to run it or show its help.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        head, name, tail = split_command(args)
        ctx.obj = Settings.from_args(options_part(args))  # to find the command: its own options are not known yet
        ctx.obj.strict = False  # so a --strict that turns out to be the command's own cannot fail the lookup
        if name is not None:
            command = self.get_command(ctx, name)
            keep = {opt for param in (command.params if command else ()) for opt in (*param.opts, *param.secondary_opts)}
            tail, pulled = pull_globals(tail, keep)
            settings = Settings.from_args(head + pulled)
            if (settings.allow, settings.block) == (ctx.obj.allow, ctx.obj.block):
                settings._registry = ctx.obj._registry  # the same selection: keep the registry already loaded
            ctx.obj = settings
            args = head + pulled + [name] + tail
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:  # say when the command may belong to a plugin left out
            registry = _settings(ctx)._registry
            if registry is not None and registry.skipped_by_selection and "No such command" in exc.message:
                exc.message += f" Plugins not loaded (allow/block list): {', '.join(registry.skipped_by_selection)}."
            raise

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*CORE_COMMANDS, *sorted(_settings(ctx).registry().commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        from voxpipe.commands_spec import load_command

        spec = _settings(ctx).registry().command(cmd_name)
        return load_command(spec) if spec is not None else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        with formatter.section("Core commands"):
            formatter.write_dl([(name, self.commands[name].get_short_help_str(limit)) for name in CORE_COMMANDS])
        by_plugin: dict[tuple[str, str], list] = {}
        for spec in sorted(_settings(ctx).registry().commands.values(), key=lambda s: s.name):
            by_plugin.setdefault((spec.plugin, spec.distribution), []).append(spec)
        for (plugin, distribution), specs in sorted(by_plugin.items()):
            with formatter.section(f"Commands from plugin {plugin} ({distribution})"):
                formatter.write_dl([(spec.name, spec.summary) for spec in specs])


def _settings(ctx: click.Context) -> Settings:
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = Settings()
    return root.obj


@click.group(cls=PluginCommandGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="voxpipe", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (input names redacted unless --show-phi).")
@click.option("--show-phi", is_flag=True, help="Let --debug tracebacks show input paths and file names (also VOXPIPE_SHOW_PHI=1).")
@click.option("--strict", is_flag=True, help="Fail if any plugin cannot be loaded (also VOXPIPE_STRICT=1).")
@click.option(
    "--allow-plugin",
    "allow",
    multiple=True,
    metavar="NAME",
    help="Load only these plugins (repeat or comma-separate; also VOXPIPE_PLUGINS_ALLOW).",
)
@click.option(
    "--block-plugin",
    "block",
    multiple=True,
    metavar="NAME",
    help="Never load these plugins, nor their stages or commands (also VOXPIPE_PLUGINS_BLOCK).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, strict: bool, allow: tuple[str, ...], block: tuple[str, ...], show_phi: bool = False) -> None:
    """VoxPipe: configured medical imaging pipelines over DICOM, NIfTI and 2D images.

    Global options may also follow the command (voxpipe run c.yaml --strict).

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
    _settings(ctx)  # parse_args made it from the whole line


def _overrides_option(function):
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="STAGE.FIELD=VALUE",
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
@click.option(
    "-i",
    "--input",
    "input_path",
    type=PATH_OR_URL,
    metavar="PATH|URL",
    help="File or folder with the cases, or a PACS URL (dicomweb+http(s)://, dimse://; docs/pacs.md) (default: the config's inputs.path).",
)
@click.option("-o", "--output", "output_dir", type=click.Path(path_type=Path), help="Output folder (default: the config's outputs.path).")
@_overrides_option
@click.option("--device", metavar="auto|cpu|cuda[:N]", help="Override the config's device (auto picks CUDA when there is one).")
@click.option("--force", is_flag=True, help="Redo cases whose outputs are already complete.")
@click.option(
    "--source-map",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write case id -> input path (TSV, mode 0600) here; keep it outside shared folders.",
)
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(min=0),
    default=DEFAULT_WORKERS,
    show_default=True,
    help="Worker processes (each case isolated; threads split between them); 0 runs in this process. "
    "With --executor dask-local: the cluster's workers.",
)
@click.option(
    "--executor",
    default="local",
    show_default=True,
    metavar="local|dask-local|tcp://HOST:PORT",
    help="Where cases run: local processes, a Dask LocalCluster started here, or an existing Dask scheduler.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop a case (and its worker) after this long and record it as failed.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Extra attempts for a case that failed with a transient I/O error (network shares).",
)
@click.option("--no-report", is_flag=True, help="Do not write OUTPUT/report.html.")
@source_options
@click.pass_obj
def run(
    settings: Settings,
    config: Path,
    input_path: Path | None,
    output_dir: Path | None,
    overrides: tuple[str, ...],
    device: str | None,
    force: bool,
    source_map: Path | None,
    workers: int = DEFAULT_WORKERS,
    executor: str = "local",
    timeout: float | None = None,
    retries: int = 2,
    no_report: bool = False,
    ae_title: str | None = None,
    ca_bundle: Path | None = None,
) -> int:
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
      voxpipe run configs/demo.yaml -i 'dicomweb+https://pacs.example.org/dicom-web?StudyInstanceUID=1.2.3' -o results/
    """
    from voxpipe.config import load_config
    from voxpipe.errors import UsageError
    from voxpipe.input_sources import opener_options
    from voxpipe.runner import run as run_pipeline

    registry = settings.registry()
    validated = load_config(config, registry, overrides=overrides, device=device)
    input_path = input_path or _from_config(validated, "inputs")
    output_dir = output_dir or _from_config(validated, "outputs")
    if input_path is None or output_dir is None:
        missing = "-i/--input" if input_path is None else "-o/--output"
        raise UsageError(
            f"missing {missing}: give it on the command line or in the config's {'inputs' if input_path is None else 'outputs'}.path"
        )

    from voxpipe.progress import Progress

    progress = Progress()
    summary = run_pipeline(
        validated,
        registry,
        input_path,
        output_dir,
        force=force,
        on_case=progress.case,
        source_map=source_map,
        workers=workers,
        executor=executor,
        timeout=timeout,
        retries=retries,
        report=not no_report,
        on_start=progress.start,
        source_options=opener_options(ae_title, ca_bundle),
    )
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


def _from_config(validated, section: str) -> Path | str | None:
    from voxpipe.input_sources import source_text

    value = getattr(validated.config, section).path
    if value and source_text(value) is not None:  # a PACS URL is not relative to the config's folder
        return source_text(value)
    return (validated.config_dir / value) if value else None


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List the stages, trainers and commands of every installed plugin, and any problems.

    \b
    Examples:
      voxpipe plugins
      voxpipe plugins show segment.otsu
      voxpipe plugins check my_plugin
      voxpipe plugins new my_plugin -o ~/src
    """
    if ctx.invoked_subcommand is not None:
        return
    from voxpipe import cli_plugins

    registry = ctx.obj.registry(strict=False)  # the listing (and --json) always comes out, problems inside it
    click.echo(cli_plugins.render_json(registry) if as_json else cli_plugins.render_list(registry))
    ctx.obj.registry()  # then --strict fails the command


@plugins.command("show")
@click.argument("stage_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (also `voxpipe plugins --json show STAGE_ID`).")
@click.pass_context
def plugins_show(ctx: click.Context, stage_id: str, as_json: bool = False) -> None:
    """Show STAGE_ID's parameters: types, required or default, bounds and descriptions.

    \b
    Example:
      voxpipe plugins show segment.threshold
      voxpipe plugins show segment.threshold --json
    """
    from voxpipe import cli_plugins

    registry = ctx.obj.registry()
    if as_json or (ctx.parent is not None and ctx.parent.params.get("as_json")):  # --json before or after `show`
        click.echo(cli_plugins.stage_json(registry, stage_id))
    else:
        click.echo(cli_plugins.render_stage(registry, stage_id))


@plugins.command("check")
@click.argument("name", required=False)
@click.pass_obj
def plugins_check(settings: Settings, name: str | None) -> int:
    """Import every factory of plugin NAME (default: all), build each stage with its defaults and run it on a tiny case.

    Prints one line per problem; exits 1 when there is any.

    \b
    Example:
      voxpipe plugins check my_plugin
    """
    check_plugins = _author_tool("voxpipe.plugin_check", "check_plugins", "plugins check")
    notes: list[str] = []
    problems = check_plugins(settings.registry(strict=False), name, notes)
    for problem in problems:
        click.echo(problem)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{len(problems)} problem(s)" if problems else "no problems found", err=True)
    return EXIT_CASES_FAILED if problems else EXIT_OK


@plugins.command("new")
@click.argument("name")
@click.option(
    "-o",
    "--output",
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to create the package NAME in (--dir is the older spelling).",
)
def plugins_new(name: str, directory: Path) -> None:
    """Write a working plugin package NAME (a stage, a command, a test, pyproject.toml) to start from.

    \b
    Example:
      voxpipe plugins new my_plugin -o ~/src && pip install -e ~/src/my_plugin
    """
    write_plugin_package = _author_tool("voxpipe.plugin_template", "write_plugin_package", "plugins new")
    path = write_plugin_package(name, directory)
    click.echo(f"wrote {path}; install it with `pip install -e {path}` and run its test with `pytest {path}`")


def _author_tool(module: str, function: str, command: str):
    """A plugin-author helper, imported only when its command runs."""
    import importlib

    from voxpipe.errors import UsageError

    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError):
        raise UsageError(f"`voxpipe {command}` is not available in this installation ({module}.{function} is missing)") from None


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@output_option("Folder for checkpoints, the learning curve and the training log.", required=True, dest="output_dir")
@_overrides_option
@click.option("--device", metavar="auto|cpu|cuda[:N]", help="Override the config's device.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUTPUT (an existing OUTPUT is refused without it).")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as JSON on stdout instead of `name: value` lines.")
@click.pass_obj
def train(
    settings: Settings, config: Path, output_dir: Path, overrides: tuple[str, ...], device: str | None, resume: bool, as_json: bool = False
) -> int:
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

    context = StageContext(
        device=resolve_device(validated.config.device), config_dir=validated.config_dir, stage_id=f"train.{validated.trainer.task}"
    )
    trainer = build_trainer(validated.trainer, validated.training, validated, context)
    prepare_output(output_dir)
    summary = trainer.run(output_dir, resume=resume) or {}
    from voxpipe.cli_conventions import print_metrics

    print_metrics(summary, as_json)  # stdout, like `voxpipe test`: the result, not a log line
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    main()

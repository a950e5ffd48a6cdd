"""The option names every ``voxpipe`` command shares (docs/cli.md), as click decorators and helpers.

Commands, core and plugin ones, take these instead of spelling their own, so a user who knows
one command (or dcm2niix / TotalSegmentator's ``-i/-o``) can guess the others. Light at import
(click only).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from voxpipe.errors import UsageError


class PathOrUrl(click.ParamType):
    """A local path (a :class:`~pathlib.Path`) or, kept as typed, a ``scheme://`` URL (a ``str``).

    click's ``Path`` type would turn ``dicomweb+http://host`` into ``dicomweb+http:/host`` (pathlib
    collapses ``//``), so commands that read URL inputs (:mod:`voxpipe.input_sources`) take this.
    """

    name = "path_or_url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from voxpipe.input_sources import source_text

        if isinstance(value, Path):
            return value
        text = str(value)
        return text if source_text(text) == text else Path(text)


PATH_OR_URL = PathOrUrl()


def input_option(
    help: str, *, required: bool = False, multiple: bool = False, extra_names: tuple[str, ...] = (), urls: bool = False
) -> Callable:
    """``-i/--input PATH`` (and, for a command that named it otherwise, its old name as an alias).

    With ``urls=True`` a ``scheme://`` URL is passed on as typed (a ``str``) for :func:`voxpipe.input_sources.open_input`.
    """
    return click.option(
        "-i",
        "--input",
        *extra_names,
        "input_option",
        type=PATH_OR_URL if urls else click.Path(path_type=Path),
        required=required,
        multiple=multiple,
        metavar="PATH|URL" if urls else None,
        help=help,
    )


def output_option(help: str, *, folder: bool = True, required: bool = False, dest: str = "output") -> Callable:
    """``-o/--output PATH``: a folder, or a file where the result is one file."""
    kind = click.Path(file_okay=not folder, dir_okay=folder, path_type=Path)
    return click.option("-o", "--output", dest, type=kind, required=required, metavar="DIR" if folder else "FILE", help=help)


def force_option(help: str = "Overwrite outputs that already exist (without it, existing outputs are an error).") -> Callable:
    """``--force``: the one way to overwrite; no command overwrites silently."""
    return click.option("--force", is_flag=True, help=help)


def json_option(help: str = "Print machine-readable JSON on stdout instead of the table.") -> Callable:
    """``--json``: machine output, wherever a command prints a table."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def feature_set_option(help: str) -> Callable:
    """``--feature-set NAME`` (repeatable), with ``--set NAME`` kept as a hidden, deprecated alias.

    ``--set`` means STAGE.FIELD=VALUE everywhere else; the old spelling still works here so scripts
    keep running, and says once, on stderr, what to write instead.
    """

    def decorate(function: Callable) -> Callable:
        function = click.option(
            "--set",
            "deprecated_sets",
            multiple=True,
            hidden=True,
            callback=_warn_deprecated_set,
            expose_value=True,
            help="Deprecated spelling of --feature-set.",
        )(function)
        return click.option("--feature-set", "sets", multiple=True, metavar="NAME", help=help)(function)

    return decorate


def _warn_deprecated_set(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    if value:
        click.echo("warning: --set NAME is deprecated here (--set is for STAGE.FIELD=VALUE overrides); use --feature-set NAME", err=True)
    return value


def feature_sets(sets: tuple[str, ...], deprecated_sets: tuple[str, ...]) -> tuple[str, ...]:
    """The feature sets asked for, by --feature-set or the deprecated --set."""
    return tuple(sets) + tuple(deprecated_sets)


def one_path(positional: Path | None, option: Path | None, what: str, option_name: str) -> Path:
    """The path given as the positional alias or as the option, exactly once."""
    if positional is not None and option is not None and positional != option:
        raise UsageError(f"{what} given twice ({option_name} and as an argument); give it once, as {option_name}")
    chosen = option if option is not None else positional
    if chosen is None:
        raise UsageError(f"missing {what}: give it with {option_name}")
    return chosen


def refuse_overwrite(paths: Iterable[Path], force: bool, where: str = "-o/--output") -> None:
    """Stop before writing when an output would replace an existing file, unless ``--force``."""
    if force:
        return
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing:
        names = ", ".join(p.name for p in existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise UsageError(f"{where}: {names} already exists; add --force to overwrite, or choose another output")


def echo_json(data: Any) -> None:
    """Machine output: one strict JSON document on stdout (NaN and infinities become null)."""
    click.echo(json.dumps(_finite(data), indent=2, default=str, allow_nan=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:  # numpy scalars
        return _finite(value.item())
    return value


def print_metrics(metrics: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    """Final metrics of ``train`` and ``test``, printed the same way: on stdout, as text or (``--json``) JSON."""
    if as_json:
        echo_json(metrics)
    elif text is not None:
        click.echo(text)
    else:
        for key, value in metrics.items():
            click.echo(f"{key}: {value}")


def source_options(function: Callable) -> Callable:
    """``--ae-title`` and ``--ca-bundle``: how a PACS URL input (``dimse://``, ``dicomweb+https://``) is reached."""
    function = click.option(
        "--ca-bundle",
        type=click.Path(dir_okay=False, path_type=Path),
        help="dicomweb+https:// inputs: PEM file of the CA certificates to trust (also VOXPIPE_DICOMWEB_CA_BUNDLE).",
    )(function)
    return click.option(
        "--ae-title",
        metavar="AET",
        help="dimse:// inputs: VoxPipe's own (calling) AE title (default VOXPIPE; also VOXPIPE_AE_TITLE).",
    )(function)

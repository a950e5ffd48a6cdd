"""Every command, core and plugin, follows one convention (docs/cli.md), checked on the click tree itself.

The tree is walked the way `voxpipe --help` finds it (the lazy group's list_commands/get_command),
so a plugin command added later is checked too. Exceptions are listed here, each with its reason,
and the same list is in docs/cli.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest

from voxpipe.cli import cli

ROOT = Path(__file__).resolve().parents[1]

# Commands whose --set is a config override STAGE.FIELD=VALUE: the only meaning --set may have.
CONFIG_OVERRIDE_COMMANDS = {"run", "validate", "train", "test", "listen"}

# Commands that print a table (or a list of rows) and so must offer --json.
TABLE_COMMANDS = {"plugins", "plugins show", "match", "cluster", "evaluate", "train", "test", "info", "convert"}

# Inputs that are not one -i/--input, with the reason (docs/cli.md, "Exceptions").
INPUT_EXCEPTIONS = {
    "run": "CONFIG is the subject; the data is -i/--input",
    "validate": "CONFIG is the subject; there is no data",
    "train": "CONFIG is the subject; its training: section names the data",
    "test": "CONFIG is the subject; --checkpoint names the weights",
    "register": "two inputs with roles, FIXED and MOVING, as in ANTs and elastix",
    "keypoints": "two inputs with roles, FIXED and MOVING",
    "evaluate": "inputs with roles: --ref and --pred, or --store for retrieval",
    "plugins show": "STAGE_ID is a registry id, not a path",
    "plugins check": "NAME is a plugin name, not a path",
    "plugins new": "NAME is the new package's name",
}

# Arguments that name a path to read or write: each must be an alias of -i/--input or -o/--output.
INPUT_ARGUMENT_NAMES = {"input", "input_path", "store_arg", "run_outputs", "path"}
PATH_ARGUMENT_NAMES = INPUT_ARGUMENT_NAMES | {"output", "output_path", "output_arg", "directory"}
PATH_ARGUMENT_EXCEPTIONS = {("register", "fixed"), ("register", "moving"), ("keypoints", "fixed"), ("keypoints", "moving")}

# Commands with -o/--output that may write over what is there without --force, with the reason.
FORCE_EXCEPTIONS = {
    "train": "--resume continues a run; an existing OUTPUT is refused without it",
    "deid": "a rerun rewrites the same keyed file names from the same inputs (resumable); never another tree's files",
    "plugins new": "refuses an existing package folder; there is nothing to force",
}

# Option spellings that the convention replaces, and what replaces them.
FORBIDDEN_SPELLINGS = {
    "--out": "-o/--output",
    "--outdir": "-o/--output",
    "--output-dir": "-o/--output",
    "--in": "-i/--input",
    "--input-dir": "-i/--input",
    "--overwrite": "--force",
    "--format-json": "--json",
}


def _walk() -> list[tuple[str, click.Command]]:
    """Every command and subcommand, by its full name (`features export`)."""
    ctx = click.Context(cli, info_name="voxpipe")
    found: list[tuple[str, click.Command]] = []

    def visit(group: click.Group, prefix: str, parent: click.Context) -> None:
        for name in group.list_commands(parent):
            command = group.get_command(parent, name)
            assert command is not None, f"`voxpipe {prefix}{name}` is listed but cannot be loaded"
            full = f"{prefix}{name}"
            found.append((full, command))
            if isinstance(command, click.Group):
                visit(command, f"{full} ", click.Context(command, info_name=name, parent=parent))

    visit(cli, "", ctx)
    return found


COMMANDS = _walk()
IDS = [name for name, _ in COMMANDS]


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]


def _names(param: click.Parameter) -> set[str]:
    return {*param.opts, *param.secondary_opts}


def _find(command: click.Command, spelling: str) -> click.Option | None:
    return next((p for p in _options(command) if spelling in _names(p)), None)


def test_the_walk_sees_core_and_plugin_commands_and_subcommands():
    assert {"run", "validate", "train", "plugins", "plugins show", "plugins check", "plugins new"} <= set(IDS)
    assert {"deid", "evaluate", "test", "convert", "info", "match", "cluster", "register", "keypoints", "sample-data"} <= set(IDS)
    assert {"features", "features collect", "features export"} <= set(IDS)


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=IDS)
def test_every_option_has_help_and_every_argument_is_described(name, command):
    for option in _options(command):
        if option.hidden:
            continue
        assert option.help and len(option.help) > 10, f"`voxpipe {name}` {option.opts[0]} has no help text"
    text = (command.help or "") + " " + " ".join(o.help or "" for o in _options(command))
    for argument in (p for p in command.params if isinstance(p, click.Argument)):
        for shown in re.findall(r"[A-Z_]+", argument.metavar or argument.name.upper()):
            assert shown in text, f"`voxpipe {name}`: argument {shown} is not described in its help"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=IDS)
def test_set_means_config_overrides_only(name, command):
    option = _find(command, "--set")
    if option is None:
        return
    if name in CONFIG_OVERRIDE_COMMANDS:
        assert option.metavar == "STAGE.FIELD=VALUE" and not option.hidden, f"`voxpipe {name} --set` is not the config override"
    else:  # only the deprecated spelling of --feature-set, hidden, beside the real option
        assert option.hidden and _find(command, "--feature-set") is not None, f"`voxpipe {name} --set` must be a config override"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=IDS)
def test_input_and_output_names_follow_the_convention(name, command):
    for option in _options(command):
        names = _names(option)
        for spelling, replacement in FORBIDDEN_SPELLINGS.items():
            assert spelling not in names, f"`voxpipe {name}` {spelling}: use {replacement}"
        assert ("-o" in names) == ("--output" in names), f"`voxpipe {name}`: -o and --output go together ({sorted(names)})"
        assert ("-i" in names) == ("--input" in names), f"`voxpipe {name}`: -i and --input go together ({sorted(names)})"
    for argument in (p for p in command.params if isinstance(p, click.Argument)):
        if argument.name not in PATH_ARGUMENT_NAMES or (name, argument.name) in PATH_ARGUMENT_EXCEPTIONS:
            continue
        alias = "--input" if argument.name in INPUT_ARGUMENT_NAMES else "--output"
        assert _find(command, alias) is not None, f"`voxpipe {name}`: argument {argument.name} needs {alias} (it may stay as an alias)"
        assert not argument.required, f"`voxpipe {name}`: argument {argument.name} is only an alias of {alias}, so it is optional"
    takes_paths = any(isinstance(p, click.Argument) and p.name in INPUT_ARGUMENT_NAMES for p in command.params)
    if takes_paths and name not in INPUT_EXCEPTIONS and not isinstance(command, click.Group):
        assert _find(command, "--input") is not None, f"`voxpipe {name}` reads a path but has no -i/--input"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=IDS)
def test_outputs_are_overwritten_only_with_force(name, command):
    if _find(command, "--output") is None or name in FORCE_EXCEPTIONS:
        return
    assert _find(command, "--force") is not None, f"`voxpipe {name}` writes -o/--output but has no --force"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=IDS)
def test_defaults_are_shown(name, command):
    for option in _options(command):
        unset = option.default is None or option.default == () or type(option.default).__name__ == "Sentinel"  # click's UNSET
        if option.is_flag or option.hidden or unset or option.required:
            continue
        assert option.show_default, f"`voxpipe {name}` {option.opts[0]}: default {option.default!r} is not shown (show_default=True)"


@pytest.mark.parametrize("name", sorted(TABLE_COMMANDS))
def test_commands_printing_tables_accept_json(name):
    command = dict(COMMANDS)[name]
    option = _find(command, "--json")
    assert option is not None and option.is_flag, f"`voxpipe {name}` prints a table but has no --json"


def test_space_default_is_the_same_everywhere():
    from voxpipe.defaults import DEFAULT_SPACE

    spaces = {name: _find(command, "--space").default for name, command in COMMANDS if _find(command, "--space") is not None}
    assert set(spaces) >= {"match", "cluster", "evaluate"} and set(spaces.values()) == {DEFAULT_SPACE} == {"raw"}, spaces


def test_the_exceptions_are_documented():
    text = (ROOT / "docs" / "cli.md").read_text()
    for name in {*INPUT_EXCEPTIONS, *FORCE_EXCEPTIONS}:
        assert f"`{name}`" in text, f"docs/cli.md does not list the exception for `voxpipe {name}`"
    for rule in ("-i/--input", "-o/--output", "--force", "--json", "--set", "--feature-set", "show_default"):
        assert rule in text


@pytest.mark.parametrize("command", [["match"], ["cluster"], ["evaluate"], ["features", "export"]])
def test_deprecated_set_alias_is_not_shown(cli, command):
    """`--help` shows --feature-set only: the old --set works (tests/test_matching.py) but is not advertised."""
    out = cli(*command, "--help").stdout
    assert "--feature-set" in out and not re.search(r"^\s+--set\b", out, re.M)


# `plugins show`: types as a person reads them, required vs default, valid JSON in both positions.


@pytest.mark.parametrize("position", ["before", "after"])
def test_plugins_show_json_in_both_positions(cli, position):
    args = (
        ["plugins", "--json", "show", "segment.threshold"] if position == "before" else ["plugins", "show", "segment.threshold", "--json"]
    )
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {row["name"]: row for row in data["parameters"]}
    assert data["id"] == "segment.threshold"
    assert rows["ranges"]["required"] is True and rows["ranges"]["type"].startswith("list of Range {name: str, min: float?, max: float?")
    assert rows["key"] == {**rows["key"], "default": "image", "required": False, "type": "str"}
    assert rows["mask_key"]["default"] is None and rows["mask_key"]["type"] == "str?"


def test_plugins_show_text_reads_like_a_config(cli):
    out = cli("plugins", "show", "write.nifti").stdout
    assert re.search(r"^  keys\s+list of str, default \[image\]", out, re.M), out
    assert re.search(r"^  compress\s+bool, default true", out, re.M), out
    threshold = cli("plugins", "show", "segment.threshold").stdout
    assert re.search(r"^  ranges\s+list of Range \{name: str, min: float\?, max: float\?.*\}, required", threshold, re.M), threshold
    assert re.search(r"^  key\s+str, default image  \[min length 1, max length 64\]", threshold, re.M), threshold


def test_every_stage_shows_readable_types_and_json_defaults():
    """No pydantic internals in any stage's rendering, and every default survives a JSON round trip as a value."""
    from voxpipe import cli_plugins
    from voxpipe.api import load_registry

    registry = load_registry()
    for stage_id in sorted(registry.stages):
        data = json.loads(cli_plugins.stage_json(registry, stage_id))
        text = cli_plugins.render_stage(registry, stage_id)
        for noise in ("Annotated", "FieldInfo", "<class", "typing.", "voxpipe_plugins.", "default required", "PydanticUndefined"):
            assert noise not in text, f"{stage_id}: `{noise}` in plugins show"
        for row in data["parameters"]:
            assert isinstance(row["required"], bool)
            if row["required"]:
                assert row["default"] is None
            assert not (isinstance(row["default"], str) and row["default"][:1] in "'\"" and row["default"][-1:] in "'\""), (
                f"{stage_id}.{row['name']}: default {row['default']!r} is a Python repr"
            )


def test_type_text_family():
    from typing import Annotated, Literal

    from pydantic import BaseModel, Field

    from voxpipe.param_types import type_text, value_text

    class Inner(BaseModel):
        a: int
        b: list[str] | None = None

    cases = {
        Annotated[str, Field(min_length=1)]: "str",
        list[Annotated[str, Field(min_length=1)]]: "list of str",
        str | None: "str?",
        int | float: "int or float",
        int | float | None: "(int or float)?",
        Literal["a", "b"]: "one of a, b",
        tuple[int, int]: "[int, int]",
        tuple[float, ...]: "list of float",
        dict[str, int]: "map of str to int",
        Path: "path",
        list[Inner]: "list of Inner {a: int, b: list of str?}",
    }
    for annotation, expected in cases.items():
        assert type_text(annotation) == expected, annotation
    assert [value_text(v) for v in ("image", ["image"], None, True, 2.5, "yes", Path("x"))] == [
        "image",
        "[image]",
        "null",
        "true",
        "2.5",
        "'yes'",
        "x",
    ]


GLOBALS = [["--strict"], ["--debug"], ["--block-plugin", "deid"], ["--allow-plugin", "io_nifti,segment,samples,evaluate"]]


@pytest.mark.parametrize("global_option", GLOBALS, ids=lambda g: g[0])
@pytest.mark.parametrize(
    "command", [["plugins", "show", "segment.otsu"], ["validate", "{config}"], ["evaluate"]], ids=["plugins-show", "validate", "evaluate"]
)
def test_global_options_before_or_after_the_command(cli, command, global_option):
    """Core and plugin commands alike: the same outcome with the global option on either side."""
    from tests.conftest import DEMO_CONFIG

    args = [str(DEMO_CONFIG) if a == "{config}" else a for a in command]
    before, after = cli(*global_option, *args), cli(*args, *global_option)
    assert "No such option" not in before.stderr + after.stderr
    assert before.exit_code == after.exit_code and before.stdout == after.stdout

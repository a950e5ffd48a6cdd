"""Commands are plugin contributions: a third party's command works like a built-in one, and every
built-in command but run/validate/plugins/train comes from its family through the same hook."""

from __future__ import annotations

import json
import sys

import pytest

from tests import test_registry
from tests.test_registry import GOOD_PLUGIN, make_dist
from voxpipe.commands_spec import CORE_COMMANDS, CommandSpec, load_command
from voxpipe.errors import PluginError
from voxpipe.registry import PluginSelection, Registry

plugin_dir = test_registry.plugin_dir  # the fixture: fake distributions on sys.path, forgotten afterwards

COMMAND_PLUGIN = (
    GOOD_PLUGIN
    + """
import click
from voxpipe.commands_spec import CommandSpec

@hookimpl
def voxpipe_register_commands(register):
    register(CommandSpec(name="{module}-hello", summary="Say hello from {module}.", factory="{module}_cmd:hello"))
"""
)

COMMAND_MODULE = """
import click

@click.command("hello")
@click.argument("who")
@click.option("--shout", is_flag=True)
@click.option("--debug", "own_debug", is_flag=True, help="this command's own --debug")
def hello(who, shout, own_debug):
    \"\"\"Greet WHO.\"\"\"
    text = f"hello {who}" + (" (own debug)" if own_debug else "")
    click.echo(text.upper() if shout else text)
"""

# Which family each built-in command comes from (all from the `voxpipe` distribution).
BUILTIN_COMMANDS = {
    "convert": "io_dicom",
    "listen": "pacs",
    "bundle": "bundle",
    "info": "io_dicom",
    "deid": "deid",
    "evaluate": "evaluate",
    "test": "heads",
    "features": "match",
    "match": "match",
    "cluster": "match",
    "register": "match",
    "keypoints": "match",
    "sample-data": "samples",
}


def add_command_plugin(root, name: str = "vp_cmd") -> str:
    make_dist(root, name.replace("_", "-"), name, COMMAND_PLUGIN)
    (root / f"{name}_cmd.py").write_text(COMMAND_MODULE)
    return f"{name}-hello"


def test_a_third_party_command_runs_and_is_listed(plugin_dir, cli):
    command = add_command_plugin(plugin_dir)
    result = cli(command, "world", "--shout")
    assert result.exit_code == 0 and result.stdout.strip() == "HELLO WORLD", result.stderr
    help_text = cli("--help").stdout
    section = help_text.split("Commands from plugin vp_cmd (vp-cmd)")[1]
    assert command in section and "Say hello from vp_cmd." in section
    assert help_text.index("Core commands:") < help_text.index("Commands from plugin io_dicom") < help_text.index("vp_cmd (vp-cmd)")
    assert f"{command}" in cli("plugins").stdout
    listed = json.loads(cli("plugins", "--json").stdout)["commands"]
    assert {
        "name": command,
        "summary": "Say hello from vp_cmd.",
        "plugin": "vp_cmd",
        "distribution": "vp-cmd",
        "version": "1.2.3",
    } in listed
    assert "Greet WHO." in cli(command, "--help").stdout


def test_listing_commands_imports_no_command_module(plugin_dir, cli):
    add_command_plugin(plugin_dir)
    for module in [m for m in sys.modules if m.startswith("vp_cmd")]:
        del sys.modules[module]
    assert cli("--help").exit_code == 0 and cli("plugins").exit_code == 0
    assert "vp_cmd_cmd" not in sys.modules, "--help must list commands from their summaries"
    assert cli("vp_cmd-hello", "--help").exit_code == 0 and "vp_cmd_cmd" in sys.modules


@pytest.mark.parametrize(
    "args",
    [
        ["--block-plugin", "vp_cmd", "{cmd}", "x"],
        ["{cmd}", "x", "--block-plugin", "vp_cmd"],
        ["{cmd}", "x", "--block-plugin=vp_cmd"],
        ["--allow-plugin", "io_nifti", "{cmd}", "x"],
        ["{cmd}", "--allow-plugin=io_nifti,segment", "x"],
    ],
)
def test_allow_and_block_apply_to_commands(plugin_dir, cli, args):
    command = add_command_plugin(plugin_dir)
    result = cli(*[a.replace("{cmd}", command) for a in args])
    assert result.exit_code == 2 and f"No such command '{command}'" in result.stderr
    assert "Plugins not loaded (allow/block list): " in result.stderr and "vp_cmd" in result.stderr
    assert command not in cli(*[a for a in args if a not in ("{cmd}", "x")], "--help").stdout


def test_block_by_environment_removes_commands(plugin_dir, cli, monkeypatch):
    command = add_command_plugin(plugin_dir)
    monkeypatch.setenv("VOXPIPE_PLUGINS_BLOCK", "vp_cmd")
    assert cli(command, "x").exit_code == 2


def test_a_commands_own_option_named_like_a_global_one_stays_its_own(plugin_dir, cli):
    command = add_command_plugin(plugin_dir)
    result = cli(command, "x", "--debug")
    assert result.exit_code == 0 and result.stdout.strip() == "hello x (own debug)"
    assert cli("--debug", command, "x").stdout.strip() == "hello x"


@pytest.mark.parametrize("flag", ["--strict", "--debug", "--show-phi"])
@pytest.mark.parametrize("command", [["plugins"], ["plugins", "show", "segment.otsu"], ["validate", "{config}"]])
def test_global_options_are_accepted_after_the_command(cli, flag, command):
    from tests.conftest import DEMO_CONFIG

    args = [str(DEMO_CONFIG) if a == "{config}" else a for a in command]
    result = cli(*args, flag)
    assert result.exit_code == 0, result.stderr
    assert "No such option" not in result.stderr


def test_strict_after_the_command_fails_on_a_broken_plugin(plugin_dir, cli):
    make_dist(plugin_dir, "vp-broken", "vp_broken", "raise ImportError('nope')")
    assert cli("plugins", "show", "segment.otsu").exit_code == 0
    result = cli("plugins", "show", "segment.otsu", "--strict")
    assert result.exit_code == 2 and "strict mode" in result.stderr


def test_two_plugins_claiming_one_command_name_both_named(plugin_dir, cli):
    add_command_plugin(plugin_dir, "vp_cmd")
    body = COMMAND_PLUGIN.replace('name="{module}-hello"', 'name="vp_cmd-hello"')
    make_dist(plugin_dir, "vp-other", "vp_other", body)
    (plugin_dir / "vp_other_cmd.py").write_text(COMMAND_MODULE)
    result = cli("vp_cmd-hello", "x")
    assert result.exit_code == 2
    assert result.error_lines == [
        (
            "error: command `vp_cmd-hello` is registered by both plugin `vp_cmd` (vp-cmd 1.2.3) and plugin `vp_other` (vp-other 1.2.3); "
            "neither is used: block one with --block-plugin NAME or VOXPIPE_PLUGINS_BLOCK"
        )
    ]
    assert cli("--block-plugin", "vp_other", "vp_cmd-hello", "x").stdout.strip() == "hello x"
    assert cli("plugins").exit_code == 0  # everything else still works


@pytest.mark.parametrize("core", CORE_COMMANDS)
def test_a_plugin_command_named_like_a_core_one_is_refused(plugin_dir, cli, core):
    make_dist(plugin_dir, "vp-shadow", "vp_shadow", COMMAND_PLUGIN.replace('name="{module}-hello"', f'name="{core}"'))
    (plugin_dir / "vp_shadow_cmd.py").write_text(COMMAND_MODULE)
    registry = Registry.load()
    [problem] = registry.problems
    assert problem.kind == "conflict" and f"the core command `voxpipe {core}`" in str(problem) and "vp_shadow" in str(problem)
    assert core not in registry.commands
    help_text = cli(core, "--help")
    assert help_text.exit_code == 0 and "Greet WHO" not in help_text.stdout  # the core's command, never the plugin's


@pytest.mark.parametrize(
    "factory, says",
    [
        ("vp_bad_cmd:missing", "cannot be loaded: AttributeError"),
        ("vp_nowhere_cmd:hello", "cannot be loaded: ModuleNotFoundError"),
        ("vp_bad_cmd:NOT_A_COMMAND", "is a int, not a click command"),
        ("vp_bad_cmd:hello", "cannot be loaded: RuntimeError: import-time failure"),
    ],
)
def test_a_broken_command_factory_is_one_line_naming_the_plugin(plugin_dir, cli, factory, says):
    body = COMMAND_PLUGIN.replace('factory="{module}_cmd:hello"', f'factory="{factory}"')
    make_dist(plugin_dir, "vp-bad", "vp_bad", body)
    module = COMMAND_MODULE + "\nNOT_A_COMMAND = 3\n"
    if "RuntimeError" in says:
        module += "raise RuntimeError('import-time failure')\n"
    (plugin_dir / "vp_bad_cmd.py").write_text(module)
    result = cli("vp_bad-hello", "x")
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "command `vp_bad-hello` from plugin `vp_bad` (vp-bad 1.2.3)" in result.error_lines[0] and says in result.error_lines[0]
    if "RuntimeError" in says:
        debug = cli("--debug", "vp_bad-hello", "x")
        assert "Traceback" in debug.stderr and "vp_bad_cmd.py" in debug.stderr  # the plugin's own frame


@pytest.mark.parametrize(
    "spec, says",
    [
        ('CommandSpec(name="Hello", summary="s", factory="m:a")', "command name 'Hello' must be lower case"),
        ('CommandSpec(name="hello world", summary="s", factory="m:a")', "must be lower case"),
        ('CommandSpec(name="hello", summary="", factory="m:a")', "summary must be one non-empty line"),
        ('CommandSpec(name="hello", summary="two\\nlines", factory="m:a")', "summary must be one non-empty line"),
        ('CommandSpec(name="hello", summary="s", factory="no_colon")', "must be 'module:attribute'"),
        ('CommandSpec(name="hello", summary="s", factory=print)', "factory must be a 'module:attribute' string or a click command"),
        ('dict(name="hello")', "registered dict as a command, expected voxpipe.plugin.CommandSpec"),
    ],
)
def test_a_malformed_command_spec_skips_the_plugin(plugin_dir, spec, says):
    body = (
        GOOD_PLUGIN
        + f"""
from voxpipe.commands_spec import CommandSpec

@hookimpl
def voxpipe_register_commands(register):
    register({spec})
"""
    )
    make_dist(
        plugin_dir,
        "vp-malformed",
        "vp_malformed",
        body.replace("{", "{{").replace("}", "}}").replace("{{module}}", "{module}").replace("{{stage_id}}", "{stage_id}"),
    )
    registry = Registry.load()
    [problem] = registry.problems
    assert problem.kind == "skipped" and problem.plugin == "vp_malformed" and says in problem.reason, problem.reason
    assert "vp_malformed.stage" not in registry.stages


@pytest.mark.parametrize("name, family", sorted(BUILTIN_COMMANDS.items()))
def test_builtin_commands_come_from_their_families(registry, name, family):
    spec = registry.commands[name]
    assert (spec.plugin, spec.distribution) == (family, "voxpipe")
    assert isinstance(spec.factory, str) and spec.factory.startswith(f"voxpipe_plugins.{family}.")
    command = load_command(spec)
    assert command.name == name


def test_the_core_keeps_only_platform_commands(registry):
    from voxpipe.cli import cli as group

    assert sorted(group.commands) == sorted(CORE_COMMANDS)
    assert set(registry.commands) == set(BUILTIN_COMMANDS), "a built-in command was added or lost: update BUILTIN_COMMANDS"


@pytest.mark.parametrize("name, family", sorted(BUILTIN_COMMANDS.items()))
def test_blocking_a_family_removes_its_commands(cli, name, family):
    assert cli(name, "--help").exit_code == 0
    for args in (["--block-plugin", family, name, "--help"], [name, "--help", "--block-plugin", family]):
        result = cli(*args)
        assert result.exit_code == 2 and f"No such command '{name}'" in result.stderr
    assert name not in cli("--block-plugin", family, "--help").stdout.split("Core commands:")[1].split()


def test_a_command_object_is_accepted_as_factory():
    import click

    @click.command("direct")
    def direct():
        click.echo("direct")

    spec = CommandSpec(name="direct", summary="s", factory=direct, plugin="p", distribution="d", version="1")
    assert load_command(spec) is direct


def test_a_contested_command_lookup_raises():
    registry = Registry.load(PluginSelection(allow=frozenset({"io_dicom"})))
    assert set(registry.commands) == {"convert", "info"}
    registry.contested[("command", "info")] = "command `info` is registered by both ..."
    with pytest.raises(PluginError, match="registered by both"):
        registry.command("info")


def test_plugins_new_and_check_are_wired(cli, tmp_path):
    """`voxpipe plugins new|check` call the author's-kit functions (their own tests cover what they do)."""
    made = cli("plugins", "new", "vp_tmpl", "--dir", tmp_path)
    assert made.exit_code == 0, made.stderr
    assert (tmp_path / "vp_tmpl").is_dir() and "pip install -e" in made.stdout
    bad = cli("plugins", "new", "Bad Name", "--dir", tmp_path)
    assert bad.exit_code == 2 and len(bad.error_lines) == 1 and "Traceback" not in bad.stderr
    checked = cli("plugins", "check", "samples")
    assert checked.exit_code == 0 and "no problems found" in checked.stderr, checked.stdout + checked.stderr

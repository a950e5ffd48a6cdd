"""Plugin discovery: broken plugins are reported and skipped, conflicts name both, allow/block work."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from voxpipe.errors import PluginError
from voxpipe.registry import PluginSelection, Registry

GOOD_PLUGIN = """
from pydantic import BaseModel, ConfigDict
from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec

class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = 2.0

@hookimpl
def voxpipe_register_stages(register):
    register(StageSpec(id="{stage_id}", kind=StageKind.TRANSFORM, summary="test stage",
                       params=Params, factory="{module}:build", reads=("image",), writes=("image",)))

def build(factor):
    return lambda case: case
"""


def make_dist(root: Path, dist: str, module: str, body: str, entry_name: str | None = None, entry_value: str | None = None) -> None:
    """A minimal installed distribution: a module plus .dist-info with a `voxpipe` entry point (``module`` or ``entry_value``)."""
    (root / f"{module}.py").write_text(textwrap.dedent(body).format(module=module, stage_id=f"{module}.stage"))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[voxpipe]\n{entry_name or module} = {entry_value or module}\n")


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for fake distributions; their modules are forgotten afterwards."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("vp_")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def test_builtin_plugins_come_through_entry_points(registry):
    assert {
        "load.auto",
        "load.nifti",
        "load.image2d",
        "write.nifti",
        "write.preview",
        "intensity.scale",
        "denoise.gaussian",
        "segment.otsu",
    } <= set(registry.stages)
    assert all(spec.distribution == "voxpipe" and spec.plugin for spec in registry.stages.values())
    assert not registry.problems


def test_third_party_plugin_is_discovered(plugin_dir):
    make_dist(plugin_dir, "vp-good", "vp_good", GOOD_PLUGIN)
    registry = Registry.load()
    spec = registry.stages["vp_good.stage"]
    assert (spec.plugin, spec.distribution, spec.version) == ("vp_good", "vp-good", "1.2.3")


@pytest.mark.parametrize(
    "body, reason",
    [
        ("raise ImportError('missing dependency foo')", "cannot load: ImportError: missing dependency foo"),
        ("x = (", "cannot load: SyntaxError"),
        (GOOD_PLUGIN.replace("register(StageSpec", "raise RuntimeError('boom'); register(StageSpec"), "RuntimeError: boom"),
        (GOOD_PLUGIN.replace('id="{stage_id}"', 'id="Bad Id"'), "is not a lower-case dotted name"),
        (GOOD_PLUGIN.replace("kind=StageKind.TRANSFORM", 'kind="wizard"'), "kind 'wizard' is not one of"),
        (GOOD_PLUGIN.replace('model_config = ConfigDict(extra="forbid")', "pass"), "extra='forbid'"),
        (GOOD_PLUGIN.replace("register(StageSpec(", "register(dict("), "expected voxpipe.stage.StageSpec"),
        (GOOD_PLUGIN.replace('summary="test stage"', 'summary=""'), "summary must be a non-empty line"),
        (GOOD_PLUGIN.replace('id="{stage_id}"', 'id="monai.foo"'), "reserved for MONAI"),
        (GOOD_PLUGIN.replace("def voxpipe_register_stages(register)", "def voxpipe_register_stages(reg)"), "cannot load"),
    ],
)
def test_broken_plugin_is_reported_and_skipped(plugin_dir, body, reason):
    make_dist(plugin_dir, "vp-good", "vp_good", GOOD_PLUGIN)
    make_dist(plugin_dir, "vp-broken", "vp_broken", body)
    registry = Registry.load()
    assert "vp_good.stage" in registry.stages, "a broken plugin must not take the others down"
    assert not any(s.startswith("vp_broken") for s in registry.stages)
    [problem] = registry.problems
    assert problem.plugin == "vp_broken" and problem.distribution == "vp-broken 1.2.3"
    assert reason in problem.reason, problem.reason
    with pytest.raises(PluginError) as info:
        Registry.load(strict=True)
    assert "vp_broken" in str(info.value) and "vp-broken" in str(info.value)


def test_one_bad_spec_skips_the_whole_plugin(plugin_dir):
    body = (
        GOOD_PLUGIN
        + """
@hookimpl(specname="voxpipe_register_stages")
def also(register):
    register("not a spec")
"""
    )
    make_dist(plugin_dir, "vp-half", "vp_half", body)
    registry = Registry.load()
    assert "vp_half.stage" not in registry.stages
    assert registry.problems and registry.problems[0].plugin == "vp_half"


def test_duplicate_stage_id_is_a_conflict_naming_both(plugin_dir):
    make_dist(plugin_dir, "vp-one", "vp_one", GOOD_PLUGIN.replace('"{stage_id}"', '"shared.stage"'))
    make_dist(plugin_dir, "vp-two", "vp_two", GOOD_PLUGIN.replace('"{stage_id}"', '"shared.stage"'))
    registry = Registry.load()  # one conflict no longer breaks everything: the rest of the registry works
    assert "segment.otsu" in registry.stages and "shared.stage" not in registry.stages
    [problem] = registry.problems
    message = str(problem)
    assert problem.kind == "conflict" and problem.plugin == "vp_one, vp_two"
    assert "shared.stage" in message and "vp-one" in message and "vp-two" in message and "--block-plugin" in message
    with pytest.raises(PluginError) as info:  # using the contested id is the error, naming both
        registry.get("shared.stage")
    assert str(info.value) == message
    with pytest.raises(PluginError, match="strict mode: stage id `shared.stage`"):
        Registry.load(strict=True)
    assert "shared.stage" in Registry.load(PluginSelection(block=frozenset({"vp_two"}))).stages


def test_duplicate_of_builtin_id_names_both(plugin_dir):
    make_dist(plugin_dir, "vp-clash", "vp_clash", GOOD_PLUGIN.replace('"{stage_id}"', '"segment.otsu"'))
    registry = Registry.load()
    assert "segment.otsu" not in registry.stages  # neither wins silently: a plugin cannot shadow a built-in
    with pytest.raises(PluginError, match=r"segment\.otsu.*plugin `segment` \(voxpipe .*plugin `vp_clash` \(vp-clash 1\.2\.3\)"):
        registry.get("segment.otsu")


TWO_STAGES_AND_A_COMMAND = (
    GOOD_PLUGIN
    + """
@hookimpl(specname="voxpipe_register_stages")
def more(register):
    register(StageSpec(id="shared.second", kind=StageKind.TRANSFORM, summary="s", params=Params, factory="{module}:build"))

@hookimpl
def voxpipe_register_commands(register):
    from voxpipe.commands_spec import CommandSpec
    register(CommandSpec(name="shared-cmd", summary="a command", factory="{module}:build"))

@hookimpl
def voxpipe_register_trainers(register):
    from voxpipe.stage import TrainerSpec
    register(TrainerSpec(task="shared_task", summary="t", params=Params, factory="{module}:build"))
"""
)


def test_every_conflict_is_reported_at_once(plugin_dir):
    """Stage ids, training tasks and command names claimed twice: all in one load, and all in the strict error."""
    body = TWO_STAGES_AND_A_COMMAND.replace('"{stage_id}"', '"shared.stage"')
    make_dist(plugin_dir, "vp-one", "vp_one", body)
    make_dist(plugin_dir, "vp-two", "vp_two", body)
    registry = Registry.load()
    conflicts = sorted(str(p).split("`")[1] for p in registry.problems if p.kind == "conflict")
    assert conflicts == ["shared-cmd", "shared.second", "shared.stage", "shared_task"]
    assert not {"shared.stage", "shared.second"} & set(registry.stages)
    assert "shared-cmd" not in registry.commands and "shared_task" not in registry.trainers
    for lookup, key in ((registry.get, "shared.second"), (registry.command, "shared-cmd"), (registry.trainer, "shared_task")):
        with pytest.raises(PluginError, match="vp-one.*vp-two"):
            lookup(key)
    with pytest.raises(PluginError) as info:
        Registry.load(strict=True)
    assert all(name in str(info.value) for name in conflicts)


@pytest.mark.parametrize(
    "hook, noun, twice",
    [
        (
            "voxpipe_register_stages",
            "stage id",
            'StageSpec(id="vp_dup.stage", kind=StageKind.TRANSFORM, summary="s", params=Params, factory="x:y")',
        ),
        (
            "voxpipe_register_trainers",
            "training task",
            '__import__(\'voxpipe.stage\').stage.TrainerSpec(task="dup", summary="t", params=Params, factory="x:y")',
        ),
        (
            "voxpipe_register_commands",
            "command",
            '__import__(\'voxpipe.commands_spec\').commands_spec.CommandSpec(name="dup", summary="c", factory="x:y")',
        ),
    ],
)
def test_a_plugin_registering_one_id_twice_is_told_so(plugin_dir, hook, noun, twice):
    body = (
        GOOD_PLUGIN
        + f"""
@hookimpl(specname="{hook}")
def twice(register):
    register({twice})
    register({twice})
"""
    )
    make_dist(
        plugin_dir,
        "vp-dup",
        "vp_dup",
        body.replace("{", "{{").replace("}", "}}").replace("{{module}}", "{module}").replace("{{stage_id}}", "{stage_id}"),
    )
    registry = Registry.load()
    [problem] = registry.problems
    assert problem.kind == "skipped" and problem.plugin == "vp_dup"
    assert f"registers {noun} `" in problem.reason and "twice" in problem.reason
    assert "block" not in str(problem), "a plugin cannot block itself out of its own duplicate"


@pytest.mark.parametrize(
    "body, entry_value, says",
    [
        (
            GOOD_PLUGIN + "\ndef register_all():\n    pass\n",
            "vp_empty:register_all",
            "entry point `vp_empty:register_all` names a function, not a module; point it at the module",
        ),
        (
            GOOD_PLUGIN.replace("register(StageSpec(", "return [StageSpec(").replace('writes=("image",)))', 'writes=("image",))]'),
            None,
            "voxpipe_register_stages returned 1 item(s) instead of calling register(spec) for each",
        ),
        (GOOD_PLUGIN.replace("@hookimpl\n", ""), None, "voxpipe_register_stages lack the @hookimpl decorator"),
        ("x = 1\n", None, "registers nothing: it has no @hookimpl functions"),
        (
            GOOD_PLUGIN.replace("register(StageSpec(", "0 and register(StageSpec("),
            None,
            "registers nothing: its hooks never call register(spec)",
        ),
    ],
)
def test_a_plugin_that_registers_nothing_is_warned_about(plugin_dir, cli, body, entry_value, says):
    make_dist(plugin_dir, "vp-empty", "vp_empty", body, entry_value=entry_value)
    registry = Registry.load()
    [problem] = registry.problems
    assert problem.kind == "warning" and problem.plugin == "vp_empty", problem
    assert says in str(problem) and "plugin `vp_empty` (distribution vp-empty 1.2.3)" in str(problem), str(problem)
    result = cli("plugins")
    assert result.exit_code == 0 and "warning: plugin `vp_empty`" in result.stderr and says in result.stderr
    assert cli("--strict", "plugins").exit_code == 2


def test_plugins_json_is_valid_with_every_problem_inside(plugin_dir, cli):
    import json

    body = TWO_STAGES_AND_A_COMMAND.replace('"{stage_id}"', '"shared.stage"')
    make_dist(plugin_dir, "vp-one", "vp_one", body)
    make_dist(plugin_dir, "vp-two", "vp_two", body)
    make_dist(plugin_dir, "vp-broken", "vp_broken", "raise ImportError('gone')")
    for args in (("plugins", "--json"), ("--strict", "plugins", "--json"), ("plugins", "--json", "--strict")):
        result = cli(*args)
        data = json.loads(result.stdout)  # valid JSON even in strict mode, which then exits 2
        kinds = sorted(p["kind"] for p in data["problems"])
        assert kinds == ["conflict"] * 4 + ["skipped"], data["problems"]
        assert "segment.otsu" in {s["id"] for s in data["stages"]}
        assert any(c["name"] == "convert" and c["plugin"] == "io_dicom" for c in data["commands"])
        assert result.exit_code == (2 if "--strict" in args else 0)


def test_a_conflict_breaks_only_what_uses_it(plugin_dir, cli, tmp_path):
    make_dist(plugin_dir, "vp-one", "vp_one", GOOD_PLUGIN.replace('"{stage_id}"', '"shared.stage"'))
    make_dist(plugin_dir, "vp-two", "vp_two", GOOD_PLUGIN.replace('"{stage_id}"', '"shared.stage"'))
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\nname: t\nstages: [{use: load.auto}, {use: segment.otsu}]\n")
    ok = cli("validate", config)
    assert ok.exit_code == 0 and "warning: stage id `shared.stage` is registered by both" in ok.stderr
    config.write_text("version: 1\nname: t\nstages: [{use: load.auto}, {use: shared.stage}]\n")
    bad = cli("validate", config)
    assert bad.exit_code == 2 and bad.error_lines and "plugin `vp_one` (vp-one 1.2.3) and plugin `vp_two`" in bad.error_lines[0]
    assert "Traceback" not in bad.stderr


HOOK_RAISES = (
    GOOD_PLUGIN.replace("register(StageSpec(", "_helper(); register(StageSpec(")
    + """
def _helper():
    raise RuntimeError("the plugin's own bug")
"""
)


def test_debug_shows_the_plugins_own_frames(plugin_dir, cli):
    make_dist(plugin_dir, "vp-raises", "vp_raises", HOOK_RAISES)
    plain = cli("plugins")
    assert "RuntimeError: the plugin's own bug" in plain.stderr and "Traceback" not in plain.stderr
    debug = cli("--debug", "plugins")
    assert debug.exit_code == 0 and "Traceback (most recent call last)" in debug.stderr
    assert "vp_raises.py" in debug.stderr and "in _helper" in debug.stderr and "in voxpipe_register_stages" in debug.stderr
    after = cli("plugins", "--debug")  # after the command too
    assert "in _helper" in after.stderr


def test_debug_plugin_traceback_is_redacted(plugin_dir, cli, tmp_path):
    """The plugin's frames go through the same redaction as every --debug traceback: input names are hidden."""
    secret = tmp_path / "SMITH_JOHN_scan"
    secret.mkdir()
    make_dist(plugin_dir, "vp-raises", "vp_raises", HOOK_RAISES.replace("the plugin's own bug", str(secret)))
    from voxpipe.input_redaction import register_input

    register_input(secret)
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\nname: t\nstages: [{use: load.auto}]\n")
    result = cli("--debug", "validate", config)
    assert "in _helper" in result.stderr and "SMITH_JOHN" not in result.stderr


def test_allow_and_block(plugin_dir, monkeypatch):
    make_dist(plugin_dir, "vp-good", "vp_good", GOOD_PLUGIN)
    assert "vp_good.stage" not in Registry.load(PluginSelection.from_env(block=("vp_good",))).stages
    only = Registry.load(PluginSelection.from_env(allow=("vp_good,io_nifti",)))
    assert {s.plugin for s in only.stages.values()} == {"vp_good", "io_nifti"}
    monkeypatch.setenv("VOXPIPE_PLUGINS_BLOCK", "segment, vp_good")
    blocked = Registry.load()
    assert "segment.otsu" not in blocked.stages and "vp_good.stage" not in blocked.stages
    assert set(blocked.skipped_by_selection) == {"segment", "vp_good"}


def test_cli_reports_problems_and_strict(plugin_dir, cli, monkeypatch):
    make_dist(plugin_dir, "vp-broken", "vp_broken", "raise ImportError('no such thing')")
    result = cli("plugins")
    assert result.exit_code == 0
    assert "warning: plugin `vp_broken` (distribution vp-broken 1.2.3) skipped: cannot load: ImportError: no such thing" in result.stderr
    assert "segment.otsu" in result.stdout
    strict = cli("--strict", "plugins")
    assert strict.exit_code == 2 and "strict mode" in strict.stderr and "Traceback" not in strict.stderr
    monkeypatch.setenv("VOXPIPE_STRICT", "1")
    assert cli("plugins").exit_code == 2
    assert cli("--block-plugin", "vp_broken", "plugins").exit_code == 0


def test_cli_block_option_hides_stage(cli, tmp_path):
    assert "segment.otsu" not in cli("--block-plugin", "segment", "plugins").stdout
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\nname: t\nstages: [{use: load.auto}, {use: segment.otsu}]\n")
    result = cli("--block-plugin", "segment", "validate", config)
    assert result.exit_code == 2 and "unknown stage `segment.otsu`" in result.stderr


def test_registry_import_is_light():
    """Registering stages must not import the stages' heavy code (checked fully in test_light_imports)."""
    registry = Registry.load()
    for spec in registry.stages.values():
        assert isinstance(spec.factory, str), f"{spec.id}: factory should be a lazy 'module:attribute' string"


TRAINER_PLUGIN = """
from pathlib import Path
from pydantic import BaseModel, ConfigDict, Field
from voxpipe.hookspecs import hookimpl
from voxpipe.stage import TrainerSpec

class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(3, ge=1)

class Trainer:
    def __init__(self, params, config, context):
        self.params, self.config, self.context = params, config, context

    def run(self, output_dir, resume=False):
        (Path(output_dir) / "trained.txt").write_text(f"{{self.params.epochs}} {{self.context.device}} {{len(self.config.stages)}}")
        return {{"epochs": self.params.epochs}}

@hookimpl
def voxpipe_register_trainers(register):
    register(TrainerSpec(task="toy", summary="a toy trainer", params=Params, factory=Trainer))
"""


def test_trainers_register_validate_and_run(plugin_dir, cli, tmp_path):
    make_dist(plugin_dir, "vp-trainer", "vp_trainer", TRAINER_PLUGIN)
    registry = Registry.load()
    assert registry.trainers["toy"].distribution == "vp-trainer"
    assert "toy" in cli("plugins").stdout
    config = tmp_path / "t.yaml"
    config.write_text("version: 1\nname: t\nstages: [{use: load.auto}]\ntraining: {task: toy, epochs: 5}\n")
    result = cli("train", config, "-o", tmp_path / "out", "--set", "training.epochs=7", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out" / "trained.txt").read_text() == "7 cpu 1"
    config.write_text("version: 1\nname: t\nstages: [{use: load.auto}]\ntraining: {task: toy, epoch: 5}\n")
    bad = cli("validate", config)
    assert bad.exit_code == 2 and "training: unknown field `epoch`; did you mean `epochs`?" in bad.stderr
    config.write_text("version: 1\nname: t\nstages: [{use: load.auto}]\ntraining: {task: tyo}\n")
    assert "unknown task `tyo`; did you mean `toy`?" in cli("validate", config).stderr
    config.write_text("version: 1\nname: t\nstages: [{use: load.auto}]\n")
    assert "has no `training:` section" in cli("train", config, "-o", tmp_path / "o2").stderr

"""The author's kit: voxpipe.plugin, record's copy-on-write, run_stage, `plugins check`, `plugins new`,
and the config hash that follows a plugin's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import crash_plugin
from tests.conftest import REPO

PYTHON = sys.executable


# ----------------------------------------------------------------------------- the module


def test_every_public_name_resolves_and_registering_stays_light():
    import voxpipe.plugin as kit

    assert len(set(kit.__all__)) == len(kit.__all__)
    for name in kit.__all__:
        assert getattr(kit, name) is not None, name
    code = (
        "import sys; from voxpipe.plugin import hookimpl, StageSpec, StageKind, TrainerSpec, CommandSpec, StageParams, record; "
        "print(sorted(m for m in ('torch', 'monai', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_kit_names_are_the_core_objects():
    import voxpipe.plugin as kit
    from voxpipe import hookspecs, stage

    assert kit.hookimpl is hookspecs.hookimpl and kit.StageSpec is stage.StageSpec and kit.record is stage.record
    from voxpipe.report_items import report_metric

    assert kit.report_metric is report_metric
    from voxpipe_plugins.common import checks, params, tensors

    assert checks.StageInputError is kit.StageInputError and params.StageParams is kit.StageParams
    assert tensors.make_metatensor is kit.make_metatensor


@pytest.mark.parametrize("op", ["record", "report_metric"])
def test_record_is_copy_on_write(op):
    """The documented `out = dict(case); record(out, ...)` leaves the input case as it was."""
    from voxpipe.plugin import record, report_metric

    case = {"history": [{"op": "load"}]}
    out = dict(case)
    if op == "record":
        record(out, "acme.step", sigma=1.0)
        assert out["history"] == [{"op": "load"}, {"op": "acme.step", "sigma": 1.0}]
    else:
        report_metric(out, "acme.mean", 1.5)
        assert "report" not in case
    assert case["history"] == [{"op": "load"}]
    record(case, "first")  # no history yet, and in place on the dict it is given
    assert case["history"][-1] == {"op": "first"}


def test_spacing_comes_from_the_affine():
    from voxpipe.plugin import make_metatensor, spacing

    affine = np.array([[0.0, 0.0, -2.5, 10], [0.8, 0.0, 0.0, 0], [0.0, -0.8, 0.0, 0], [0, 0, 0, 1]])
    image = make_metatensor(np.zeros((1, 4, 5, 6), np.float32), affine)
    assert spacing(image) == pytest.approx((0.8, 0.8, 2.5))
    assert spacing(make_metatensor(np.zeros((1, 4, 5), np.float32), np.diag([0.5, 0.7, 1, 1]))) == pytest.approx((0.5, 0.7))


# ----------------------------------------------------------------------------- run_stage


def test_run_stage_runs_builtins_on_a_synthetic_case_of_their_kind(tmp_path, registry):
    from voxpipe.plugin import run_stage

    loaded = run_stage("load.auto", output_dir=tmp_path / "load", registry=registry)
    assert loaded["image"].ndim == 4 and "label" not in loaded
    smoothed = run_stage("denoise.gaussian", {"sigma_mm": 2.0}, output_dir=tmp_path / "g", registry=registry)
    assert smoothed["history"][-1]["op"] == "denoise.gaussian"
    cleaned = run_stage("label.open", output_dir=tmp_path / "l", registry=registry)  # reads a label: gets one
    assert cleaned["label"].shape == cleaned["image"].shape
    run_stage("write.nifti", {"keys": ["image"]}, output_dir=tmp_path / "w", registry=registry)
    assert (tmp_path / "w" / "image.nii.gz").is_file()


def test_run_stage_fails_a_stage_that_breaks_the_contract(tmp_path):
    from pydantic import BaseModel, ConfigDict

    from voxpipe.plugin import StageKind, StageSpec, run_stage
    from voxpipe.plugin_testing import ContractViolation

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def factory():
        return lambda case: {**case, "image": case["image"].numpy()}

    spec = StageSpec(id="acme.numpy", kind=StageKind.DENOISER, summary="x", params=Params, factory=factory, writes=("image",))
    with pytest.raises(ContractViolation, match=r"acme.numpy: `image` is a numpy.ndarray"):
        run_stage(spec, output_dir=tmp_path)
    with pytest.raises(LookupError, match="unknown stage `acme.nothing`"):
        run_stage("acme.nothing", registry=type("R", (), {"get": lambda self, _: None})())


# ----------------------------------------------------------------------------- plugins check

KIT_PLUGIN = """
from pydantic import BaseModel, ConfigDict, Field
from voxpipe.plugin import StageKind, StageSpec, hookimpl


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Needs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: float = Field(description="required")


class Good:
    def __call__(self, case):
        return dict(case)


class Numpy:
    def __call__(self, case):
        return {**case, "image": case["image"].numpy()}


class Raises:
    def __call__(self, case):
        raise RuntimeError("boom")


def bad_signature(unexpected):
    return Good()


@hookimpl
def voxpipe_register_stages(register):
    for name, factory in [("good", Good), ("numpy", Numpy), ("raises", Raises), ("missing", "kittest_nowhere:Stage"),
                          ("attr", "voxpipe_kittest.plugin:Nothing"), ("signature", bad_signature)]:
        register(StageSpec(id=f"kittest.{name}", kind=StageKind.TRANSFORM, summary=name, params=NoParams,
                           factory=factory, reads=("image",), writes=("image",)))
    register(StageSpec(id="kittest.needs", kind=StageKind.TRANSFORM, summary="needs", params=Needs, factory=Good))
"""


def install(folder: Path, name: str, source: str, module: str = "plugin") -> Path:
    """A plugin as pip leaves it (module + dist-info with a `voxpipe` entry point), editable in place."""
    package = folder / f"voxpipe_{name}"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / f"{module}.py").write_text(source)
    info = folder / f"voxpipe_{name}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: voxpipe-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[voxpipe]\n{name} = voxpipe_{name}.plugin\n")
    (info / "RECORD").write_text("")
    return folder


@pytest.fixture
def on_path(monkeypatch):
    def add(site: Path) -> Path:
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])))
        return site

    return add


def test_plugins_check_reports_each_problem_in_one_line(tmp_path, on_path):
    from voxpipe.plugin_check import check_plugins
    from voxpipe.registry import PluginSelection, Registry

    on_path(install(tmp_path / "site", "kittest", KIT_PLUGIN))
    registry = Registry.load(PluginSelection(allow=frozenset({"kittest"})))
    notes: list[str] = []
    problems = check_plugins(registry, "kittest", notes)
    assert all("\n" not in p for p in problems)
    by_stage = {p.split("`")[3]: p for p in problems}
    assert sorted(by_stage) == ["kittest.attr", "kittest.missing", "kittest.numpy", "kittest.raises", "kittest.signature"], problems
    assert "factory `kittest_nowhere:Stage` cannot be imported: ModuleNotFoundError" in by_stage["kittest.missing"]
    assert "cannot be imported: AttributeError" in by_stage["kittest.attr"]
    assert "on a synthetic case: `image` is a numpy.ndarray, expected a MetaTensor" in by_stage["kittest.numpy"]
    assert "fails on a synthetic case: RuntimeError: boom" in by_stage["kittest.raises"]
    assert "cannot build with its defaults: TypeError" in by_stage["kittest.signature"]
    assert notes == ["stage `kittest.needs`: not run: needs config (level required)"]
    assert check_plugins(registry, "nosuch") == ["no loaded plugin `nosuch` (loaded: kittest); check the name with `voxpipe plugins`"]


def test_plugins_check_includes_plugins_that_failed_to_load(tmp_path, on_path):
    from voxpipe.plugin_check import check_plugins
    from voxpipe.registry import PluginSelection, Registry

    on_path(install(tmp_path / "site", "kitbroken", "import kitbroken_missing_dependency\n"))
    registry = Registry.load(PluginSelection(allow=frozenset({"kitbroken", "denoise"})))
    problems = check_plugins(registry, "kitbroken")
    assert len(problems) == 1 and "plugin `kitbroken`" in problems[0] and "ModuleNotFoundError" in problems[0]
    assert check_plugins(registry, "denoise") == [], "the built-in denoisers keep the contract"


# ----------------------------------------------------------------------------- plugins new


def test_plugin_template_refuses_bad_names_and_used_folders(tmp_path):
    from voxpipe.plugin_template import TemplateError, write_plugin_package

    for name in ("Acme", "1acme", "acme-x", "a", "", "acme.x", "x" * 40):
        with pytest.raises(TemplateError, match="lower-case"):
            write_plugin_package(name, tmp_path / "new")
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "keep.txt").write_text("mine")
    with pytest.raises(TemplateError, match="not an empty folder"):
        write_plugin_package("acme", tmp_path)
    assert (tmp_path / "acme" / "keep.txt").read_text() == "mine"
    assert write_plugin_package("acme2", tmp_path) == tmp_path / "acme2"


def test_a_new_plugin_package_installs_and_passes_its_own_test(tmp_path):
    """What `voxpipe plugins new` writes builds with pip, registers its stage and command, passes
    `plugins check` and its own tests. Installed with --target (not into the shared venv), so
    no other test process sees it."""
    from voxpipe.plugin_template import write_plugin_package

    source = write_plugin_package("kitnew", tmp_path)
    site = tmp_path / "site"
    pip = subprocess.run(
        [PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert pip.returncode == 0, pip.stderr
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "VOXPIPE_PLUGINS_ALLOW": "kitnew,io_auto,io_nifti,io_image",
    }
    check = (
        "from voxpipe.registry import Registry; from voxpipe.plugin_check import check_plugins; r = Registry.load(strict=True); "
        "print(r.stages['kitnew.scale'].distribution, sorted(getattr(r, 'commands', {}))); print(check_plugins(r, 'kitnew'))"
    )
    out = subprocess.run([PYTHON, "-c", check], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["voxpipe-kitnew ['kitnew-hello']", "[]"], out.stdout
    tests = subprocess.run(
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(source / "tests")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout + tests.stderr


# ----------------------------------------------------------------------------- the config hash follows plugin code


def test_an_edited_plugin_does_not_keep_stale_cases(cli, tmp_path, on_path, write_config, monkeypatch):
    for loaded in [m for m in sys.modules if m.split(".")[0] == "voxpipe_crashtest"]:  # an earlier test's copy
        monkeypatch.delitem(sys.modules, loaded)
    site = on_path(install(tmp_path / "site", "crashtest", crash_plugin.PLUGIN_SOURCE))
    from voxpipe.config import load_config
    from voxpipe.registry import Registry

    config = write_config(crash_plugin.config("none"))

    def hash_of() -> str:
        return load_config(config, Registry.load()).hash

    first = hash_of()
    assert hash_of() == first, "unchanged code, same hash"
    cases = crash_plugin.write_cases(tmp_path / "input", ["c00", "c01"])
    out = tmp_path / "out"
    assert cli("run", config, "-i", cases, "-o", out, "--workers", "0").exit_code == 0
    assert cli("run", config, "-i", cases, "-o", out, "--workers", "0").exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["summary"]["skipped"] == 2, "a rerun keeps completed cases"

    module = site / "voxpipe_crashtest" / "plugin.py"
    module.write_text(module.read_text() + "\n# an edit that changes what the stage does\n")
    edited = hash_of()
    assert edited != first
    stale = cli("run", config, "-i", cases, "-o", out, "--workers", "0")
    assert stale.exit_code == 2 and "--force" in stale.stderr, "outputs of the old code are no longer kept silently"
    assert cli("run", config, "-i", cases, "-o", out, "--workers", "0", "--force").exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["skipped"] == 0 and all(c["status"] == "ok" for c in manifest["cases"])

    helper = site / "voxpipe_crashtest" / "helpers.py"
    helper.write_text("X = 1\n")  # a new module in the package counts too
    assert hash_of() not in (first, edited)
    helper.unlink()
    assert hash_of() == edited


def test_the_core_and_builtins_hash_the_same_in_two_processes(tmp_path):
    code = (
        "from voxpipe.config import load_config; from voxpipe.registry import Registry; "
        f"print(load_config({str(REPO / 'configs' / 'demo.yaml')!r}, Registry.load()).hash)"
    )
    runs = {subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True, cwd=cwd).stdout for cwd in (REPO, tmp_path)}
    assert len(runs) == 1


def test_code_digests_name_plugin_packages_not_the_core(registry):
    from voxpipe.plugin_code import code_digests

    digests = code_digests([registry.get("denoise.gaussian"), registry.get("load.auto"), registry.get("monai.ScaleIntensityd")])
    names = [d.split(":")[0] for d in digests]
    assert names == ["voxpipe_plugins.denoise", "voxpipe_plugins.io_auto"], digests

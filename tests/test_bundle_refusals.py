"""Unsafe bundles are refused with one line, at import, validate and run, and nothing of them ever runs.

Every attack writes a MARKER file if it is executed; after each refusal the test checks
that no MARKER appeared anywhere under the test's folder or the working directory.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from bundle_support import copy_bundle, phantom, read_config, set_path, write_config, write_nifti, write_random_weights

BAD_EXPRESSIONS = [
    "$__import__('os').system('touch MARKER')",
    "$exec(\"import os; os.system('touch MARKER')\")",
    "$eval(\"__import__('os').system('touch MARKER')\")",
    "$compile('x', 'f', 'exec')",
    "$getattr(__import__('os'), 'system')('touch MARKER')",
    "$getattr(torch, 'load')('x')",
    "$open('MARKER', 'w').write('x')",
    "$os.system('touch MARKER')",
    "$os.popen('touch MARKER')",
    "$subprocess.run(['touch', 'MARKER'])",
    "$importlib.import_module('os').system('touch MARKER')",
    "$torch.hub.load('evil/repo', 'model')",
    "$torch.jit.load('model.ts')",
    "$monai.bundle.run(config_file='x.json')",
    "$monai.bundle.ConfigParser.load_config_file('x')",
    "$numpy.load('x.npy', allow_pickle=True)",
    "$pickle.loads(b'x')",
    "$().__class__.__base__.__subclasses__()",
    "$[c for c in ().__class__.__bases__]",
    "$(lambda: 0).__globals__",
    "$__builtins__",
    "$breakpoint()",
    "$vars()",
    "$globals()['os']",
    "$sys.modules['os'].system('touch MARKER')",
    "$lambda x: os.system('touch MARKER')",
    "$lambda x: torch.where(x[[0]] > 0, __import__('os').system('touch MARKER'), 0)",
    "$lambda x: x.__class__",
    "$scripts.net.Net()",
]

BAD_TARGETS = [
    "os.system",
    "subprocess.Popen",
    "builtins.exec",
    "builtins.eval",
    "posix.system",
    "$os.system",
    "$__import__('os').system",
    "@network",
    "scripts.net.Net",
    "monai.bundle.run",
    "monai.bundle.scripts.run",
    "torch.hub.load",
    "monai.__builtins__",
    "importlib.import_module",
]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The spleen bundle with random weights, made once; each test copies it."""
    bundle = copy_bundle("spleen_ct_segmentation", tmp_path_factory.mktemp("template"), {})
    write_random_weights(bundle, seed=0)
    return bundle


@pytest.fixture
def spleen(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / template.name))


def _no_marker(tmp_path: Path) -> None:
    found = [p for p in (*tmp_path.rglob("MARKER*"), *Path.cwd().glob("MARKER*"))]
    assert not found, f"an attack ran: {found}"


def _refused(bundle: Path, tmp_path: Path, *words: str) -> str:
    """The import, in-process (the CLI's one-line form is checked below): refused with these words, nothing run."""
    from voxpipe_plugins.bundle.expressions import BundleError
    from voxpipe_plugins.bundle.mapping import import_bundle

    with pytest.raises(BundleError) as caught:
        import_bundle(bundle, tmp_path / "imported.yaml")
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    _no_marker(tmp_path)
    return message


def _import_refused(cli, bundle: Path, tmp_path: Path, *words: str, info_refuses: bool = True) -> str:
    out = tmp_path / "imported.yaml"
    result = cli("bundle", "import", str(bundle), "-o", str(out))
    assert result.exit_code == 2, result.stdout + result.stderr
    assert len(result.error_lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not out.exists()
    for word in words:
        assert word in result.stderr, result.stderr
    info = cli("bundle", "info", str(bundle), "--json")  # info reports the refusal too, and runs nothing either
    assert info.exit_code == 0 and json.loads(info.stdout)["importable"] is (not info_refuses)
    _no_marker(tmp_path)
    return result.stderr


@pytest.mark.parametrize(
    "where", ["network_def#out_channels", "inferer#overlap", "preprocessing#transforms#3#pixdim", "datalist", "initialize#0", "imports#0"]
)
@pytest.mark.parametrize("expression", BAD_EXPRESSIONS[:3])
def test_code_is_refused_in_every_key_used_or_not(spleen, tmp_path, where, expression):
    config = read_config(spleen)
    set_path(config, where, expression)
    write_config(spleen, config)
    assert f"`{where}`" in _refused(spleen, tmp_path, "refused")  # the line names the key


@pytest.mark.parametrize("expression", BAD_EXPRESSIONS)
def test_every_code_form_is_refused(spleen, tmp_path, expression):
    config = read_config(spleen)
    set_path(config, "datalist", expression)  # a key VoxPipe does not even need
    write_config(spleen, config)
    assert "`datalist`" in _refused(spleen, tmp_path, "refused")
    config = read_config(spleen)
    del config["datalist"]
    config["network_def"]["num_res_units"] = expression  # and one it does
    write_config(spleen, config)
    assert "`network_def#num_res_units`" in _refused(spleen, tmp_path, "refused")


@pytest.mark.parametrize("target", BAD_TARGETS)
@pytest.mark.parametrize("where", ["network_def", "preprocessing#transforms#2", "handlers#0", "postprocessing#transforms#0"])
def test_targets_outside_the_allow_list_are_refused(spleen, tmp_path, target, where):
    config = read_config(spleen)
    set_path(config, f"{where}#_target_", target)
    write_config(spleen, config)
    _refused(spleen, tmp_path, "refused", "_target_", where)


@pytest.mark.parametrize("target", ["exec", "eval", "Lambdad", "DataStatsd", "SaveImaged", "TorchVisiond"])
def test_plain_names_that_are_not_mappable_are_refused(spleen, tmp_path, target):
    config = read_config(spleen)
    set_path(config, "preprocessing#transforms#2#_target_", target)
    write_config(spleen, config)
    _refused(spleen, tmp_path, "refused", "preprocessing#transforms#2")
    config["preprocessing"]["transforms"][2]["_target_"] = "Orientationd"
    config["network_def"]["_target_"] = target
    write_config(spleen, config)
    _refused(spleen, tmp_path, "allow-list")


@pytest.mark.parametrize("macro", ["%/etc/passwd#x", "%../../../outside.json#x", "%../models/model.pt#x", "%/tmp#x"])
def test_file_references_outside_the_bundle_configs_are_refused(spleen, tmp_path, macro):
    (tmp_path / "outside.json").write_text('{"x": 1}')
    config = read_config(spleen)
    config["network_def"]["num_res_units"] = macro
    write_config(spleen, config)
    _refused(spleen, tmp_path, "%", "network_def#num_res_units")


def test_a_bundle_importing_its_own_scripts_is_refused(spleen, tmp_path, cli):
    config = read_config(spleen)
    config["imports"].append("$import scripts.net")
    write_config(spleen, config)
    _import_refused(cli, spleen, tmp_path, "scripts")
    for form in ("$from scripts import net", "$from scripts.net import Net", "$import subprocess"):
        config["imports"][-1] = form
        write_config(spleen, config)
        _refused(spleen, tmp_path, "refused")


def test_code_in_a_bundle_is_one_line_and_exit_2_on_the_command_line(spleen, tmp_path, cli):
    config = read_config(spleen)
    config["network_def"]["out_channels"] = BAD_EXPRESSIONS[0]
    write_config(spleen, config)
    assert "network_def#out_channels" in _import_refused(cli, spleen, tmp_path, "refused")
    config["network_def"]["out_channels"] = 2
    config["network_def"]["_target_"] = "os.system"
    write_config(spleen, config)
    _import_refused(cli, spleen, tmp_path, "refused", "_target_")


def test_a_torchscript_only_bundle_is_refused(spleen, tmp_path, cli):
    (spleen / "models" / "model.pt").rename(spleen / "models" / "model.ts")
    _import_refused(cli, spleen, tmp_path, "TorchScript")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch MARKER",))


def _evil_checkpoint(path: Path) -> None:
    """A torch-format zip whose data.pkl calls os.system when unpickled."""
    buffer = io.BytesIO()
    pickle.dump({"weight": _Evil()}, buffer, protocol=2)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/version", "3\n")


def test_a_pickle_that_runs_code_is_refused_at_import_validate_and_run(spleen, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "spleen.yaml"
    assert cli("bundle", "import", str(spleen), "-o", str(config)).exit_code == 0
    weights = spleen / "models" / "model.pt"
    _evil_checkpoint(weights)
    _import_refused(cli, spleen, tmp_path, "refused", info_refuses=False)  # info does not read the weights
    # the config written before: the SHA-256 no longer matches, so validate refuses first
    result = cli("validate", str(config))
    assert result.exit_code == 2 and "SHA-256" in result.stderr and len(result.error_lines) == 1
    # without the pin, the pickle itself is refused (read by a find_class that calls nothing)
    data = yaml.safe_load(config.read_text())
    deep = next(s["with"] for s in data["stages"] if s["use"] == "segment.deep")
    del deep["weights_sha256"]
    config.write_text(yaml.safe_dump(data))
    result = cli("validate", str(config))
    assert result.exit_code == 2 and "system" in result.stderr and "refused" in result.stderr, result.stderr
    (tmp_path / "in").mkdir()
    write_nifti(tmp_path / "in" / "ct.nii.gz", phantom((20, 20, 16)), np.diag([1.5, 1.5, 2.0, 1.0]))
    result = cli("run", str(config), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--workers", "0")
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    _no_marker(tmp_path)


def test_an_arch_code_pickle_that_runs_code_is_refused(tmp_path, cli):
    bundle = copy_bundle("pancreas_ct_dints_segmentation", tmp_path, {})
    _evil_checkpoint(bundle / "models" / "search_code_18590.pt")
    (bundle / "models" / "model.pt").write_bytes(b"")
    _import_refused(cli, bundle, tmp_path, "refused", "search_code")


def test_a_hand_edited_config_with_code_is_refused_by_validate(spleen, tmp_path, cli):
    config = tmp_path / "spleen.yaml"
    assert cli("bundle", "import", str(spleen), "-o", str(config)).exit_code == 0
    data = yaml.safe_load(config.read_text())
    deep = next(s["with"] for s in data["stages"] if s["use"] == "segment.deep")
    deep["network"] = "$__import__('os').system('touch MARKER')"
    config.write_text(yaml.safe_dump(data))
    result = cli("validate", str(config))
    assert result.exit_code == 2
    _no_marker(tmp_path)


def test_self_reference_and_deep_nesting_are_refused(spleen, tmp_path):
    config = read_config(spleen)
    config["network_def"]["num_res_units"] = "@loop"
    config["loop"] = "$@loop + 1"
    write_config(spleen, config)
    _refused(spleen, tmp_path, "refers to itself")
    config["loop"] = "$" + "(" * 400 + "1" + ")" * 400
    write_config(spleen, config)
    _refused(spleen, tmp_path, "refused")
    config["loop"] = "$" + "9" * 3000
    write_config(spleen, config)
    _refused(spleen, tmp_path, "refused")


def test_weights_linked_from_outside_the_bundle_are_refused(spleen, tmp_path):
    outside = tmp_path / "elsewhere.pt"
    (spleen / "models" / "model.pt").rename(outside)
    (spleen / "models" / "model.pt").symlink_to(outside)
    _refused(spleen, tmp_path, "outside the bundle")
    config = read_config(spleen)
    config["checkpointloader"]["load_path"] = "$@bundle_root + '/../elsewhere.pt'"
    write_config(spleen, config)
    _refused(spleen, tmp_path, "outside the bundle")

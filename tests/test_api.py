"""The Python API used from notebooks: same validation, same stages."""

from __future__ import annotations

import pytest

import voxpipe
from tests.conftest import DEMO_CONFIG
from voxpipe.errors import ConfigError


def test_load_pipeline_and_run_one_file(sample_inputs, tmp_path):
    pipe = voxpipe.load_pipeline(DEMO_CONFIG, overrides=["smooth.sigma_mm=2"], device="cpu")
    case = pipe.run_file(sample_inputs / "phantom-3d.nii.gz", output_dir=tmp_path / "one")
    assert case["image"].shape == case["label"].shape == (1, 96, 96, 48)
    assert (tmp_path / "one" / "preview.png").exists()
    assert any(h["op"] == "denoise.gaussian" and h["sigma_mm"] == 2 for h in case["history"])


def test_config_as_dict_and_run(sample_inputs, tmp_path):
    config = {
        "version": 1,
        "name": "nb",
        "device": "cpu",
        "stages": [{"use": "load.auto"}, {"use": "segment.otsu"}, {"use": "write.nifti", "with": {"keys": ["label"]}}],
    }
    summary = voxpipe.run(config, sample_inputs, tmp_path / "out")
    assert summary.exit_code == 0 and summary.count("ok") == 4
    with pytest.raises(ConfigError, match="unknown stage"):
        voxpipe.load_pipeline({**config, "stages": [{"use": "load.autoo"}]})


def test_run_file_without_output_dir_leaves_no_temp_folder(sample_inputs, tmp_path, monkeypatch):
    """Each call used to leave a voxpipe-XXXX folder with full outputs behind."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    pipe = voxpipe.load_pipeline(DEMO_CONFIG, device="cpu")
    for _ in range(2):
        case = pipe.run_file(sample_inputs / "phantom-3d.nii.gz")
        assert case["label"].shape == (1, 96, 96, 48)
        assert "output_dir" not in case
    assert list(scratch.iterdir()) == []


def test_api_and_cli_share_run_defaults():
    """`voxpipe.run` and `voxpipe run` take the same default workers (one constant)."""
    import inspect

    from voxpipe.cli import cli
    from voxpipe.defaults import DEFAULT_WORKERS

    api_default = inspect.signature(voxpipe.run).parameters["workers"].default
    cli_default = next(p.default for p in cli.commands["run"].params if p.name == "workers")
    assert api_default == cli_default == DEFAULT_WORKERS


def test_api_run_takes_the_cli_options_by_the_same_names():
    """Every `voxpipe run` option has a keyword of the same name in `voxpipe.run` (`--no-report` is `report=False`)."""
    import inspect

    from voxpipe.cli import cli

    api = set(inspect.signature(voxpipe.run).parameters)
    spelled = {"input_path": "input_path", "output_dir": "output_dir", "no_report": "report"}
    for param in cli.commands["run"].params:
        assert spelled.get(param.name, param.name) in api, f"voxpipe.run has no `{param.name}`"

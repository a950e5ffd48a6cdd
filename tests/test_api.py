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

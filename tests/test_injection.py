"""Configs never execute or import anything: every attempt is refused and the marker never appears."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

HEADER = "version: 1\nname: evil\n"

PAYLOADS = {
    "python_object_apply": HEADER + 'stages:\n  - use: load.auto\n    with: !!python/object/apply:os.system ["touch {marker}"]\n',
    "python_object_new": HEADER + 'stages: !!python/object/new:subprocess.Popen [["touch", "{marker}"]]\n',
    "python_name": HEADER + "stages:\n  - use: !!python/name:os.system\n",
    "custom_tag": HEADER + 'stages:\n  - use: !shell "touch {marker}"\n',
    "bundle_expression": HEADER + "stages:\n  - use: load.auto\n  - use: denoise.gaussian\n    with: {{sigma_mm: \"$__import__('os').system('touch {marker}')\"}}\n",
    "target_key": HEADER + "stages:\n  - use: load.auto\n  - _target_: os.system\n    command: touch {marker}\n",
    "dotted_import_use": HEADER + "stages:\n  - use: load.auto\n  - use: os.system\n    with: {{command: touch {marker}}}\n",
    "entry_point_string": HEADER + "stages:\n  - use: load.auto\n  - use: monai.ScaleIntensityd\n    with: {{keys: [image], dtype: 'os:system'}}\n",
    "monai_lambda": HEADER + "stages:\n  - use: load.auto\n  - use: monai.Lambdad\n    with: {{keys: [image], func: \"lambda x: __import__('os').system('touch {marker}')\"}}\n",
    "monai_submodule_path": HEADER + "stages:\n  - use: load.auto\n  - use: monai.transforms.utils.os.system\n",
    "monai_bundle_reference": HEADER + "stages:\n  - use: load.auto\n  - use: monai.ScaleIntensityd\n    with: {{keys: \"$@image\"}}\n",
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_injection_refused(cli, tmp_path, sample_inputs, name, command):
    marker = tmp_path / "MARKER"
    config = tmp_path / "evil.yaml"
    config.write_text(PAYLOADS[name].format(marker=marker))
    args = ["validate", config] if command == "validate" else ["run", config, "-i", sample_inputs, "-o", tmp_path / "out"]
    result = cli(*args)
    assert result.exit_code == 2, result
    assert result.error_lines, result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists(), "nothing may be written for an invalid config"


def test_injection_refused_in_fresh_process(tmp_path):
    """The same, through the real entry point: a separate interpreter, no test scaffolding."""
    marker = tmp_path / "MARKER"
    config = tmp_path / "evil.yaml"
    config.write_text(PAYLOADS["python_object_apply"].format(marker=marker))
    proc = subprocess.run([sys.executable, "-m", "voxpipe", "validate", str(config)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "python/object/apply" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not marker.exists()

"""Configs never execute or import anything: every attempt is refused and the marker never appears."""

from __future__ import annotations

import json
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
    "bundle_expression": HEADER
    + "stages:\n  - use: load.auto\n  - use: denoise.gaussian\n    with: {{sigma_mm: \"$__import__('os').system('touch {marker}')\"}}\n",
    "target_key": HEADER + "stages:\n  - use: load.auto\n  - _target_: os.system\n    command: touch {marker}\n",
    "dotted_import_use": HEADER + "stages:\n  - use: load.auto\n  - use: os.system\n    with: {{command: touch {marker}}}\n",
    "entry_point_string": HEADER
    + "stages:\n  - use: load.auto\n  - use: monai.ScaleIntensityd\n    with: {{keys: [image], dtype: 'os:system'}}\n",
    "monai_lambda": HEADER
    + "stages:\n  - use: load.auto\n  - use: monai.Lambdad\n    with: {{keys: [image], func: \"lambda x: __import__('os').system('touch {marker}')\"}}\n",
    "monai_submodule_path": HEADER + "stages:\n  - use: load.auto\n  - use: monai.transforms.utils.os.system\n",
    "monai_bundle_reference": HEADER + 'stages:\n  - use: load.auto\n  - use: monai.ScaleIntensityd\n    with: {{keys: "$@image"}}\n',
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


# ----------------------------------------------------------------------------- MONAI transforms (issue 14 §1)

POC = """\
version: 1
name: poc
stages:
  - use: load.nifti
  - use: monai.LoadImageD
    with: {{keys: [image], reader: subprocess.getoutput, cmd: "id > {marker}"}}
  - use: write.nifti
"""


@pytest.fixture
def one_nifti(tmp_path):
    import numpy as np

    from tests.conftest import write_nifti

    return write_nifti(tmp_path / "in" / "v.nii.gz", np.zeros((6, 6, 6), np.float32)).parent


@pytest.mark.parametrize("command", ["validate", "run"])
def test_reported_poc_is_refused_before_anything_runs(cli, tmp_path, monkeypatch, one_nifti, command):
    """The reproduced config: `monai.LoadImageD` with `reader: subprocess.getoutput` created `pwned`."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    config = tmp_path / "poc.yaml"
    config.write_text(POC.format(marker="pwned"))
    args = ["validate", config] if command == "validate" else ["run", config, "-i", one_nifti, "-o", tmp_path / "out", "--workers", "0"]
    result = cli(*args)
    assert result.exit_code == 2, result
    [line] = result.error_lines
    assert "poc.yaml:5: stage 2 (monai.LoadImageD)" in line and "not allowed" in line and "load.auto" in line
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "poc.yaml"], "nothing may be written"


def test_reported_poc_in_a_fresh_process(tmp_path, one_nifti):
    marker = tmp_path / "pwned"
    config = tmp_path / "poc.yaml"
    config.write_text(POC.format(marker=marker))
    for args in (["validate", str(config)], ["run", str(config), "-i", str(one_nifti), "-o", str(tmp_path / "out"), "--workers", "0"]):
        proc = subprocess.run([sys.executable, "-m", "voxpipe", *args], check=False, capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "not allowed" in proc.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def _name_variants() -> list[str]:
    """Every way to spell a refused MONAI transform that we could think of, for every alias."""
    from voxpipe import monai_adapter, monai_allowlist

    refused = [
        n
        for n, mod in monai_adapter._exported_names().items()
        if mod.endswith("dictionary") and monai_adapter.resolve(n) and not monai_adapter.resolve(n).allowed
    ]
    variants: set[str] = set()
    for name in refused:
        module = monai_adapter.resolve(name).module
        variants |= {
            f"monai.{name}",
            f"monai.{name.lower()}",
            f"monai.{name.upper()}",
            f"monai.{name.swapcase()}",
            f"monai.transforms.{name}",
            f"monai.transforms.{module}.{name}",
            f"monai.{module}.{name}",
            f"monai.{name}.__init__",
            f"monai.{name}.__call__",
            f"monai.{name}.",
            f"monai..{name}",
            f"monai.{name} ",
            f"monai./{name}",
            f"monai:{name}",
            f"MONAI.{name}",
            f"monai.{name}\u200b",
            f"monai.\u200b{name}",
            "monai." + "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in name),  # fullwidth
            "monai." + name.replace("a", "\u0430").replace("e", "\u0435").replace("o", "\u043e"),  # Cyrillic look-alikes
            f"monai.{name[0]}\u0301{name[1:]}",  # combining accent
        }
    assert len(refused) == 3 * (len(monai_allowlist.REFUSED) - 2)  # 3 names each; MapTransform, Decollated live elsewhere
    return sorted(variants)


def test_every_spelling_of_a_refused_transform_is_refused(registry, tmp_path):
    from voxpipe.config import validate_text
    from voxpipe.errors import ConfigError

    marker = tmp_path / "MARKER"
    variants = _name_variants()
    for use in variants:
        text = (
            f"version: 1\nname: evil\nstages:\n  - use: load.auto\n  - use: {json.dumps(use)}\n"
            f"    with: {{keys: [image], reader: os.system, output_dir: /tmp, cmd: 'touch {marker}'}}\n"
        )
        with pytest.raises(ConfigError) as info:
            validate_text(text, registry, source="evil.yaml")
        [line] = info.value.problems
        assert line.startswith("evil.yaml:5: ") and "\n" not in line, line
    assert len(variants) > 500
    assert not marker.exists()


@pytest.mark.parametrize(
    "use",
    [
        "monai.SaveImageD",
        "monai.SaveImageDict",
        "monai.saveimaged",
        "monai.SaveClassificationD",
        "monai.WriteFileMappingDict",
        "monai.DataStatsD",
        "monai.LambdaDict",
        "monai.InvertD",
    ],
)
def test_writers_and_loggers_never_run(cli, tmp_path, sample_inputs, use):
    """`monai.SaveImageD` with `output_dir` once wrote outside `-o` and the run reported ok."""
    elsewhere = tmp_path / "elsewhere"
    config = tmp_path / "w.yaml"
    config.write_text(
        f"version: 1\nname: w\nstages:\n  - use: load.auto\n  - use: {use}\n"
        f"    with: {{keys: [image], output_dir: '{elsewhere}', mapping_file_path: '{elsewhere}/m.json'}}\n"
        "  - use: write.nifti\n"
    )
    result = cli("run", config, "-i", sample_inputs, "-o", tmp_path / "out", "--workers", "0")
    assert result.exit_code == 2, result
    assert len(result.error_lines) == 1 and "not allowed" in result.error_lines[0]
    assert not elsewhere.exists() and not (tmp_path / "out").exists()

"""The command surface: help, version, plugins listing and details, validate."""

from __future__ import annotations

import json

from tests.conftest import DEMO_CONFIG


def test_version_and_help(cli):
    from voxpipe import __version__

    assert cli("--version").stdout.strip() == f"voxpipe {__version__}"
    help_text = cli("--help").stdout
    for command in ("run", "validate", "plugins", "sample-data"):
        assert command in help_text
    assert "Examples:" in help_text
    run_help = cli("run", "--help").stdout
    assert "--set" in run_help and "Exit codes" in run_help and "Example:" in run_help


def test_plugins_grouped_by_kind(cli):
    out = cli("plugins").stdout
    assert out.index("Loaders:") < out.index("load.auto") < out.index("Denoisers:") < out.index("denoise.gaussian")
    assert "Segmenters:" in out and "Writers:" in out and "monai.<Name>" in out
    assert "[voxpipe]" in out


def test_plugins_json(cli):
    data = json.loads(cli("plugins", "--json").stdout)
    ids = {s["id"] for s in data["stages"]}
    assert "segment.otsu" in ids
    gaussian = next(s for s in data["stages"] if s["id"] == "denoise.gaussian")
    sigma = next(p for p in gaussian["parameters"] if p["name"] == "sigma_mm")
    assert sigma["default"] == 1.0 and sigma["required"] is False and "> 0" in sigma["bounds"] and sigma["description"]


def test_plugins_show(cli):
    out = cli("plugins", "show", "denoise.gaussian").stdout
    assert "denoise.gaussian  (denoiser)" in out and "sigma_mm" in out and "[> 0, <= 50]" in out
    missing = cli("plugins", "show", "denoise.gausian")
    assert missing.exit_code == 2 and "did you mean `denoise.gaussian`?" in missing.stderr


def test_validate_ok_and_error(cli, tmp_path):
    ok = cli("validate", DEMO_CONFIG)
    assert ok.exit_code == 0 and "ok: pipeline `quickstart`, 6 stages" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nstages:\n  - use: load.auto\n  - use: segment.otsu\n    with: {nbins: 2}\n")
    result = cli("validate", bad)
    assert result.exit_code == 2
    assert result.error_lines == [
        f"error: {bad}:6: stage 2 (segment.otsu): field `nbins`: Input should be greater than or equal to 8, got 2"
    ]


def test_usage_errors_exit_2(cli):
    assert cli("run").exit_code == 2
    assert cli("frobnicate").exit_code == 2


def test_sample_data(cli, tmp_path):
    out = cli("sample-data", "-o", tmp_path / "s")
    assert out.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["ct-series", "phantom-3d.nii.gz", "shepp-logan.png", "t1-brain.nii.gz"]
    assert len(list((tmp_path / "s" / "ct-series").iterdir())) == 40
    (tmp_path / "s" / "phantom-3d.nii.gz").write_bytes(b"mine")
    for args in (("-o", tmp_path / "s"), (tmp_path / "s",)):  # the positional DIRECTORY is an alias of -o
        again = cli("sample-data", *args)
        assert again.exit_code == 2 and len(again.error_lines) == 1 and "--force" in again.error_lines[0]
    assert (tmp_path / "s" / "phantom-3d.nii.gz").read_bytes() == b"mine"
    assert cli("sample-data", tmp_path / "s", "--force").exit_code == 0
    assert (tmp_path / "s" / "phantom-3d.nii.gz").read_bytes() != b"mine"
    assert cli("sample-data", tmp_path / "t").exit_code == 0

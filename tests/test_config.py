"""Config validation: every problem is one line naming file:line, stage, field and a fix."""

from __future__ import annotations

import pytest

from voxpipe.config import load_config, validate_text
from voxpipe.errors import ConfigError

GOOD = """\
version: 1
name: t
stages:
  - use: load.auto
  - use: denoise.gaussian
    id: smooth
    with: {sigma_mm: 1.5}
  - use: segment.otsu
  - use: write.nifti
    with: {keys: [image, label]}
"""


def problems(text: str, registry, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_text(text, registry, source="p.yaml", overrides=overrides)
    return info.value.problems


def test_good_config_validates_with_defaults_filled(registry):
    validated = validate_text(GOOD, registry, source="p.yaml")
    assert [s.spec.id for s in validated.stages] == ["load.auto", "denoise.gaussian", "segment.otsu", "write.nifti"]
    assert validated.stages[1].label == "smooth"
    resolved = validated.resolved()
    assert resolved["stages"][1]["with"] == {"key": "image", "sigma_mm": 1.5, "truncated": 4.0, "backend": "auto"}
    assert resolved["device"] == "auto"


def test_hash_depends_on_values_not_formatting(registry):
    a = validate_text(GOOD, registry).hash
    b = validate_text(GOOD.replace("{sigma_mm: 1.5}", "\n      sigma_mm: 1.5\n      truncated: 4.0"), registry).hash
    c = validate_text(GOOD.replace("1.5", "2.5"), registry).hash
    assert a == b != c


def test_unknown_stage_suggests_closest(registry):
    [line] = problems(GOOD.replace("denoise.gaussian", "denoise.gausian"), registry)
    assert line.startswith('p.yaml:5: stage 2 "smooth" (denoise.gausian)')
    assert "did you mean `denoise.gaussian`?" in line


def test_unknown_field_suggests_closest(registry):
    [line] = problems(GOOD.replace("sigma_mm", "sigma_m"), registry)
    assert line.startswith('p.yaml:7: stage 2 "smooth" (denoise.gaussian)')
    assert "unknown field `sigma_m`" in line and "did you mean `sigma_mm`?" in line


def test_wrong_type_and_out_of_bounds(registry):
    [wrong] = problems(GOOD.replace("1.5", "wide"), registry)
    assert "field `sigma_mm`" in wrong and "valid number" in wrong and "'wide'" in wrong
    [bounds] = problems(GOOD.replace("1.5", "-2"), registry)
    assert "field `sigma_mm`" in bounds and "greater than 0" in bounds


def test_all_problems_reported_at_once(registry):
    text = GOOD.replace("1.5", "-2").replace("segment.otsu", "segment.otzu").replace("name: t", "name: t\ncolour: red")
    lines = problems(text, registry)
    assert len(lines) == 3, lines
    assert any("unknown field `colour`" in l for l in lines)
    assert any("segment.otzu" in l and "did you mean `segment.otsu`" in l for l in lines)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("version: 1\nname: t\nstages: [\n", "p.yaml:4: YAML syntax error"),
        ("version: 2\nname: t\nstages: [{use: load.auto}]\n", "unsupported config version"),
        ("name: t\nstages: [{use: load.auto}]\n", "field `version` is required"),
        ("version: 1\nname: t\nstages: []\n", "field `stages`"),
        ("version: 1\nname: t\nname: u\nstages: [{use: load.auto}]\n", "p.yaml:3: duplicate key `name`"),
        ("- just\n- a list\n", "expected a mapping"),
        ("version: 1\nname: t\ndevice: gpu\nstages: [{use: load.auto}]\n", "field `device`"),
        ("version: 1\nname: t\nstages: [{use: segment.otsu}]\n", "the first stage must be a loader"),
        ("version: 1\nname: t\nstages: [{use: load.auto}, {use: write.nifti, with: {keys: [label]}}]\n",
         "reads `label`, which no earlier stage writes"),
        ("version: 1\nname: t\nstages: [{use: load.auto, id: a}, {use: segment.otsu, id: a}]\n", "id `a` is already used"),
        ("version: 1\nname: t\nstages: [{use: load.auto, wiht: {}}]\n", "unknown field `wiht`; did you mean `with`?"),
    ],
)
def test_malformed_configs(registry, text, expected):
    lines = problems(text, registry)
    assert any(expected in line for line in lines), lines
    assert all("\n" not in line for line in lines)


def test_missing_config_file(registry, tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", registry)
    assert "config file not found" in str(info.value)


@pytest.mark.parametrize(
    "override, stage_index, field, value",
    [
        ("smooth.sigma_mm=3", 1, "sigma_mm", 3.0),  # by the stage's id
        ("denoise.gaussian.sigma_mm=0.5", 1, "sigma_mm", 0.5),  # by its registry id
        ("3.nbins=64", 2, "nbins", 64),  # by 1-based position
        ("write.nifti.keys=[image]", 3, "keys", ["image"]),  # YAML value
    ],
)
def test_overrides(registry, override, stage_index, field, value):
    validated = validate_text(GOOD, registry, overrides=[override])
    assert getattr(validated.stages[stage_index].params, field) == value


def test_top_level_override_and_device(registry):
    validated = validate_text(GOOD, registry, overrides=["device=cpu", "name=other"])
    assert validated.config.device == "cpu" and validated.config.name == "other"


def test_bad_overrides_are_one_line_errors(registry):
    [line] = problems(GOOD, registry, overrides=["smooth.sigma_mm=-1"])
    assert line.startswith('p.yaml (--set): stage 2 "smooth" (denoise.gaussian)') and "greater than 0" in line
    [line] = problems(GOOD, registry, overrides=["smoth.sigma_mm=1"])
    assert "no stage `smoth`" in line and "did you mean `smooth`?" in line
    [line] = problems(GOOD, registry, overrides=["nonsense"])
    assert "expected STAGE.FIELD=VALUE" in line


def test_overrides_are_checked_for_code_too(registry):
    lines = problems(GOOD, registry, overrides=["description=$__import__('os')"])
    assert any("looks like code" in line for line in lines)


def test_free_text_may_contain_colons(registry):
    validated = validate_text(GOOD.replace("name: t", "name: t\ndescription: 'Phase:one'"), registry)
    assert validated.config.description == "Phase:one"


def test_hash_ignores_device_and_name(registry):
    base = validate_text(GOOD, registry).hash
    assert validate_text(GOOD, registry, overrides=["device=cpu", "name=other"]).hash == base

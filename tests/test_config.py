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
    assert any("unknown field `colour`" in line for line in lines)
    assert any("segment.otzu" in line and "did you mean `segment.otsu`" in line for line in lines)


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
        (
            "version: 1\nname: t\nstages: [{use: load.auto}, {use: write.nifti, with: {keys: [label]}}]\n",
            "reads `label`, which no earlier stage writes",
        ),
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


# ----------------------------------------------------------------------------- YAML that recurses or explodes (issue 14 §6)


def _laughs(levels: int = 9) -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    "alias_in_own_sequence": ("x: &a [*a]\n", "recursive alias"),
    "alias_in_own_mapping": ("x: &a {y: *a}\n", "recursive alias"),
    "alias_through_both": ("x: &a [{y: [1, {z: *a}]}]\n", "recursive alias"),
    "alias_mutual": ("x: &a [{y: &b [*b, *a]}]\n", "recursive alias"),
    "alias_as_stages": ("version: 1\nname: t\nstages: &s\n  - use: load.auto\n    with: {x: *s}\n", "recursive alias"),
    "deep_flow_sequence": ("x: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    "deep_flow_mapping": ("x: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "nested too deeply"),
    "deep_block_sequence": ("x:\n" + "".join("  " * i + "-\n" for i in range(1, 3000)), "nested too deeply"),
    "deep_block_mapping": ("".join("  " * i + f"k{i}:\n" for i in range(3000)), "nested too deeply"),
    "deep_through_aliases": ("a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 40 + "*a" + "]" * 40 + "\n", "nested too deeply"),
    "billion_laughs": (_laughs(), "more than 100000 values"),
    "long_text_laughs": ("a: &a " + "x" * 200_000 + "\nb: [*a, *a, *a, *a, *a, *a]\n", "characters"),
    "huge_integer": ("version: 1\nname: t\nx: " + "9" * 5000 + "\n", "cannot be read as int"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_YAML))
def test_hostile_yaml_is_a_config_error(registry, name):
    text, expected = HOSTILE_YAML[name]
    [line] = problems(text, registry)
    assert expected in line and line.startswith("p.yaml"), line


@pytest.mark.parametrize("name", sorted(HOSTILE_YAML))
def test_hostile_yaml_through_the_cli(cli, tmp_path, name):
    """Once 'internal error: RecursionError', exit 3; now one line and exit 2."""
    config = tmp_path / "h.yaml"
    config.write_text(HOSTILE_YAML[name][0])
    result = cli("validate", config)
    assert result.exit_code == 2, result
    assert len(result.stderr.strip().splitlines()) == 1 and result.error_lines, result.stderr
    assert "internal error" not in result.stderr and "RecursionError" not in result.stderr


@pytest.mark.parametrize("value", ["&a [*a]", "&a {b: *a}", "&a [{b: [*a]}]", "[" * 3000 + "]" * 3000, "{a: " * 3000 + "1" + "}" * 3000])
def test_hostile_set_values(cli, tmp_path, value):
    config = tmp_path / "g.yaml"
    config.write_text(GOOD)
    result = cli("validate", config, "--set", f"smooth.sigma_mm={value}")
    assert result.exit_code == 2, result
    [line] = result.error_lines
    assert line.startswith("error: --set 'smooth.sigma_mm=") and len(line) < 200
    assert "internal error" not in result.stderr


def test_deep_set_field_path(registry):
    [line] = problems(GOOD, registry, overrides=["smooth." + "x." * 3000 + "y=1"])
    assert "nested more than" in line and len(line) < 200


def test_sane_anchors_and_nesting_still_work(registry):
    text = GOOD.replace("with: {sigma_mm: 1.5}", "with: {sigma_mm: &s 1.5, truncated: *s}")
    assert validate_text(text, registry).stages[1].params.truncated == 1.5
    from voxpipe import safe_yaml

    assert safe_yaml.load("x: " + "[" * 63 + "]" * 63).data is not None


# ----------------------------------------------------------------------------- where a --set value is reported


@pytest.mark.parametrize(
    "override, expected",
    [
        ("smooth.sigma_mm=$x", "looks like code"),
        ("smooth.sigma_mm=os.path:join", "looks like code"),
        ("smooth._target_=os.system", "key `_target_` is not allowed"),
        ("smooth.extra={_target_: os.system}", "key `_target_` is not allowed"),
        ("smooth.extra={deeper: {value: $x}}", "looks like code"),
        ("smooth.sigma_mm=wide", "field `sigma_mm`"),
        ("smooth.sigmaa=1", "unknown field `sigmaa`"),
        ("name=a b", "field `name`"),
        ("description=$x", "looks like code"),
    ],
)
def test_set_values_are_attributed_to_set(registry, override, expected):
    """A value from --set is never blamed on a line of the file (it was `p.yaml:7` before)."""
    lines = problems(GOOD, registry, overrides=[override])
    [line] = [line for line in lines if expected in line]
    assert line.startswith("p.yaml (--set): "), line


def test_file_values_keep_their_line_beside_a_set(registry):
    lines = problems(GOOD.replace("1.5", "$x"), registry, overrides=["smooth.truncated=$y"])
    assert sorted(line.split(": value")[0] for line in lines) == ["p.yaml (--set)", "p.yaml:7"]


def test_monai_arguments_from_set_are_attributed_to_set(registry):
    text = GOOD.replace("denoise.gaussian", "monai.ScaleIntensityRanged").replace("{sigma_mm: 1.5}", "{keys: [image], a_min: 0, a_max: 1}")
    [line] = problems(text, registry, overrides=["smooth.reader=os.system"])
    assert line.startswith('p.yaml (--set): stage 2 "smooth" (monai.ScaleIntensityRanged): unknown field `reader`'), line

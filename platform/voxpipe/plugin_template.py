"""``voxpipe plugins new NAME``: write a working plugin package to start from.

The package has what docs/writing-plugins.md describes, each piece in its own module: a stage
(``NAME.scale``, which records a report metric), a command (``voxpipe NAME-hello``), a test
that runs the stage through the case contract with ``voxpipe.plugin.run_stage``, and a
``pyproject.toml`` with the ``voxpipe`` entry point. ``pip install -e DIR`` installs it and
``pytest DIR/tests`` passes. The templates are Python strings, so they ship with the core
without package data.
"""

from __future__ import annotations

import re
from pathlib import Path

from voxpipe.errors import UsageError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,30}$")


class TemplateError(UsageError):
    """The name or the folder cannot be used; the CLI prints the line and exits 2."""


PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "voxpipe-{dist}"
version = "0.1.0"
description = "VoxPipe plugin {name}: a stage and a command."
requires-python = ">=3.11"
dependencies = ["voxpipe"]

# The plugin's name is the entry point's: `voxpipe plugins`, --allow-plugin and --block-plugin use it.
[project.entry-points.voxpipe]
{name} = "{package}.plugin"

[tool.setuptools]
packages = ["{package}"]
"""

README = """\
# voxpipe-{dist}

A VoxPipe plugin made by `voxpipe plugins new {name}`:

- stage `{name}.scale`: multiplies the image by `factor` and reports its mean as a metric;
- command `voxpipe {name}-hello`.

```bash
pip install -e .
voxpipe plugins check {name}
pytest tests
```
"""

PLUGIN = '''\
"""Registration only: pydantic and voxpipe.plugin, nothing heavy (voxpipe --help and plugins stay fast)."""

from pydantic import Field

from voxpipe.plugin import CaseKey, StageKind, StageParams, StageSpec, hookimpl


class ScaleParams(StageParams):
    key: CaseKey = Field("image", description="Case key of the image to scale (replaced).")
    factor: float = Field(2.0, gt=0, le=1000, description="What the intensities are multiplied by.")


@hookimpl
def voxpipe_register_stages(register):
    register(StageSpec(
        id="{name}.scale",
        kind=StageKind.TRANSFORM,
        summary="Multiply the image by a factor and report its mean.",
        params=ScaleParams,
        factory="{package}.stages:Scale",  # imported only when a pipeline is built
        reads=("{{key}}",),
        writes=("{{key}}",),
    ))


@hookimpl
def voxpipe_register_commands(register):
    from voxpipe.plugin import CommandSpec

    register(CommandSpec(name="{name}-hello", summary="Say hello from {name}.", factory="{package}.commands:hello"))
'''

STAGES = '''\
"""The stage: torch and MONAI may be imported here, it is loaded only when a pipeline is built."""

from voxpipe.plugin import as_image, record, report_metric


class Scale:
    """``case -> case``: a MONAI-style dictionary transform."""

    def __init__(self, key: str = "image", factor: float = 2.0) -> None:
        self.key, self.factor = key, factor

    def __call__(self, case: dict) -> dict:
        out = dict(case)  # never change the input case
        image = case[self.key]
        out[self.key] = as_image(image.as_tensor() * self.factor, image)  # keeps affine and meta
        record(out, "{name}.scale", factor=self.factor)
        report_metric(out, "{name}.mean", float(out[self.key].mean()), label="mean after scaling")
        return out
'''

COMMANDS = '''\
"""``voxpipe {name}-hello``: imported only when the command runs or its --help is shown."""

import click


@click.command()
@click.option("--name", default="world", show_default=True, help="Whom to greet.")
def hello(name: str) -> None:
    """Say hello from {name}."""
    click.echo(f"hello, {{name}}, from {name}")
'''

TEST = '''\
"""The stage through the case contract, on a tiny synthetic case; the command through click."""

import torch
from click.testing import CliRunner

from voxpipe.plugin import run_stage
from {package}.commands import hello
from {package}.stages import Scale


def test_scale_keeps_geometry(tmp_path):
    before = run_stage("{name}.scale", {{"factor": 1.0}}, output_dir=tmp_path / "a")
    case = run_stage("{name}.scale", {{"factor": 3.0}}, output_dir=tmp_path / "b")
    assert torch.allclose(case["image"].as_tensor(), 3.0 * before["image"].as_tensor())
    assert torch.equal(case["image"].affine, before["image"].affine)
    assert case["history"][-1] == {{"op": "{name}.scale", "factor": 3.0}}


def test_the_input_case_is_unchanged(tmp_path):
    case = run_stage("{name}.scale", output_dir=tmp_path)
    again = Scale(factor=2.0)(case)
    assert again["history"] is not case["history"] and len(case["history"]) == len(again["history"]) - 1


def test_hello():
    result = CliRunner().invoke(hello, ["--name", "tests"])
    assert result.exit_code == 0 and "hello, tests, from {name}" in result.output
'''


def write_plugin_package(name: str, target: Path) -> Path:
    """Write the package for plugin ``name`` into the new folder ``target/name``; return that folder.

    Raises:
        TemplateError: ``name`` is not a lower-case identifier, or ``target/name`` exists and
            is not empty (nothing is overwritten).
    """
    if not NAME_PATTERN.match(name or ""):
        raise TemplateError(
            f"plugin name {name!r}: use 2-31 lower-case letters, digits and _, starting with a letter "
            "(it becomes the stage family, the entry point and the package name)"
        )
    target = Path(target) / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise TemplateError(f"{target}: exists and is not an empty folder; choose another --dir")
    values = {"name": name, "dist": name.replace("_", "-"), "package": f"voxpipe_{name}"}
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{values['package']}/__init__.py": '"""VoxPipe plugin {name}."""\n',
        f"{values['package']}/plugin.py": PLUGIN,
        f"{values['package']}/stages.py": STAGES,
        f"{values['package']}/commands.py": COMMANDS,
        f"tests/test_{name}.py": TEST,
    }
    for relative, template in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
    return target

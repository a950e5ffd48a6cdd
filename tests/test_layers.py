"""The layer contract: the core (``platform/voxpipe``) imports no plugin (``voxpipe_plugins``).

Three independent checks, so that no single blind spot lets an import through:

* an AST walk of every module under ``platform/``: ``import``/``from`` statements at any
  depth (inside functions too), ``importlib.import_module(...)``, ``__import__(...)``,
  ``import_object(...)``-style ``"module:attr"`` strings, and any string constant (also
  the constant parts of f-strings and of ``"a" + "b"``) that names the plugin package;
* import-linter's ``forbidden`` contract from pyproject.toml (its own import graph);
* at run time: the light commands with every plugin blocked leave no ``voxpipe_plugins``
  module in ``sys.modules``.

Each check is shown to catch a planted offender (so none of them can pass vacuously).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "platform"
PLUGIN_PACKAGE = "voxpipe_plugins"


def _names_plugin(text: str) -> bool:
    """``voxpipe_plugins``, ``voxpipe_plugins.x``, ``voxpipe_plugins.x:y``, at the start of a string or after a space/quote."""
    for token in text.replace("'", " ").replace('"', " ").replace("`", " ").split():
        head = token.split(":", 1)[0]
        if head == PLUGIN_PACKAGE or head.startswith(PLUGIN_PACKAGE + "."):
            return True
    return False


def _folded(node: ast.AST) -> str | None:
    """The text of a string constant, an f-string's constant parts, or a ``+`` of string constants."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _folded(node.left), _folded(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of docstring nodes: prose may mention the plugin package (never code)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def offenders(source: str, filename: str = "<module>") -> list[str]:
    """Every way ``source`` imports or names the plugin package, as ``line: what``."""
    tree = ast.parse(source, filename)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"{line}: import {a.name}" for a in node.names if _names_plugin(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.module and _names_plugin(node.module):
                found.append(f"{line}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                text = _folded(arg)
                if text is not None and _names_plugin(text):
                    found.append(f"{line}: call with {text!r}")
        elif id(node) not in docstrings:
            text = _folded(node) if isinstance(node, (ast.Constant, ast.JoinedStr, ast.BinOp)) else None
            if text is not None and _names_plugin(text):
                found.append(f"{line}: string {text!r}")
    return sorted(set(found))


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_the_walk_sees_every_form_of_import() -> None:
    """The walk itself: each planted form is found; the clean forms (and prose) are not."""
    planted = [
        "import voxpipe_plugins",
        "import voxpipe_plugins.preview.render as r",
        "from voxpipe_plugins.preview import render",
        "def f():\n    from voxpipe_plugins.x import y\n    return y",
        "class C:\n    def m(self):\n        import voxpipe_plugins.a.b",
        "import importlib\nimportlib.import_module('voxpipe_plugins.preview.render')",
        "from importlib import import_module as im\nim(name='voxpipe_plugins.x')",
        "__import__('voxpipe_plugins.x')",
        "REF = 'voxpipe_plugins.preview.render:render'",
        "REF = 'voxpipe_' + 'plugins.preview'",
        "x = 1\nREF = f'voxpipe_plugins.{x}:render'",
        "if True:\n    try:\n        import voxpipe_plugins\n    except ImportError:\n        pass",
    ]
    for source in planted:
        assert offenders(source), source
    clean = [
        '"""Docs may say voxpipe_plugins.preview renders pictures."""',
        "import voxpipe.registry\nfrom voxpipe import cli",
        "NAME = 'voxpipe_pluginsX'",
        "def f():\n    '''voxpipe_plugins.x is a plugin.'''\n    return 1",
    ]
    for source in clean:
        assert offenders(source) == [], source


def test_no_core_module_imports_a_plugin() -> None:
    modules = core_modules()
    assert len(modules) > 30, "the walk found too few core modules: is CORE right?"
    found = {str(path.relative_to(REPO)): bad for path in modules if (bad := offenders(path.read_text(), str(path)))}
    assert not found, "the core imports or names the plugin package:\n" + json.dumps(found, indent=2)


def test_no_init_in_platform() -> None:
    """platform/ is a source root: an __init__.py would make it shadow the standard `platform` module."""
    assert not (CORE / "__init__.py").exists()


@pytest.mark.skipif(
    shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
    reason="import-linter is not installed (pip install -e .[test])",
)
def test_import_linter_contract_holds(tmp_path: Path) -> None:
    lint = str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint, "--no-cache"], check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The core (voxpipe) imports no plugin" in result.stdout and "KEPT" in result.stdout


@pytest.mark.skipif(
    shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
    reason="import-linter is not installed (pip install -e .[test])",
)
def test_import_linter_catches_a_planted_import(tmp_path: Path) -> None:
    """The contract is live: a copy of the core with one function-local plugin import breaks it."""
    core, plugins = tmp_path / "platform", tmp_path / "plugins"
    shutil.copytree(CORE / "voxpipe", core / "voxpipe")
    shutil.copytree(REPO / "plugins" / PLUGIN_PACKAGE, plugins / PLUGIN_PACKAGE)
    (core / "voxpipe" / "planted.py").write_text("def f():\n    from voxpipe_plugins.preview import render\n    return render\n")
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    env = dict(os.environ, PYTHONPATH=f"{core}{os.pathsep}{plugins}")
    lint = str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint, "--no-cache"], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "voxpipe.planted -> voxpipe_plugins.preview" in result.stdout, result.stdout + result.stderr


PROBE = """
import json, sys
from voxpipe.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("@@" + json.dumps(sorted(m for m in sys.modules if m == "voxpipe_plugins" or m.startswith("voxpipe_plugins."))))
"""


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["plugins", "--json"], ["run", "--help"], ["validate", "--help"]])
def test_the_core_runs_without_importing_a_plugin(args: list[str], tmp_path: Path) -> None:
    """With every plugin blocked, the core's own commands import nothing from the plugin package."""
    env = dict(os.environ, VOXPIPE_PLUGINS_ALLOW="no-such-plugin", VOXPIPE_ID_KEY_FILE=str(tmp_path / "id.key"))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("@@"))
    assert json.loads(line[2:]) == [], f"`voxpipe {' '.join(args)}` imported plugin modules: {line}"

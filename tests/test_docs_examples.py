"""Every command and Python example in README.md and docs/*.md runs, so the docs cannot drift.

What is run (the marker convention, also in docs/architecture.md, "Examples in the docs"):

- a ```bash or ```sh block: every line is a command (``# comments`` dropped, ``\\`` continuations
  joined); a ```console block: its ``$ `` lines are commands, the rest is their output;
- a ```python block runs in a fresh interpreter, in page order with the commands;
- a block whose first line is ``# file: PATH`` (any language) is written to PATH instead, for the
  commands after it (a script, a config);
- ```text, ```yaml, ```json, ```mermaid and blocks with no language are shown, never run;
- ``<!-- not-run: REASON -->`` on the line before a block: shown, never run (a reason is required);
- ``<!-- slow: REASON -->`` on the line before a block: it and everything after it on the page run
  only with ``pytest -m slow`` (training, long runs).

Each page runs, in order and each command with a timeout, in its own temporary folder that holds a
copy of the repository's configs/ and nothing else, with HOME there too: data comes from the
documented commands on the page (``voxpipe sample-data ...``), as on a fresh clone. ``voxpipe``
lines run in-process (torch is imported once), anything else in bash with this environment's
``voxpipe`` and ``python`` first on PATH; every command must exit 0.

docs/writing-plugins.md has its own test (tests/test_docs_writing_plugins.py), which installs the
plugin the page builds.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PAGES = [REPO / "README.md"] + sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "writing-plugins.md")
RUN_LANGS = {"bash", "sh", "console", "python"}
BLOCK = re.compile(r"^(?P<indent> *)```(\w*)[^\n]*\n(.*?)^(?P=indent)```", re.DOTALL | re.MULTILINE)
MARKER = re.compile(r"<!--\s*(not-run|slow):\s*(.*?)\s*-->\s*$")
FILE = re.compile(r"^# file: (\S+)\n")
TIMEOUT_S = 300

# Commands never run as written, each with why (kept short: prefer a runnable example).
SKIP = {
    "make ": "rebuilds .venv and runs the whole suite: that is CI itself (.ci/run)",
    "source .venv/bin/activate": "the test already runs in this environment",
    "pip install": "installs into the shared environment; the plugin page's own test installs",
    "dask ": "starts a Dask scheduler or worker: a cluster, not a fresh clone",
    "--executor tcp://": "needs a running Dask scheduler (docs/scaling.md; tests/test_dask.py)",
}


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    text: str
    marker: str  # "", "not-run" or "slow"
    reason: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for m in BLOCK.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARKER.search(before)
        found.append(
            Block(
                page,
                text.count("\n", 0, m.start()) + 1,
                m.group(2),
                re.sub(rf"^{m.group('indent')}", "", m.group(3), flags=re.MULTILINE),
                mark.group(1) if mark else "",
                mark.group(2) if mark else "",
            )
        )
    return found


def commands(block: Block) -> list[str]:
    """The shell commands of a bash/sh/console block, comments and continuations resolved."""
    lines = block.text.splitlines()
    if block.lang == "console":
        lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
    joined, cur = [], ""
    for ln in lines:
        if ln.rstrip().endswith("\\"):
            cur += ln.rstrip()[:-1] + " "
            continue
        joined.append(cur + ln)
        cur = ""
    return [ln.strip() for ln in joined if shlex.split(ln, comments=True)]


def skip_reason(command: str) -> str | None:
    for key, why in SKIP.items():
        if command.startswith(key) or (key.startswith("--") and key in command):
            return why
    return None


def runnable(page: Path, slow: bool) -> list[Block]:
    """The page's blocks to run: everything up to its first slow block, or everything."""
    out = []
    for b in blocks(page):
        if b.marker == "slow" and not slow:
            break
        if b.marker == "not-run" or not (b.lang in RUN_LANGS or FILE.match(b.text)):
            continue
        out.append(b)
    return out


def _run_page(page: Path, slow: bool, tmp_path: Path, cli, monkeypatch) -> int:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(REPO / "configs", work / "configs")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(work))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    ran = 0
    for block in runnable(page, slow):
        found = FILE.match(block.text)
        if found:
            target = work / found.group(1)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text[found.end() :], encoding="utf-8")
            continue
        if block.lang == "python":
            done = subprocess.run(
                [sys.executable, "-c", block.text],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
            assert done.returncode == 0, f"{block.where}: python block failed:\n{done.stderr[-3000:]}"
            ran += 1
            continue
        for command in commands(block):
            if skip_reason(command):
                continue
            words = shlex.split(command, comments=True)
            if words[0] == "voxpipe" and not set("|&;<>$`*") & set(" ".join(words)):
                result = cli(*[os.path.expanduser(w) for w in words[1:]])
                assert result.exit_code == 0, (
                    f"{block.where}: `{command}` exited {result.exit_code}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
                )
            else:
                done = subprocess.run(
                    ["bash", "-c", command],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT_S,
                )
                assert done.returncode == 0, f"{block.where}: `{command}` exited {done.returncode}:\n{done.stderr[-3000:]}"
            ran += 1
    return ran


def _ids(pages: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in pages]


FAST = [p for p in PAGES if runnable(p, slow=False)]
SLOW = [p for p in PAGES if any(b.marker == "slow" for b in blocks(p))]


@pytest.mark.parametrize("page", FAST, ids=_ids(FAST))
def test_page_examples_run(page, tmp_path, cli, monkeypatch):
    assert _run_page(page, False, tmp_path, cli, monkeypatch) > 0


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW, ids=_ids(SLOW))
def test_page_examples_run_slow(page, tmp_path, cli, monkeypatch):
    assert _run_page(page, True, tmp_path, cli, monkeypatch) > 0


def test_markers_say_why():
    for page in PAGES:
        for b in blocks(page):
            if b.marker:
                assert len(b.reason) > 10, f"{b.where}: `<!-- {b.marker}: -->` needs a reason"


def test_every_runnable_command_is_known():
    """A command is run, or skipped for a reason listed in SKIP; a new kind of line shows up here."""
    for page in PAGES:
        for b in blocks(page):
            if b.marker == "not-run" or b.lang not in {"bash", "sh", "console"}:
                continue
            for command in commands(b):
                first = shlex.split(command, comments=True)[0]
                assert first in {"voxpipe", "python", "pytest"} or skip_reason(command), (
                    f"{b.where}: `{command}`: run it, or add it to SKIP with a reason"
                )


def test_shown_configs_are_the_files():
    """A ```yaml block headed `# configs/NAME.yaml` is that file as it is (its header comments aside)."""
    shown = {}
    for page in PAGES:
        for b in blocks(page):
            head = re.match(r"# (configs/[\w.-]+\.yaml)\n", b.text)
            if b.lang == "yaml" and head:
                shown.setdefault(head.group(1), []).append(b)
    assert "configs/quickstart.yaml" in {k for k, v in shown.items() if any(b.page.name == "README.md" for b in v)}
    for name, found in shown.items():
        config = (REPO / name).read_text(encoding="utf-8")
        body = "".join(ln for ln in config.splitlines(keepends=True) if not ln.startswith("#"))
        for b in found:
            assert b.text.split("\n", 1)[1] == body, f"{b.where}: differs from {name}"


def test_unet_weights_are_where_the_readme_trains_them():
    """`voxpipe train configs/unet-train.yaml -o DIR` then `run` finds DIR/best.safetensors."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    trained = re.search(r"voxpipe train configs/unet-train\.yaml -o (\S+)", readme)
    assert trained, "README.md trains configs/unet-train.yaml"
    config = yaml.safe_load((REPO / "configs" / "unet-train.yaml").read_text(encoding="utf-8"))
    weights = next(s["with"]["weights"] for s in config["stages"] if s["use"] == "segment.deep")
    data = config["training"]["data"]
    base = REPO / "configs"
    out = Path(trained.group(1).rstrip("/"))
    assert (base / weights).resolve() == (REPO / out / "best.safetensors").resolve()
    generated = re.search(r"python -m voxpipe_plugins\.deep\.synthetic (\S+)", readme)
    assert generated, "README.md shows the command that makes the UNet's training data"
    assert (base / data).resolve() == (REPO / generated.group(1)).resolve()

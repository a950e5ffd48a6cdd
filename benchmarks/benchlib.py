"""Shared by the benchmark scripts: the machine they ran on, and their section of docs/benchmarks.md.

Each script owns one section between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``
markers and replaces only that, so scripts can be rerun independently.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"


def machine(extra: str = "") -> str:
    """CPU model, cores (and how many this process may use), OS and Python."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    core_text = f"{cores} logical cores" + (f" ({usable} usable)" if usable != cores else "")
    py = f"Python {platform.python_version()} ({platform.python_implementation()})"
    return ", ".join(part for part in (cpu, core_text, extra, f"{platform.system()} {platform.release()}", py) if part)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for timed child processes: ours, as an installed VoxPipe would see it.

    Without ``VOXPIPE_DEBUG`` (tracebacks), and without ``PYTHONDONTWRITEBYTECODE``: an
    installed package runs from cached bytecode, and a shell that sets it (this one did)
    makes every child recompile its modules, ~50 ms that no user pays.
    """
    env = dict(os.environ, **extra)
    for name in ("VOXPIPE_DEBUG", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    return env


def write_section(begin: str, end: str, text: str, doc: Path = DOC) -> None:
    """Replace the text between (and including) the ``begin``/``end`` markers in ``doc``."""
    content = doc.read_text() if doc.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(content):
        raise SystemExit(f"{doc}: markers {begin} ... {end} not found; add them where the section belongs")
    doc.write_text(pattern.sub(lambda _: text, content, count=1))
    print(f"updated {doc.relative_to(REPO)}", file=sys.stderr)

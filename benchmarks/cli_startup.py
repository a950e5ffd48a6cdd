#!/usr/bin/env python
"""CLI startup benchmark: wall time of the light ``voxpipe`` commands vs. ``import click``.

``voxpipe --help`` loads the plugin registry (commands are plugin contributions, listed from
their specs' summaries without importing their modules), so it costs about what ``voxpipe
plugins`` does; ``voxpipe info --help`` adds the import of one plugin command module.

Every measurement is a fresh process (``subprocess.run``, stdout/stderr captured). The
commands are run interleaved, round by round, so that drift in machine load affects all
of them alike. ``python -c "import torch"`` and ``python -c "import monai"`` are timed a
few times for scale.

    python benchmarks/cli_startup.py              # print the table
    python benchmarks/cli_startup.py --write      # also update docs/benchmarks.md
    python benchmarks/cli_startup.py --repeat 20 --heavy-repeat 5

Goal (docs/benchmarks.md): each light command <= 0.5 s median. This script only reports
(exit status 0 whatever the timings); timings are never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import benchlib

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- cli-startup:begin -->", "<!-- cli-startup:end -->"
GOAL_S = 0.5


@dataclass
class Case:
    label: str
    argv: list[str]
    heavy: bool = False  # timed only for scale, fewer repetitions
    goal: bool = False  # subject to the <= GOAL_S goal
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)


def build_cases() -> list[Case]:
    python = sys.executable
    voxpipe = str(Path(sys.executable).parent / "voxpipe")
    demo = "configs/demo.yaml"
    return [
        Case('`python -c "import click"` (baseline)', [python, "-c", "import click"]),
        Case("`voxpipe --help`", [voxpipe, "--help"], goal=True),
        Case("`voxpipe plugins`", [voxpipe, "plugins"], goal=True),
        # a plugin's command: the registry resolves it, then only its own module is imported
        Case("`voxpipe info --help`", [voxpipe, "info", "--help"], goal=True),
        Case(f"`voxpipe validate {demo}`", [voxpipe, "validate", demo], goal=True),
        Case('`python -c "import torch"` (scale)', [python, "-c", "import torch"], heavy=True),
        Case('`python -c "import monai"` (scale)', [python, "-c", "import monai"], heavy=True),
    ]


def time_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed (rc {proc.returncode}): {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def run(cases: list[Case], repeat: int, heavy_repeat: int, warmup: int) -> None:
    with tempfile.TemporaryDirectory(prefix="voxpipe-bench-") as tmp:
        env = benchlib.child_env(VOXPIPE_ID_KEY_FILE=str(Path(tmp) / "id.key"))
        # Warm-up: fill the OS page cache and write .pyc files; not recorded.
        for _ in range(warmup):
            for case in cases:
                time_once(case.argv, env)
        for round_ in range(repeat):
            for case in cases:
                if case.heavy and round_ >= heavy_repeat:
                    continue
                case.times.append(time_once(case.argv, env))
            print(f"round {round_ + 1}/{repeat} done", file=sys.stderr)


machine = benchlib.machine


def table(cases: list[Case]) -> str:
    baseline = cases[0].median
    lines = [
        "| command | runs | median (s) | min (s) | median / baseline | goal ≤ 0.5 s |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for case in cases:
        goal = ("met" if case.median <= GOAL_S else "**not met**") if case.goal else "–"
        lines.append(f"| {case.label} | {len(case.times)} | {case.median:.3f} | {case.best:.3f} | {case.median / baseline:.1f}× | {goal} |")
    return "\n".join(lines)


def section(cases: list[Case], repeat: int, heavy_repeat: int, warmup: int) -> str:
    today = _dt.date.today().isoformat()
    goal_cases = [c for c in cases if c.goal]
    verdict = "; ".join(f"{c.label}: {'met' if c.median <= GOAL_S else 'NOT met'} ({c.median:.3f} s)" for c in goal_cases)
    return "\n".join(
        [
            BEGIN,
            f"Measured {today} with `python benchmarks/cli_startup.py --repeat {repeat} --heavy-repeat {heavy_repeat} --warmup {warmup}`.",
            "",
            f"Machine: {machine()}.",
            "",
            table(cases),
            "",
            f"Goal ≤ {GOAL_S} s (median wall time): {verdict}.",
            END,
        ]
    )


def write_doc(text: str) -> None:
    benchlib.write_section(BEGIN, END, text, DOC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="runs of each light command (default 10)")
    parser.add_argument("--heavy-repeat", type=int, default=3, help="runs of `import torch` / `import monai` (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded warm-up rounds (default 1)")
    parser.add_argument("--write", action="store_true", help=f"replace the cli-startup section of {DOC.relative_to(REPO)}")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.heavy_repeat < 1 or args.warmup < 0:
        parser.error("--repeat and --heavy-repeat must be >= 1, --warmup >= 0")

    cases = build_cases()
    run(cases, args.repeat, min(args.heavy_repeat, args.repeat), args.warmup)
    text = section(cases, args.repeat, min(args.heavy_repeat, args.repeat), args.warmup)
    print(text)
    if args.write:
        write_doc(text)
    return 0  # report only: a missed goal is visible in the table, never a failure


if __name__ == "__main__":
    sys.exit(main())

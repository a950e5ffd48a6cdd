#!/usr/bin/env python
"""De-identification throughput: `voxpipe deid` vs dicom-anonymizer and a pydicom copy (the floor).

A synthetic CT series (512x512 int16, the full header of pydicom's CT_small.dcm copied into
every slice; ``--slices`` files) is written once under ``--data``. Then, in one run, each tool
de-identifies the whole folder in a **fresh process per repetition** (``--child`` mode),
interleaved round by round after one unrecorded warm-up round; the median of ``--repeat``
rounds is reported:

* ``voxpipe``: :func:`voxpipe_plugins.deid.tree.deidentify_tree` (the engine behind
  ``voxpipe deid``), timed after its imports;
* ``voxpipe deid`` (CLI): the whole process, wall time;
* ``dicom-anonymizer`` 2.1.0 (the KitwareMedical package whose Annex E extraction VoxPipe's
  table starts from): ``anonymize_dicom_file`` per file, its default rules, private tags deleted;
* ``pydicom copy``: ``dcmread`` + ``save_as`` per file: what any tool must at least pay.

The two are not doing identical work: VoxPipe also applies the option columns, the VR rule
for attributes the table does not name, keyed HMAC UIDs and date shifts, file-meta rebuilding
and atomic 0600 writes. Load average is recorded before and after. Exit status is 0 whatever
the numbers; no timing is asserted in the test suite.

    python benchmarks/deid_throughput.py --write          # also update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- deid:begin -->", "<!-- deid:end -->"
TOOLS = ("voxpipe", "voxpipe-cli", "dicom-anonymizer", "pydicom-copy")


def make_data(folder: Path, slices: int) -> Path:
    series = folder / f"ct-{slices}"
    if series.is_dir() and len(list(series.glob("*.dcm"))) == slices:
        return series
    sys.path[:0] = [str(REPO / "platform"), str(REPO / "plugins")]
    import numpy as np

    from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, load_template, write_series

    shutil.rmtree(series, ignore_errors=True)
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 300, size=(slices, 512, 512)).astype(np.float32)
    write_series(series, volume, SeriesSpec(template=load_template()))
    return series


def child(tool: str, series: Path, out: Path, key: Path) -> None:
    if tool == "voxpipe":
        from voxpipe_plugins.deid.engine import DeidOptions
        from voxpipe_plugins.deid.tree import deidentify_tree

        start = time.perf_counter()
        summary = deidentify_tree(series, out, key, DeidOptions())
        seconds = time.perf_counter() - start
        count = summary.written
    elif tool == "dicom-anonymizer":
        from dicomanonymizer.simpledicomanonymizer import anonymize_dicom_file

        out.mkdir(parents=True)
        files = sorted(series.glob("*.dcm"))
        start = time.perf_counter()
        for i, path in enumerate(files):
            anonymize_dicom_file(str(path), str(out / f"{i}.dcm"))
        seconds = time.perf_counter() - start
        count = len(files)
    elif tool == "pydicom-copy":
        import pydicom

        out.mkdir(parents=True)
        files = sorted(series.glob("*.dcm"))
        start = time.perf_counter()
        for i, path in enumerate(files):
            pydicom.dcmread(path).save_as(out / f"{i}.dcm")
        seconds = time.perf_counter() - start
        count = len(files)
    else:
        raise SystemExit(f"unknown tool {tool}")
    print(json.dumps({"seconds": seconds, "files": count}))


def run_once(tool: str, series: Path, key: Path) -> float:
    out = Path(tempfile.mkdtemp(prefix="deid-bench-")) / "out"
    try:
        if tool == "voxpipe-cli":
            start = time.perf_counter()
            subprocess.run(
                [str(Path(sys.executable).parent / "voxpipe"), "deid", str(series), str(out), "--key", str(key)],
                check=True,
                capture_output=True,
            )
            return time.perf_counter() - start
        proc = subprocess.run(
            [sys.executable, __file__, "--child", tool, str(series), str(out), str(key)], check=True, capture_output=True, text=True
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("/tmp/voxpipe-bench-deid"))
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--child", nargs=4, metavar=("TOOL", "SERIES", "OUT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tool, series, out, key = args.child
        child(tool, Path(series), Path(out), Path(key))
        return
    series = make_data(args.data, args.slices)
    key = args.data / "bench.key"
    before = loadavg()
    for tool in TOOLS:  # warm-up round, not recorded
        run_once(tool, series, key)
    times: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    for _ in range(args.repeat):
        for tool in TOOLS:
            times[tool].append(run_once(tool, series, key))
    after = loadavg()
    median = {tool: statistics.median(v) for tool, v in times.items()}
    peer = median["dicom-anonymizer"]
    rows = [
        ("VoxPipe engine (`deidentify_tree`)", "voxpipe"),
        ("`voxpipe deid` (whole process)", "voxpipe-cli"),
        ("dicom-anonymizer 2.1.0 (`anonymize_dicom_file`)", "dicom-anonymizer"),
        ("pydicom read + write (floor)", "pydicom-copy"),
    ]
    lines = [
        BEGIN,
        f"Measured {_dt.date.today().isoformat()} with `python benchmarks/deid_throughput.py --slices {args.slices} "
        f"--repeat {args.repeat}` on {benchlib.machine()}; load average {before} before, {after} after "
        "(other work was running on the machine).",
        "",
        f"{args.slices} CT slices, 512x512 int16 with CT_small.dcm's full header; median of {args.repeat} interleaved "
        "rounds, each tool in a fresh process.",
        "",
        "| tool | seconds | files/s | vs dicom-anonymizer |",
        "|---|---:|---:|---:|",
    ]
    for label, tool in rows:
        lines.append(f"| {label} | {median[tool]:.2f} | {args.slices / median[tool]:.0f} | {median[tool] / peer:.2f}x |")
    lines += ["", END]
    text = "\n".join(lines)
    print(text)
    if args.write:
        benchlib.write_section(BEGIN, END, text)


if __name__ == "__main__":
    main()

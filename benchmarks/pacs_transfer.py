#!/usr/bin/env python
"""PACS transfer: `voxpipe convert dicomweb+http://...` vs curl's WADO-RS download + `voxpipe convert` of the files;
and `voxpipe listen` receiving 20 series from Orthanc.

A local Orthanc (the test fixture's: ``tests/orthanc_server.py``, DICOMweb plugin, basic auth, 127.0.0.1) holds a
synthetic CT series (``--slices`` x 512 x 512, int16). In one run, interleaved round by round after one unrecorded
warm-up round, each a fresh process, the median of ``--repeat`` rounds:

* ``voxpipe convert -i 'dicomweb+http://.../dicom-web?SeriesInstanceUID=...' -o ct.nii.gz`` (QIDO + WADO-RS inside);
* the peer route: ``curl`` GET of the series' WADO-RS multipart (``Accept: multipart/related; type="application/dicom"``),
  split into Part 10 files (what any tool must do with that answer; timed), then ``voxpipe convert -i files/``.

Goal (issue 17): the first within 1.2x the second. Then ``voxpipe listen`` (config: load.dicom -> write.nifti,
``--idle 2``) receives ``--listen-series`` series sent by Orthanc in one ``/modalities/{name}/store`` job: the time
from the job's start to the last case in ``results/manifest.json``, and whether every series was run exactly once.
Exit status 0 whatever the numbers; nothing here is a test.

    python benchmarks/pacs_transfer.py --write          # also update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- pacs_transfer:begin -->", "<!-- pacs_transfer:end -->"
VOXPIPE = [sys.executable, "-m", "voxpipe"]
LISTEN_CONFIG = "version: 1\nname: listen-bench\ndevice: cpu\nstages:\n  - use: load.dicom\n  - use: write.nifti\n"


def _imports() -> None:
    sys.path[:0] = [str(REPO), str(REPO / "platform"), str(REPO / "plugins")]


def make_series(folder: Path, slices: int, size: int, seed: int = 0, study_uid: str | None = None):
    import numpy as np

    from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, write_series

    rng = np.random.default_rng(seed)
    volume = np.rint(rng.normal(0, 300, size=(slices, size, size))).astype(np.float32)
    spec = (
        SeriesSpec(seed=seed, shuffle_names=False) if study_uid is None else SeriesSpec(seed=seed, shuffle_names=False, study_uid=study_uid)
    )
    return spec, write_series(folder, volume, spec)


def split_multipart(body: bytes, content_type: str, folder: Path) -> int:
    """The parts of a multipart/related answer as Part 10 files (one per instance)."""
    boundary = next(p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary="))
    delimiter = b"--" + boundary.encode()
    count = 0
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, payload = part.partition(b"\r\n\r\n")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        (folder / f"{count:05d}.dcm").write_bytes(payload)
        count += 1
    return count


def time_voxpipe(url: str, out: Path, env: dict) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    start = time.perf_counter()
    subprocess.run([*VOXPIPE, "convert", "-i", url, "-o", str(out / "ct.nii.gz")], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_fetch(url: str, folder: Path) -> float:
    """The DICOMweb input's own fetch (QIDO + WADO-RS into a private folder), in this process: the download part alone."""
    from voxpipe_plugins.pacs.dicomweb_source import open_dicomweb

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    start = time.perf_counter()
    open_dicomweb(url, folder, {})
    return time.perf_counter() - start


def time_curl(server, study: str, series: str, work: Path, env: dict) -> tuple[float, float, float]:
    shutil.rmtree(work, ignore_errors=True)
    (work / "files").mkdir(parents=True)
    url = f"{server.dicomweb_url}/studies/{study}/series/{series}"
    start = time.perf_counter()
    headers = work / "headers.txt"
    subprocess.run(
        ["curl", "-sf", "-u", f"{server.user}:{server.password}", "-H", 'Accept: multipart/related; type="application/dicom"',
         "-D", str(headers), "-o", str(work / "body"), url],
        check=True,
    )  # fmt: skip
    downloaded = time.perf_counter()
    content_type = next(
        line.split(":", 1)[1].strip() for line in headers.read_text().splitlines() if line.lower().startswith("content-type:")
    )
    split_multipart((work / "body").read_bytes(), content_type, work / "files")
    split = time.perf_counter()
    subprocess.run(
        [*VOXPIPE, "convert", "-i", str(work / "files"), "-o", str(work / "ct.nii.gz")], check=True, env=env, stdout=subprocess.DEVNULL
    )
    return downloaded - start, split - downloaded, time.perf_counter() - split


def same_volume(a: Path, b: Path) -> bool:
    import nibabel as nib
    import numpy as np

    x, y = nib.load(str(a)), nib.load(str(b))
    return bool(np.array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj)) and np.allclose(x.affine, y.affine))


def bench_listen(server, work: Path, series: int, slices: int, size: int, env: dict) -> dict:
    from tests.orthanc_server import free_port

    server.delete_all()
    study = None
    for i in range(series):
        spec, files = make_series(work / "listen-in" / f"s{i}", slices, size, seed=100 + i, study_uid=study)
        study = spec.study_uid
        server.upload(files)
    config = work / "listen.yaml"
    config.write_text(LISTEN_CONFIG)
    port = free_port()
    server.add_modality("bench-listen", "VOXPIPE", port=port)
    out = work / "listen-out"
    log = (work / "listen.log").open("w")
    listener = subprocess.Popen(
        [
            *VOXPIPE,
            "listen",
            str(config),
            "--port",
            str(port),
            "-o",
            str(out),
            "--idle",
            "2",
            "--allow-calling-ae",
            server.aet,
            "--no-report",
        ],
        stderr=log,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    while "listening on" not in (work / "listen.log").read_text():
        time.sleep(0.1)
    manifest = out / "results" / "manifest.json"
    start = time.perf_counter()
    answer = server.post("/modalities/bench-listen/store", {"Resources": server.get("/studies"), "Synchronous": True})
    sent = time.perf_counter() - start
    done = None
    while time.perf_counter() - start < 1800:
        try:
            summary = json.loads(manifest.read_text())["summary"]
        except (OSError, ValueError, KeyError):
            summary = {}
        if summary.get("cases", 0) >= series:
            done = time.perf_counter() - start
            break
        time.sleep(0.2)
    time.sleep(3)  # would a series run twice? (longer than --idle)
    listener.send_signal(signal.SIGTERM)
    code = listener.wait(timeout=60)
    log.close()
    data = json.loads(manifest.read_text())
    return {
        "series": series,
        "instances": series * slices,
        "sent_by_orthanc": answer.get("InstancesCount"),
        "failed_sends": answer.get("FailedInstancesCount"),
        "send_s": sent,
        "all_processed_s": done,
        "cases_ok": data["summary"]["ok"],
        "cases": data["summary"]["cases"],
        "series_processed": data.get("listen", {}).get("series_processed"),
        "exit_code": code,
        "last_line": (work / "listen.log").read_text().strip().splitlines()[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--listen-series", type=int, default=20)
    parser.add_argument("--listen-slices", type=int, default=40)
    parser.add_argument("--listen-size", type=int, default=256)
    parser.add_argument("--skip-listen", action="store_true")
    parser.add_argument("--write", action="store_true", help="Replace this benchmark's section of docs/benchmarks.md.")
    args = parser.parse_args()
    _imports()
    from tests.orthanc_server import missing_reason, start_orthanc

    reason = missing_reason() or (None if shutil.which("curl") else "curl is not installed")
    if reason:
        raise SystemExit(reason)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="voxpipe-pacs-bench-"))
    server = start_orthanc(work / "orthanc")
    try:
        env = benchlib.child_env(
            VOXPIPE_DICOMWEB_USER=server.user,
            VOXPIPE_DICOMWEB_PASSWORD=server.password,
            VOXPIPE_ID_KEY_FILE=str(work / "id.key"),
            VOXPIPE_DEID_KEY_FILE=str(work / "deid.key"),
        )
        spec, files = make_series(work / "ct", args.slices, 512)
        server.upload(files)
        mib = sum(f.stat().st_size for f in files) / 2**20
        url = f"dicomweb+{server.dicomweb_url}?SeriesInstanceUID={spec.series_uid}"
        rows: dict[str, list] = {"voxpipe": [], "curl": [], "split": [], "convert": [], "fetch": []}
        os.environ.update(VOXPIPE_DICOMWEB_USER=server.user, VOXPIPE_DICOMWEB_PASSWORD=server.password)
        for round_ in range(args.repeat + 1):
            t_vox = time_voxpipe(url, work / "vox", env)
            t_curl, t_split, t_conv = time_curl(server, spec.study_uid, spec.series_uid, work / "curl", env)
            t_fetch = time_fetch(url, work / "fetch")
            print(
                f"round {round_}{' (warm-up)' if round_ == 0 else ''}: voxpipe {t_vox:.2f}s, curl {t_curl:.2f}+split {t_split:.2f}"
                f"+convert {t_conv:.2f}s; fetch alone {t_fetch:.2f}s",
                file=sys.stderr,
            )
            if round_:
                for key, value in zip(rows, (t_vox, t_curl, t_split, t_conv, t_fetch)):
                    rows[key].append(value)
        identical = same_volume(work / "vox" / "ct.nii.gz", work / "curl" / "ct.nii.gz")
        listen = None if args.skip_listen else bench_listen(server, work, args.listen_series, args.listen_slices, args.listen_size, env)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    med = {key: statistics.median(values) for key, values in rows.items()}
    peer = statistics.median(a + b + c for a, b, c in zip(rows["curl"], rows["split"], rows["convert"]))  # the route's own median
    ratio = med["voxpipe"] / peer
    text = render(args, mib, med, rows, peer, ratio, identical, listen, load_before, load_after)
    print(text)
    if args.write:
        benchlib.write_section(BEGIN, END, text)


def render(args, mib, med, rows, peer, ratio, identical, listen, load_before, load_after) -> str:
    today = _dt.date.today().isoformat()
    lines = [
        BEGIN,
        f"Measured {today} by `python benchmarks/pacs_transfer.py --write` on {benchlib.machine()}, Orthanc "
        f"{_orthanc_version()} on 127.0.0.1. **This 2-core machine was shared with other engineers' test runs while it ran** "
        f"(load average {load_before[0]:.1f} before, {load_after[0]:.1f} after): compare the ratio, not the seconds.",
        "",
        f"One CT series, {args.slices} x 512 x 512 int16 ({mib:.0f} MiB), median of {args.repeat} rounds after a warm-up, "
        "each command a fresh process (so both routes pay one `voxpipe convert` start-up):",
        "",
        "| route | seconds | vs peer |",
        "|---|---:|---:|",
        f"| `voxpipe convert -i dicomweb+http://...?SeriesInstanceUID=...` | {med['voxpipe']:.2f} | **{ratio:.2f}x** |",
        f"| peer: `curl` WADO-RS multipart ({med['curl']:.2f} s) + split into files ({med['split']:.2f} s) + "
        f"`voxpipe convert -i files/` ({med['convert']:.2f} s); medians of each part, the total is the median of the rounds' sums "
        f"| {peer:.2f} | 1.00x |",
        f"| the DICOMweb input's fetch alone (QIDO + WADO-RS into a private folder, in-process) vs curl + split | "
        f"{med['fetch']:.2f} vs {statistics.median(a + b for a, b in zip(rows['curl'], rows['split'])):.2f} | |",
        "",
        "Per round (seconds: dicomweb convert / curl + split + convert / fetch alone): "
        + "; ".join(
            f"{v:.1f} / {c + sp + cv:.1f} / {f:.1f}"
            for v, c, sp, cv, f in zip(rows["voxpipe"], rows["curl"], rows["split"], rows["convert"], rows["fetch"])
        )
        + ".",
        "",
        f"Goal: at most 1.2x; {'met' if ratio <= 1.2 else 'not met'}. The two NIfTI files are "
        f"{'identical (values and affine)' if identical else 'DIFFERENT (investigate)'}.",
    ]
    if listen:
        processed = listen["all_processed_s"]
        once = listen["cases"] == listen["series"] and listen["series_processed"] == listen["series"]
        lines += [
            "",
            f"`voxpipe listen` (load.dicom -> write.nifti, `--idle 2`, 1 worker) receiving {listen['series']} series "
            f"({listen['instances']} instances, {args.listen_slices} x {args.listen_size} x {args.listen_size}) sent by Orthanc "
            "in one `/modalities/{name}/store` job:",
            "",
            "| what | value |",
            "|---|---:|",
            f"| instances Orthanc sent / failed | {listen['sent_by_orthanc']} / {listen['failed_sends']} |",
            f"| Orthanc's store job, seconds | {listen['send_s']:.1f} |",
            f"| last case in the manifest, seconds after the job started | {processed:.1f} |"
            if processed
            else "| last case | not reached |",
            f"| cases ok / cases / series processed | {listen['cases_ok']} / {listen['cases']} / {listen['series_processed']} |",
            f"| each series run exactly once, nothing lost | {'yes' if once and listen['failed_sends'] == 0 else 'NO'} |",
            "",
            f"The listener's last line: `{listen['last_line']}`",
        ]
    lines.append(END)
    return "\n".join(lines)


def _orthanc_version() -> str:
    try:
        out = subprocess.run(["/usr/sbin/Orthanc", "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.split("\n", 1)[0].split()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "(version unknown)"


if __name__ == "__main__":
    main()

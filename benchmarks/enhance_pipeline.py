#!/usr/bin/env python
"""Enhancement pipeline benchmark: CT window + Gaussian + CLAHE, VoxPipe stages vs. the libraries called directly.

A synthetic CT-like volume (HU values: air, body, organs, lungs, bone, noise), float32,
300 slices of 512x512 by default (array 1x512x512x300, X x Y x Z, 0.7 x 0.7 x 1.0 mm),
goes through

    enhance.window (abdomen, 40/400 HU)  ->  denoise.gaussian (sigma 1 mm)  ->  enhance.clahe (3D, default tiles)

Each stage is timed on its own and compared with doing the same work without the stage:
MONAI's ScaleIntensityRange for the window (plus the same in-place torch arithmetic the
stage uses, bare), MONAI's GaussianSmooth with the same per-axis sigma (plus the stage's own
scipy.ndimage engine, bare: the stage runs scipy on the CPU), and scikit-image's
equalize_adapthist with the same tile size. The chain is timed as a whole as well (a plain
MONAI Compose of the three stages vs. the three library calls).

Time: for each step one fresh Python process builds the volume (slice by slice), makes
every implementation's call once on a 32x32x16 volume (lazy initialisation in torch and
MONAI is paid once per process, not per volume) and once, unrecorded, on the full volume
(the first call at a new size pays page faults and allocator growth, up to +40 % here, and
would penalise whichever implementation came first), then calls the implementations in
turn on the full volume, rotating the order each round, for ``--repeat`` rounds (calls that
take well under a second get up to 7 rounds). Alternating in one process puts both sides under
the same conditions; the table gives the median and minimum wall time and the median CPU
time (user + system, all threads) per implementation.

Memory: one more fresh process per implementation makes one call and reads the peak resident
set size (``resource.getrusage(...).ru_maxrss``) before and after. "Extra peak" is the rise
of that high-water mark over the resident size just before the call: what the call needed
on top of its input. Its wall time ("fresh process") is shown too: first calls at a new
size include page faults and allocator growth, and vary more.

The machine may be shared. Before each process the driver waits for a quiet second, and a
call of 0.25 s or more during which other processes took more than 10 % of the CPUs (read
from /proc/stat) is repeated up to twice and, if still contended, kept and counted as
"busy".

    python benchmarks/enhance_pipeline.py                    # 512x512x300 and 256x256x150, 5 rounds: the table
    python benchmarks/enhance_pipeline.py --write            # also update docs/benchmarks.md
    python benchmarks/enhance_pipeline.py --shape 128,128,75 --repeat 5   # quick look

Goal (issue 4): the stage wrapper adds <= 5 % to the time of calling the library directly.
Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when imported from elsewhere
import benchlib  # noqa: E402  (benchmarks/benchlib.py: machine description, doc-section writer)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- enhance:begin -->", "<!-- enhance:end -->"
GOAL = 0.05
SPACING = (0.7, 0.7, 1.0)
WINDOW = (40.0, 400.0)  # the abdomen preset
SIGMA_MM = 1.0
MARKER = "@@enhance-bench@@"

# (step, implementation, label); the first implementation of each step is ours
MEASUREMENTS = [
    ("window", "stage", "`enhance.window` (stage)"),
    ("window", "monai", "MONAI `ScaleIntensityRange` (direct)"),
    ("window", "torch", "same torch ops, no stage (bare)"),
    ("gaussian", "stage", "`denoise.gaussian` (stage)"),
    ("gaussian", "monai", "MONAI `GaussianSmooth` (direct)"),
    ("gaussian", "scipy", "same scipy.ndimage calls, no stage (bare)"),
    ("clahe", "stage", "`enhance.clahe` 3D (stage)"),
    ("clahe", "skimage", "scikit-image `equalize_adapthist` 3D (direct)"),
    ("chain", "stage", "window + gaussian + CLAHE: stages in a MONAI `Compose`"),
    ("chain", "direct", "window + gaussian + CLAHE: library calls"),
    ("chain", "bare", "the stages' own engines called directly, no stages (bare)"),
]


# --------------------------------------------------------------------------- worker (one measurement)


def ct_volume(shape: tuple[int, int, int], seed: int = 0):
    """CT-like HU volume (X, Y, Z), float32, built one axial slice at a time (no large temporaries)."""
    import numpy as np

    nx, ny, nz = shape
    volume = np.empty(shape, dtype=np.float32)
    x, y = np.meshgrid(np.linspace(-1, 1, nx, dtype=np.float32), np.linspace(-1, 1, ny, dtype=np.float32), indexing="ij")
    rng = np.random.default_rng(seed)
    for k in range(nz):
        z = -1 + 2 * k / max(nz - 1, 1)
        hu = np.full((nx, ny), -1000.0, dtype=np.float32)  # air
        body = (x / 0.85) ** 2 + (y / 0.62) ** 2 < 1 - 0.15 * z * z
        hu[body] = 30.0  # fat/soft tissue mix
        hu[body & ((x / 0.8) ** 2 + (y / 0.57) ** 2 > 1 - 0.15 * z * z)] = -100.0  # subcutaneous fat
        for cx in (-0.4, 0.4):  # lungs in the upper half, kidneys in the lower half
            organ = ((x - cx) / 0.28) ** 2 + ((y + 0.05) / 0.35) ** 2 < 1
            hu[organ] = -850.0 if z > 0.2 else 35.0
        hu[((x + 0.3) / 0.3) ** 2 + ((y - 0.05) / 0.25) ** 2 + ((z + 0.4) / 0.5) ** 2 < 1] = 60.0  # liver
        hu[(x / 0.09) ** 2 + ((y - 0.45) / 0.09) ** 2 < 1] = 700.0  # vertebra
        hu[(x / 0.05) ** 2 + ((y - 0.2) / 0.05) ** 2 < 1] = 200.0  # contrast-filled aorta
        hu += rng.standard_normal((nx, ny), dtype=np.float32) * 20.0
        volume[:, :, k] = hu
    return volume


def window_in_place(volume) -> None:
    import numpy as np

    level, width = WINDOW
    np.subtract(volume, level - width / 2, out=volume)
    np.divide(volume, width, out=volume)
    np.clip(volume, 0.0, 1.0, out=volume)


def _peak_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _current_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all CPUs, not idle or iowait), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _implementations(step: str, shape: tuple[int, int, int]):
    """The volume for ``step`` and {impl: call(array)} for the implementations compared."""
    import numpy as np
    import torch
    from monai.transforms import Compose, GaussianSmooth, ScaleIntensityRange
    from skimage.exposure import equalize_adapthist

    from voxpipe_plugins.common.tensors import make_metatensor
    from voxpipe_plugins.denoise.gaussian import GaussianDenoise, erf_kernel, smooth_numpy
    from voxpipe_plugins.enhance.clahe import Clahe
    from voxpipe_plugins.enhance.window import Window

    affine = np.diag([*SPACING, 1.0])
    sigma_voxels = tuple(SIGMA_MM / s for s in SPACING)
    level, width = WINDOW
    lower = level - width / 2

    def case(array):
        return {"image": make_metatensor(array[None], affine), "history": []}  # no copy: the same memory

    def direct_chain(array):
        tensor = ScaleIntensityRange(lower, lower + width, 0.0, 1.0, clip=True, dtype=torch.float32)(torch.from_numpy(array[None]))
        tensor = GaussianSmooth(sigma=sigma_voxels, approx="erf")(tensor)
        return equalize_adapthist(tensor[0].numpy())

    kernels = [erf_kernel(s) for s in sigma_voxels]

    def bare_chain(array):
        tensor = torch.from_numpy(array[None]).sub(lower).div_(width).clamp_(0.0, 1.0)
        return equalize_adapthist(smooth_numpy(tensor.numpy(), kernels)[0])

    calls = {
        "window": {
            "stage": lambda a: Window(preset="abdomen")(case(a)),
            "monai": lambda a: ScaleIntensityRange(lower, lower + width, 0.0, 1.0, clip=True, dtype=torch.float32)(
                torch.from_numpy(a[None])
            ),
            "torch": lambda a: torch.from_numpy(a[None]).sub(lower).div_(width).clamp_(0.0, 1.0),
        },
        "gaussian": {
            "stage": lambda a: GaussianDenoise(sigma_mm=SIGMA_MM)(case(a)),
            "monai": lambda a: GaussianSmooth(sigma=sigma_voxels, approx="erf")(torch.from_numpy(a[None])),
            "scipy": lambda a: smooth_numpy(a[None], kernels),
        },
        "clahe": {
            "stage": lambda a: Clahe()(case(a)),
            "skimage": lambda a: equalize_adapthist(a),
        },
        "chain": {
            "stage": lambda a: Compose([Window(preset="abdomen"), GaussianDenoise(sigma_mm=SIGMA_MM), Clahe()])(case(a)),
            "direct": direct_chain,
            "bare": bare_chain,
        },
    }[step]

    def volume_of(size):
        volume = ct_volume(size, seed=0 if size == shape else 1)
        if step in ("gaussian", "clahe"):
            window_in_place(volume)  # their input is the windowed volume, [0, 1]
        return volume

    return volume_of, calls


def _timed(call, volume, max_foreign: float, retries: int) -> dict:
    """One call: wall and CPU seconds and the share of the CPUs other processes took meanwhile."""
    import gc
    import time

    for _ in range(retries + 1):
        gc.collect()
        busy_before, own_before = _cpu_busy_seconds(), _own_cpu_seconds()
        start = time.perf_counter()
        result = call(volume)
        seconds = time.perf_counter() - start
        busy, own = _cpu_busy_seconds() - busy_before, _own_cpu_seconds() - own_before
        del result
        # /proc/stat counts in 10 ms ticks: too coarse for calls under 0.25 s, which count as quiet
        foreign = max(busy - own, 0.0) / (seconds * (os.cpu_count() or 1)) if seconds >= 0.25 else 0.0
        if foreign <= max_foreign:
            break
        time.sleep(1.0)
    return {"seconds": seconds, "cpu": own, "foreign": foreign, "contended": foreign > max_foreign}


def worker_timing(step: str, shape: tuple[int, int, int], repeat: int, max_foreign: float, retries: int) -> dict:
    """All implementations of ``step`` in one process, called in turn, ``repeat`` rounds (more for short calls)."""
    import warnings

    warnings.simplefilter("ignore")
    volume_of, calls = _implementations(step, shape)
    small = volume_of((32, 32, 16))
    for call in calls.values():  # once-per-process costs (lazy initialisation) are not per-volume costs
        call(small)
    volume = volume_of(shape)
    for call in calls.values():  # and the first call at full size (page faults, allocator growth), unrecorded
        call(volume)
    names = list(calls)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    round_ = 0
    while round_ < repeat or (round_ < 7 and sum(r["seconds"] for rs in runs.values() for r in rs) < 5.0):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]  # rotate: no implementation always first
        for name in order:
            runs[name].append(_timed(calls[name], volume, max_foreign, retries))
        round_ += 1
    return runs


def worker_memory(step: str, impl: str, shape: tuple[int, int, int]) -> dict:
    """One call in a fresh process: the rise of the peak RSS over the resident size before it."""
    import gc
    import time
    import warnings

    warnings.simplefilter("ignore")
    volume_of, calls = _implementations(step, shape)
    call = calls[impl]
    call(volume_of((32, 32, 16)))
    volume = volume_of(shape)  # built slice by slice: no high-water mark above the resident size
    gc.collect()
    current, peak_before = _current_bytes(), _peak_bytes()
    busy_before, own_before = _cpu_busy_seconds(), _own_cpu_seconds()
    start = time.perf_counter()
    call(volume)
    seconds = time.perf_counter() - start
    busy, own = _cpu_busy_seconds() - busy_before, _own_cpu_seconds() - own_before
    peak_after = _peak_bytes()
    return {
        "seconds": seconds,
        "cpu": own,
        "foreign": max(busy - own, 0.0) / (seconds * (os.cpu_count() or 1)) if seconds >= 0.25 else 0.0,
        "input_bytes": int(volume.nbytes),
        "current_before": current,
        "peak_before": peak_before,
        "peak_after": peak_after,
        "extra_peak": max(peak_after - current, 0),
        "hidden": peak_after == peak_before,  # the call stayed under an earlier high-water mark
    }


# --------------------------------------------------------------------------- driver


@dataclass
class Result:
    step: str
    impl: str
    label: str
    runs: list[dict] = field(default_factory=list)
    memory: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(r["seconds"] for r in self.runs)

    @property
    def best(self) -> float:
        return min(r["seconds"] for r in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(r["cpu"] for r in self.runs)


def _spawn(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    argv = [sys.executable, str(Path(__file__).resolve()), *args]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"worker failed (rc {proc.returncode}): {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len(MARKER) :])


def wait_for_quiet(limit: float, timeout: float) -> None:
    """Wait (up to ``timeout`` s) for a second in which other processes use less than ``limit`` of the CPUs."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        before = _cpu_busy_seconds()
        time.sleep(1.0)
        if (_cpu_busy_seconds() - before) / (os.cpu_count() or 1) < limit or time.monotonic() > deadline:
            return


def run(shape: tuple[int, int, int], repeat: int, steps: list[str], max_foreign: float, retries: int, quiet_timeout: float) -> list[Result]:
    results = [Result(s, i, label) for s, i, label in MEASUREMENTS if s in steps]
    shape_arg = ",".join(map(str, shape))
    for step in steps:
        group = [r for r in results if r.step == step]
        wait_for_quiet(max_foreign, quiet_timeout)
        timing = _spawn(
            [
                "--worker",
                "timing",
                step,
                "--shape",
                shape_arg,
                "--repeat",
                str(repeat),
                "--max-foreign",
                str(max_foreign),
                "--retries",
                str(retries),
            ]
        )
        for r in group:
            r.runs = timing[r.impl]
            print(
                f"{shape_arg} {step}/{r.impl}: "
                + ", ".join(f"{x['seconds']:.3f}" for x in r.runs)
                + " s"
                + (f" ({sum(x['contended'] for x in r.runs)} contended)" if any(x["contended"] for x in r.runs) else ""),
                file=sys.stderr,
                flush=True,
            )
        for r in group:
            wait_for_quiet(max_foreign, quiet_timeout)
            r.memory = _spawn(["--worker", "memory", step, r.impl, "--shape", shape_arg])
            print(
                f"{shape_arg} {step}/{r.impl}: fresh process {r.memory['seconds']:.3f} s, extra peak "
                f"{r.memory['extra_peak'] / 2**20:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    return results


def machine() -> str:
    """benchlib's machine line, plus RAM, library versions and torch's thread count."""
    import numpy
    import torch

    extra = []
    try:
        extra.append(f"{int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.0f} GiB RAM")
    except (OSError, ValueError, IndexError):
        pass
    libs = f"torch {torch.__version__.split('+')[0]} ({torch.get_num_threads()} threads), NumPy {numpy.__version__}"
    try:
        import monai
        import skimage

        libs += f", MONAI {monai.__version__}, scikit-image {skimage.__version__}"
    except ImportError:
        pass
    return f"{benchlib.machine(', '.join(extra))}; {libs}"


def table(results: list[Result]) -> tuple[str, list[str]]:
    lines = [
        "| step | implementation | calls | median (s) | min (s) | CPU median (s) | vs direct | CPU vs direct "
        "| fresh process (s) | extra peak (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    by_step: dict[str, list[Result]] = {}
    for r in results:
        by_step.setdefault(r.step, []).append(r)
    for step, group in by_step.items():
        ours, references = group[0], group[1:]
        direct = references[0]
        for r in group:
            wall = "–" if r is direct else f"{(r.median / direct.median - 1) * 100:+.1f} %"
            cpu = "–" if r is direct else f"{(r.cpu / direct.cpu - 1) * 100:+.1f} %"
            contended = sum(run["contended"] for run in r.runs)
            calls = f"{len(r.runs)}" + (f" ({contended} busy)" if contended else "")
            hidden = " (≤)" if r.memory.get("hidden") else ""
            lines.append(
                f"| {step} | {r.label} | {calls} | {r.median:.3f} | {r.best:.3f} | {r.cpu:.3f} | {wall} | {cpu} | "
                f"{r.memory['seconds']:.3f} | {r.memory['extra_peak'] / 2**20:.0f}{hidden} |"
            )
        over = ours.median / direct.median - 1
        verdict = f"{step}: {over * 100:+.1f} % vs {direct.label.split(' (')[0]}"
        if len(references) > 1:
            bare = references[1]
            verdict += f" ({(ours.median / bare.median - 1) * 100:+.1f} % vs {bare.label.split(' (')[0]})"
        verdict += f": {'met' if over <= GOAL else 'NOT met'}"
        verdicts.append(verdict)
    return "\n".join(lines), verdicts


def section(blocks: list[tuple[tuple[int, int, int], list[Result]]], argv_text: str) -> str:
    out = [
        BEGIN,
        f"Measured {_dt.date.today().isoformat()} with `python benchmarks/enhance_pipeline.py {argv_text}`.",
        "",
        f"Machine: {machine()}.",
        "",
    ]
    for shape, results in blocks:
        nbytes = shape[0] * shape[1] * shape[2] * 4
        out += [
            f"**{shape[2]} slices of {shape[0]}×{shape[1]}** (array 1×{shape[0]}×{shape[1]}×{shape[2]} float32, "
            f"{nbytes / 2**20:.0f} MiB; {SPACING[0]}×{SPACING[1]}×{SPACING[2]} mm):",
            "",
        ]
        text, verdicts = table(results)
        out += [text, "", f"Stage vs direct (median time; goal ≤ {GOAL * 100:.0f} %): " + "; ".join(verdicts) + ".", ""]
    out.append(END)
    return "\n".join(out)


def write_doc(text: str) -> None:
    benchlib.write_section(BEGIN, END, text, DOC)


def parse_shape(text: str) -> tuple[int, int, int]:
    parts = tuple(int(p) for p in text.split(","))
    if len(parts) != 3 or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"expected X,Y,Z with each >= 8, got {text!r}")
    return parts  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shape",
        type=parse_shape,
        action="append",
        help="X,Y,Z of the volume; repeat for several sizes (default 512,512,300 and 256,256,150)",
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="rounds of alternating calls per step (default 5; short calls get up to 7 rounds)"
    )
    parser.add_argument("--steps", default="window,gaussian,clahe,chain", help="comma-separated subset to run")
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=0.10,
        help="a call during which other processes used more than this share of the CPUs is repeated (default 0.10)",
    )
    parser.add_argument("--retries", type=int, default=2, help="repeats of a contended call before it is kept, flagged (default 2)")
    parser.add_argument(
        "--quiet-timeout", type=float, default=60, help="seconds to wait for a quiet machine before each process (default 60)"
    )
    parser.add_argument("--write", action="store_true", help=f"replace the enhance section of {DOC.relative_to(REPO)}")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shapes = args.shape or [(512, 512, 300), (256, 256, 150)]
    if args.worker:
        kind, *rest = args.worker
        if kind == "timing":
            data = worker_timing(rest[0], shapes[0], args.repeat, args.max_foreign, args.retries)
        else:
            data = worker_memory(rest[0], rest[1], shapes[0])
        print(MARKER + json.dumps(data), flush=True)
        return 0
    if args.repeat < 1 or args.retries < 0:
        parser.error("--repeat must be >= 1, --retries >= 0")
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(steps) - {m[0] for m in MEASUREMENTS}
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from window, gaussian, clahe, chain")
    blocks = []
    for shape in shapes:
        blocks.append((shape, run(shape, args.repeat, steps, args.max_foreign, args.retries, args.quiet_timeout)))
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    text = section(blocks, argv_text.replace("--write", "").strip())
    print(text)
    if args.write:
        write_doc(text)
    return 0  # report only: a missed goal shows in the table, never as a failure


if __name__ == "__main__":
    sys.exit(main())

"""`segment.deep` against a bare MONAI sliding_window_inference call, and a CT-sized volume on CPU.

1. Overhead: the stage (MetaTensor in, uint8 label MetaTensor out, history record) against
   ``monai.inferers.sliding_window_inference`` + argmax with the same network, roi, overlap and
   input (128³, tiny UNet). Both run in this process after a warm-up; medians of --repeat runs,
   interleaved. Goal (issue 5): stage ≤ 1.05× bare.
2. Memory: a 300×512×512 CT-like volume through a 3D UNet on CPU with 96³ windows, in a fresh
   process; peak resident memory (VmHWM from /proc/self/status) must stay under 4 GB. Reports
   the time per window and in total.

    python benchmarks/deep_inference.py [--repeat 7] [--ct-shape 300 512 512] [--write]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import benchlib

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- deep:begin -->", "<!-- deep:end -->"
TINY = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32], "strides": [2, 2]}
CT_NET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1}


def machine() -> str:
    import torch

    return benchlib.machine(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stage(args: dict, roi, weights_dir: Path, model, overlap: float):
    from safetensors.torch import save_file

    from voxpipe.stage import StageContext
    from voxpipe_plugins.deep.infer import DeepSegmenter

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights_dir / "w.safetensors"))
    return DeepSegmenter(
        network="UNet",
        args=args,
        weights="w.safetensors",
        roi_size=list(roi),
        overlap=overlap,
        context=StageContext(config_dir=weights_dir),
    )


def _net(args: dict):
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}).eval()


def overhead(repeat: int) -> dict:
    import tempfile

    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from voxpipe_plugins.common.tensors import make_metatensor

    roi, overlap = (64, 64, 64), 0.25
    model = _net(TINY)
    image = make_metatensor(np.random.default_rng(0).random((1, 128, 128, 128), dtype=np.float32), np.eye(4))
    with tempfile.TemporaryDirectory() as tmp:
        stage = _stage(TINY, roi, Path(tmp), model, overlap)

    def run_bare():
        with torch.inference_mode():
            out = sliding_window_inference(image.as_tensor()[None], roi, 1, model, overlap=overlap, mode="gaussian")
            return out.argmax(1).to(torch.uint8)

    def run_stage():
        return stage({"image": image})["label"]

    assert torch.equal(run_bare()[0], run_stage()[0].as_tensor())  # warm-up and same answer
    times = {"bare": [], "stage": []}
    for _ in range(repeat):
        for name, fn in (("bare", run_bare), ("stage", run_stage)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()} | {"repeat": repeat}


def ct(shape: list[int]) -> dict:
    import tempfile

    import numpy as np
    import torch

    from voxpipe_plugins.common.tensors import make_metatensor
    from voxpipe_plugins.deep.infer import count_windows

    rng = np.random.default_rng(0)
    array = rng.normal(0.0, 1.0, (1, *shape)).astype(np.float32)  # CT-like size; content does not change the cost
    image = make_metatensor(array, np.diag([0.7, 0.7, 1.0, 1.0]))
    del array
    model = _net(CT_NET)
    with tempfile.TemporaryDirectory() as tmp:
        stage = _stage(CT_NET, (96, 96, 96), Path(tmp), model, 0.25)
    start = time.perf_counter()
    out = stage({"image": image})
    total = time.perf_counter() - start
    windows = count_windows(tuple(shape), (96, 96, 96), 0.25)
    return {
        "shape": shape,
        "windows": windows,
        "total_s": total,
        "per_window_s": total / windows,
        "peak_mb": vm_hwm_mb(),
        "input_mb": image.numel() * 4 / 2**20,
        "label_dtype": str(out["label"].dtype),
        "threads": torch.get_num_threads(),
    }


def section(over: dict | None, ct_result: dict | None, argv: str) -> str:
    lines = [
        BEGIN,
        "### Deep segmentation inference (`segment.deep`)",
        "",
        f"Measured {_dt.date.today().isoformat()} with `python benchmarks/deep_inference.py {argv}`.",
        "",
        f"Machine: {machine()}.",
        "",
    ]
    if over:
        ratio = over["stage"] / over["bare"]
        lines += [
            "Stage vs a bare `sliding_window_inference` + argmax: 128³ input, UNet channels (8, 16, 32), roi 64³, "
            f"overlap 0.25, Gaussian blending, CPU, median of {over['repeat']} interleaved runs after a warm-up.",
            "",
            "| | median (s) | ratio |",
            "|---|---:|---:|",
            f"| bare `sliding_window_inference` | {over['bare']:.3f} | 1.00× |",
            f"| `segment.deep` stage | {over['stage']:.3f} | {ratio:.2f}× |",
            "",
            f"Goal ≤ 1.05×: {'met' if ratio <= 1.05 else 'NOT met'} ({ratio:.3f}×).",
            "",
        ]
    if ct_result:
        c = ct_result
        lines += [
            f"CT-sized volume {'×'.join(map(str, c['shape']))} (float32, {c['input_mb']:.0f} MB) through a 3D UNet "
            "(channels 16-32-64-128, one residual unit) on CPU, roi 96³, overlap 0.25, fresh process:",
            "",
            "| windows | total (s) | per window (s) | peak RSS (VmHWM) | goal < 4 GB |",
            "|---:|---:|---:|---:|:---:|",
            f"| {c['windows']} | {c['total_s']:.1f} | {c['per_window_s']:.2f} | {c['peak_mb'] / 1024:.2f} GB | "
            f"{'met' if c['peak_mb'] < 4096 else 'NOT met'} |",
            "",
        ]
    lines.append(END)
    return "\n".join(lines)


def write_doc(text: str) -> None:
    benchlib.write_section(BEGIN, END, text, DOC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--ct-shape", type=int, nargs=3, default=[300, 512, 512])
    parser.add_argument("--skip-ct", action="store_true")
    parser.add_argument("--ct-from", type=Path, help="reuse a CT result (the JSON line printed as `ct: ...` saved to a file)")
    parser.add_argument("--ct-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help=f"replace the deep section of {DOC.relative_to(REPO)}")
    args = parser.parse_args(argv)
    if args.ct_only:
        print(json.dumps(ct(args.ct_shape)))
        return 0
    over = overhead(args.repeat)
    print(f"overhead: {over}", file=sys.stderr)
    ct_result = None
    if args.ct_from:
        ct_result = json.loads(args.ct_from.read_text())
    elif not args.skip_ct:
        proc = subprocess.run(
            [sys.executable, __file__, "--ct-only", "--ct-shape", *map(str, args.ct_shape)], capture_output=True, text=True, check=True
        )
        ct_result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"ct: {ct_result}", file=sys.stderr)
    shown = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write")
    text = section(over, ct_result, shown)
    print(text)
    if args.write:
        write_doc(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does voxpipe.deferred_imports pay for itself? Against importlib.util.LazyLoader and nothing.

Each variant runs in a fresh process, as the fork server does: it defers the modules of
``voxpipe.preload.DEFERRED`` its own way (or not at all), then imports what the fork server
imports (``import_frozen``: collector off, then frozen) and times that -- the **preload**.
It then forks, as the fork server does for each worker, and times one **first case** per
fork, from the fork to the case's end (registry load, pipeline build, the case): the
quickstart pipeline on a small NIfTI (nothing deferred is needed) and the brain-tissue
recipe (its Gaussian mixture needs scikit-learn). It also reports how many of the deferred
modules were still unloaded after the preload. Variants alternate; medians of ``--repeats``.

    .venv/bin/python benchmarks/lazy_imports.py [--repeats 5] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import REPO, child_env, machine, write_section

BEGIN, END = "<!-- lazy_imports:begin -->", "<!-- lazy_imports:end -->"
VARIANTS = ("deferred_imports", "LazyLoader", "nothing")


def lazyloader_defer(names) -> list[str]:
    """The textbook importlib.util.LazyLoader recipe, for each module the fork server defers."""
    import importlib.util

    done = []
    for name in sorted(names, key=lambda n: n.count(".")):
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            continue
        loader = importlib.util.LazyLoader(spec.loader)
        spec.loader = loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
        done.append(name)
    return done


def still_lazy(names) -> int:
    """How many of ``names`` have not run their code yet, in either scheme."""
    from importlib.util import _LazyModule  # type: ignore[attr-defined]

    from voxpipe.deferred_imports import is_deferred

    count = 0
    for name in names:
        module = sys.modules.get(name)
        if module is not None and (is_deferred(module) or object.__getattribute__(module, "__class__") is _LazyModule):
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("VARIANT", "QUICK", "BRAIN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        quick, brain = inputs(Path(scratch))
        results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for i in range(args.repeats):
            for variant in VARIANTS:
                out = Path(scratch) / f"out-{variant}-{i}"
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", variant, str(quick), str(brain), str(out)],
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                    env=child_env(),
                )
                results[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    load_after = os.getloadavg()
    rows = []
    for variant in VARIANTS:
        runs = results[variant]

        def median(key: str, runs=runs) -> str:
            return f"{statistics.median(r[key] for r in runs):.2f}"

        rows.append(
            f"| {variant} | {median('preload')} | {runs[0]['lazy_after']} of {runs[0]['deferred']} | "
            f"{median('quickstart')} | {median('brain')} | {median('preload_plus_brain')} |"
        )
    text = "\n".join(
        [
            BEGIN,
            (
                f"`python benchmarks/lazy_imports.py --repeats {args.repeats}`; {machine()}; medians of {args.repeats} alternating fresh processes (s); "
                f"load average (1/5/15 min) before {' / '.join(f'{x:.2f}' for x in load_before)}, after {' / '.join(f'{x:.2f}' for x in load_after)}."
            ),
            "",
            (
                "| deferral | fork server preload | deferred modules still unloaded after it | first case, quickstart (fork to end) | "
                "first case, brain-tissue GMM (fork to end) | preload + GMM first case |"
            ),
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            END,
        ]
    )
    print(text)
    if args.write:
        write_section(BEGIN, END, text)


def inputs(folder: Path) -> tuple[Path, Path]:
    """A small CT-like NIfTI for the quickstart pipeline, a brain phantom for the GMM recipe."""
    import nibabel as nib
    import numpy as np

    from voxpipe_plugins.segment.phantoms import brain_phantom, ct_phantom

    quick, brain = folder / "quick", folder / "brain"
    quick.mkdir()
    brain.mkdir()
    ct = ct_phantom()
    nib.save(nib.Nifti1Image(ct.image.astype(np.float32), ct.affine), quick / "ct.nii.gz")
    head = brain_phantom(shape=(48, 56, 48), spacing=(2.5, 2.5, 2.5))
    nib.save(nib.Nifti1Image(head.image.astype(np.float32), head.affine), brain / "t1.nii.gz")
    return quick / "ct.nii.gz", brain / "t1.nii.gz"


def measure(variant: str, quick: str, brain: str, out: str) -> dict:
    """One fresh process: preload with ``variant``, then one forked first case per pipeline."""
    import ast
    import os
    import time

    os.environ["MPLBACKEND"] = "agg"  # as the fork server's workers get it
    if variant != "deferred_imports":
        os.environ["VOXPIPE_EAGER_IMPORTS"] = "1"  # voxpipe.preload's own deferral off
    source = (REPO / "platform" / "voxpipe" / "preload.py").read_text()
    deferred = next(
        ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DEFERRED"
    )
    start = time.perf_counter()
    if variant == "LazyLoader":
        lazyloader_defer(deferred)
    import voxpipe.preload

    result = {"preload": time.perf_counter() - start, "deferred": len(deferred), "lazy_after": still_lazy(deferred)}
    for name, config, path in (("quickstart", "quickstart.yaml", quick), ("brain", "brain-tissue.yaml", brain)):
        read, write = os.pipe()
        begun = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # a worker: registry, pipeline, one case
            os.close(read)
            try:
                import voxpipe

                voxpipe.load_pipeline(REPO / "configs" / config).run_file(path, Path(out) / name)
                os.write(write, b"ok")
            finally:
                os._exit(0)  # never back into the parent's code
        os.close(write)
        answer = os.read(read, 2)
        os.waitpid(pid, 0)
        os.close(read)
        if answer != b"ok":
            raise SystemExit(f"{variant}: the {name} case failed")
        result[name] = time.perf_counter() - begun
    result["preload_plus_brain"] = result["preload"] + result["brain"]
    return result


if __name__ == "__main__":
    main()

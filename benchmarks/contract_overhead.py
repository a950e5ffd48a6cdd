"""What the case contract costs: its time after every stage, against the demo's time per case.

Runs configs/demo.yaml (the CT chain: NLM denoise, body and lungs, radiomics, NIfTI, DICOM SEG,
features, PNGs) on the sample CT series in-process, with :func:`voxpipe.contract.violation`
wrapped by a timer, so both numbers come from the same cases. The goal is at most 1 % of the
case time. Prints one line. On 2 shared cores (load 3.4): 0.10 % (1.7 ms of 1.7 s per case);
the label-table pass goes through NumPy because torch's threaded min/max took 10-80 ms per
label on a busy machine (1.9 % of the case).

    python benchmarks/contract_overhead.py [--series 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2, help="sample CT series (cases)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of every case")
    args = parser.parse_args()

    from voxpipe import contract, pipeline
    from voxpipe.cases import case_id, id_key
    from voxpipe.config import load_config
    from voxpipe.registry import Registry
    from voxpipe_plugins.samples.data import write_sample_data

    spent = [0.0]
    calls = [0]
    check = contract.violation

    def timed(*a, **k):
        start = time.perf_counter()
        try:
            return check(*a, **k)
        finally:
            spent[0] += time.perf_counter() - start
            calls[0] += 1

    pipeline.contract.violation = timed
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_sample_data(root / "input", ct_series=args.series)
        validated = load_config(benchlib.REPO / "configs" / "demo.yaml", Registry.load(), device="cpu")
        built = pipeline.Pipeline(validated, "cpu")
        sources = built.discover(root / "input").cases
        key = id_key()
        ratios, case_times, contract_times = [], [], []
        for repeat in range(args.repeat):
            for number, source in enumerate(sources):
                out = root / f"out-{repeat}-{number}"
                out.mkdir()
                spent[0], calls[0] = 0.0, 0
                start = time.perf_counter()
                result = built.run_case(source, case_id(source, key), out)
                total = time.perf_counter() - start
                if not result.ok:
                    raise SystemExit(f"demo case failed: {result.error}")
                ratios.append(spent[0] / total)
                case_times.append(total)
                contract_times.append(spent[0])
    text = (
        f"{len(case_times)} demo cases (sample CT, 160x160x40), {calls[0]} checks per case: "
        f"case {statistics.median(case_times):.2f} s, contract {1000 * statistics.median(contract_times):.2f} ms "
        f"= {100 * statistics.median(ratios):.3f} % of the case (max {100 * max(ratios):.3f} %); goal <= 1 %."
    )
    print(f"{benchlib.machine()}\n{text}")


if __name__ == "__main__":
    main()

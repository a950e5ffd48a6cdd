"""Peak resident memory of one call, measured in a fresh interpreter.

``tracemalloc`` sees only allocations made through Python's allocator (and numpy's, which
reports to it); Pillow's decoders, torch's storages and zlib's windows are plain C
``malloc`` and stay invisible to it, and it counts a numpy buffer whose pages are never
touched as if it were resident. The kernel's high-water mark (VmHWM) sees what was really
committed, C or Python. It is reset just before the call (``/proc/self/clear_refs``), so
imports and warm-up do not count; where that reset is not allowed the process's
``ru_maxrss`` so far is the baseline (which can only under-report by the warm-up's peak).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import REPO

_SCRIPT = """
import json, resource

{setup}

def _status(key):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

def _call():
{call}

for _ in range({warmups}):
    try:
        _call()
    except BaseException:
        pass
try:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    base, reset = _status("VmRSS"), True
except OSError:
    base, reset = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False
error = None
try:
    _call()
except BaseException as exc:
    error = [type(exc).__name__, str(exc)]
peak = _status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("PEAK-MEMORY " + json.dumps({{"delta": peak - base, "error": error}}))
"""


def peak_of(setup: str, call: str, env: dict[str, str] | None = None, warmups: int = 0) -> tuple[int, list[str] | None]:
    """(bytes of resident memory ``call`` added at its peak, [exception type, message] or None).

    ``setup`` runs first (imports, building inputs); ``call`` is the body of a function run
    ``warmups`` times unmeasured, then once measured.
    """
    import os

    script = _SCRIPT.format(setup=textwrap.dedent(setup), call=textwrap.indent(textwrap.dedent(call), "    "), warmups=warmups)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("PEAK-MEMORY ")]
    assert lines, f"probe failed (exit {done.returncode}): {done.stderr[-2000:]}"
    result = json.loads(lines[-1][len("PEAK-MEMORY ") :])
    return result["delta"], result["error"]

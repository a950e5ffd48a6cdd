"""torch's intra-op threads switched off around small CPU work, shared by every stage that needs it.

On a busy machine each whole-image torch operation splits its work between threads and then
waits for the slowest, which may not be running: on the 2-core benchmark machine a noise
estimate that takes ~2 ms on one thread took 28-50 ms on two (docs/denoising.md, Speed).
Work that is small, or already shared out to our own worker threads, runs with torch's
intra-op threads set to one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

_LOCK = threading.Lock()
_USERS = 0
_SAVED = 1


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """torch's intra-op threads set to one while the block runs, then restored.

    Counted, so that overlapping calls from several threads restore the original setting
    only when the last one leaves.
    """
    global _USERS, _SAVED
    with _LOCK:
        if _USERS == 0:
            _SAVED = torch.get_num_threads()
            torch.set_num_threads(1)
        _USERS += 1
    try:
        yield
    finally:
        with _LOCK:
            _USERS -= 1
            if _USERS == 0:
                torch.set_num_threads(_SAVED)


def configured_threads() -> int:
    """torch's thread count as configured, also while :func:`single_threaded_torch` holds it at one."""
    with _LOCK:
        return _SAVED if _USERS else torch.get_num_threads()

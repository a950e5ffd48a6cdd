"""Defaults the CLI and the Python API share, so ``voxpipe run`` and ``voxpipe.run`` behave alike.

Light at import (no third-party code): ``voxpipe --help`` reads these.
"""

from __future__ import annotations

#: Worker processes for a run. One isolated process by default, in the CLI and the API alike:
#: a case that crashes its process (a native decoder, memory) costs that case only. 0 runs in-process.
DEFAULT_WORKERS = 1

#: Feature space of ``match``, ``cluster`` and ``evaluate --store``: the standardised features.
DEFAULT_SPACE = "raw"

"""VoxPipe: plugin-based medical imaging pipelines on MONAI.

The package top level stays light (no torch, no MONAI) so the CLI starts fast. The
Python API is reached lazily::

    import voxpipe
    pipe = voxpipe.load_pipeline("configs/demo.yaml", device="cpu")
    case = pipe.run_file("brain.nii.gz", output_dir="out/")
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = {"load_pipeline", "run", "validate", "load_registry", "NotebookPipeline"}
__all__ = sorted(_API | {"__version__"})


def __getattr__(name: str):
    if name in _API:
        from voxpipe import api

        return getattr(api, name)
    raise AttributeError(f"module 'voxpipe' has no attribute {name!r}")

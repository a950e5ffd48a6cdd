"""Size and spacing of a NIfTI file from its 348-byte header: what ``convert`` prints for each file it wrote.

Why not nibabel: ``convert`` imports neither nibabel nor torch (start-up time), and the
header of a file VoxPipe just wrote needs nothing more than two fixed offsets.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path


def nifti_geometry(path: Path) -> tuple[str, str]:
    """``("512x512x120", "0.7x0.7x1.25")`` for a NIfTI-1 file (.nii or .nii.gz)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read(348)
    order = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    dim = struct.unpack(order + "8h", raw[40:56])
    pixdim = struct.unpack(order + "8f", raw[76:108])
    rank = max(1, min(int(dim[0]), 7))
    size = "x".join(str(n) for n in dim[1 : rank + 1])
    spacing = "x".join(f"{abs(p):.3g}" for p in pixdim[1 : min(rank, 3) + 1])
    return size, spacing

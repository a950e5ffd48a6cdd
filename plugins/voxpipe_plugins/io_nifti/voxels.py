"""NIfTI voxel data read so that memory follows the bytes a file really holds, never what its header claims.

nibabel reads voxels into ``bytearray(declared bytes)``, which is zero-filled and so commits
the whole declared size before it finds out the file is short: a 67-byte ``.nii.gz`` that
declares 1024x1024x768 float32 cost 3 GiB. Here an uncompressed file's size is compared
with the declaration before anything is read, and a gzip file is inflated in 1 MiB pieces
into a buffer that the operating system commits page by page as it is written, stopping
at the declared size. A short file is refused with what it declares and what it holds;
it has cost only the bytes it held. Inflating only once keeps the load as fast as
nibabel's (a separate counting pass would add ~60 % to every .nii.gz load).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from voxpipe.limits import check_present, inflate_pieces

WHAT = "NIfTI file"


class NiftiReadError(ValueError):
    """A NIfTI file that cannot be read as such (corrupt header or compressed stream)."""


def data_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    total = int(np.dtype(dtype).itemsize)
    for n in shape:
        total *= int(n)
    return total


def read_raw(path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> np.ndarray:
    """The stored (unscaled) voxels of ``shape`` in Fortran order, refusing a file that holds fewer bytes than declared."""
    nbytes = data_bytes(shape, dtype)
    if str(path).lower().endswith(".gz"):
        raw = _inflate(path, offset, nbytes)
    else:
        check_present(WHAT, nbytes, Path(path).stat().st_size - offset)
        raw = np.fromfile(path, dtype=np.uint8, count=nbytes, offset=offset)
        check_present(WHAT, nbytes, raw.size)  # the file shrank between the two looks
    return raw.view(dtype).reshape(shape, order="F")


def _inflate(path: Path, offset: int, nbytes: int) -> np.ndarray:
    buffer = np.empty(nbytes, dtype=np.uint8)  # pages are committed as they are written, not now
    view = memoryview(buffer)
    skip, filled = offset, 0
    try:
        with open(path, "rb") as handle:
            for piece in inflate_pieces(handle, offset + nbytes, check_end=True):
                if skip:
                    used = min(skip, len(piece))
                    skip -= used
                    piece = piece[used:]
                view[filled : filled + len(piece)] = piece
                filled += len(piece)
    except zlib.error as exc:
        raise NiftiReadError(f"{WHAT}: the gzip data is corrupt or cut short (zlib: {exc}); copy or export it again") from None
    check_present(WHAT, nbytes, filled)
    return buffer


def scaled(raw: np.ndarray, slope, inter) -> np.ndarray:
    """``raw`` with the header's scl_slope/scl_inter applied exactly as nibabel's ``np.asanyarray(image.dataobj)`` does."""
    from nibabel.volumeutils import apply_read_scaling

    slope, inter = np.asanyarray(slope), np.asanyarray(inter)
    if np.can_cast(inter, slope.dtype):
        inter = inter.astype(slope.dtype)
    return apply_read_scaling(raw, slope, inter)

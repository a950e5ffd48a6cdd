"""Resource limits checked *before* allocating: declared sizes and compressed streams.

A 300-byte file can declare a 2^63-voxel image, and a few kilobytes of gzip or deflate
can inflate to gigabytes. Readers therefore compare what a file *declares* (or what a
stream inflates to, counted in bounded chunks and thrown away) against a cap first, and
refuse with one clear line. The default cap is ``DEFAULT_MAX_GIB``; the environment
variable ``VOXPIPE_MAX_GIB`` lowers or raises it for every reader, and stages that have a
``max_gib`` parameter use theirs.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

DEFAULT_MAX_GIB = 16.0
MAX_GIB_ENV = "VOXPIPE_MAX_GIB"
CHUNK = 1 << 20


class ResourceLimitError(ValueError):
    """A file declares or inflates to more than the configured cap."""


def max_bytes(max_gib: float | None = None) -> int:
    """The cap in bytes: the argument, else ``$VOXPIPE_MAX_GIB``, else the default."""
    if max_gib is None:
        try:
            max_gib = float(os.environ.get(MAX_GIB_ENV, "") or DEFAULT_MAX_GIB)
        except ValueError:
            max_gib = DEFAULT_MAX_GIB
    return int(max_gib * 2**30)


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_declared(what: str, shape: tuple[int, ...], bytes_per_item: float, cap: int) -> int:
    """Refuse a declared array larger than ``cap`` bytes (before anything is allocated)."""
    total = 1
    for n in shape:
        n = int(n)
        if n < 0:
            raise ResourceLimitError(f"{what}: negative dimension {n} declared in the header; the file is corrupt")
        total *= n
    size = int(total * bytes_per_item)
    if size > cap:
        dims = "x".join(str(int(n)) for n in shape)
        raise ResourceLimitError(f"{what}: declares {dims} values ({_gib(size)}), above the {_gib(cap)} cap; "
                                 f"raise max_gib (or {MAX_GIB_ENV}) if this is intended")
    return size


def inflated_size(stream, cap: int, what: str, raw_deflate: bool = False) -> int:
    """Bytes a zlib/gzip/raw-deflate stream inflates to, refusing as soon as it passes ``cap``.

    Decompresses in 1 MiB pieces and discards them, so memory stays at a few MiB whatever
    the stream holds.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else zlib.MAX_WBITS | 32)
    total = 0
    while True:
        data = stream.read(CHUNK)
        if not data:
            break
        while data:
            out = inflater.decompress(data, CHUNK)
            total += len(out)
            if total > cap:
                raise ResourceLimitError(f"{what}: compressed data inflates to more than the {_gib(cap)} cap (a decompression bomb?); "
                                         f"raise max_gib (or {MAX_GIB_ENV}) if this is intended")
            data = inflater.unconsumed_tail
        if inflater.eof:
            break
    return total


def check_gzip_file(path: Path, cap: int, what: str) -> int:
    """Inflated size of a gzip file, refused above ``cap`` (reads it once, in pieces)."""
    with open(path, "rb") as handle:
        return inflated_size(handle, cap, what)


__all__ = ["ResourceLimitError", "DEFAULT_MAX_GIB", "max_bytes", "check_declared", "inflated_size", "check_gzip_file", "gzip"]

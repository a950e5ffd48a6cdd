"""Resource limits checked *before* allocating: declared sizes and compressed streams.

A 300-byte file can declare a 2^63-voxel image, and a few kilobytes of gzip or deflate
can inflate to gigabytes. Readers therefore compare what a file *declares* (or what a
stream inflates to, counted in bounded chunks and thrown away) against a cap first, and
refuse with one clear line. A declaration under the cap can still be a lie: a 67-byte file
may declare 3 GiB, so readers also compare it with the bytes really present
(:func:`check_present`) before they commit memory to it. The default cap is
``DEFAULT_MAX_GIB``; the environment variable ``VOXPIPE_MAX_GIB`` lowers or raises it for
every reader, and stages that have a ``max_gib`` parameter use theirs.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

DEFAULT_MAX_GIB = 16.0
MAX_GIB_ENV = "VOXPIPE_MAX_GIB"
CHUNK = 1 << 20


class ResourceLimitError(ValueError):
    """A file declares or inflates to more than the configured cap."""


class TruncatedError(ValueError):
    """A file holds fewer bytes than its header declares (damaged, or a lie meant to make us allocate)."""


def max_bytes(max_gib: float | None = None) -> int:
    """The cap in bytes: the argument, else ``$VOXPIPE_MAX_GIB``, else the default.

    A ``VOXPIPE_MAX_GIB`` that is not a positive number is refused rather than replaced by
    the default: a typo such as ``0.5GiB`` must not silently become a 16 GiB cap.
    """
    if max_gib is None:
        text = os.environ.get(MAX_GIB_ENV, "").strip()
        if not text:
            return int(DEFAULT_MAX_GIB * 2**30)
        try:
            max_gib = float(text)
        except ValueError:
            max_gib = math.nan
        if not (math.isfinite(max_gib) and max_gib > 0):
            shown = text if len(text) <= 20 else text[:20] + "..."
            raise ResourceLimitError(
                f"{MAX_GIB_ENV}={shown!r} is not a positive number of GiB; set it to e.g. 0.5 or 16, or unset it for the 16 GiB default"
            )
    return int(max_gib * 2**30)


def size_text(n: int) -> str:
    """A byte count as people read it, with the exact figure: ``3 GiB (3221225472 bytes)``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit} ({n} bytes)"
    return f"{n} bytes"


def check_present(what: str, declared: int, present: int) -> None:
    """Refuse a file whose header declares more data bytes than the file holds (before allocating for them)."""
    if present < declared:
        raise TruncatedError(
            f"{what} is truncated: its header declares {size_text(declared)} of data, the file holds "
            f"{size_text(max(present, 0))}; the file is damaged or incomplete: copy or export it again"
        )


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
        raise ResourceLimitError(
            f"{what}: declares {dims} values ({_gib(size)}), above the {_gib(cap)} cap; "
            f"raise max_gib (or {MAX_GIB_ENV}) if this is intended"
        )
    return size


def inflate_pieces(stream: BinaryIO, limit: int, raw_deflate: bool = False, check_end: bool = False) -> Iterator[bytes]:
    """The inflated bytes of a zlib/gzip/raw-deflate stream, in pieces of at most 1 MiB, never more than ``limit`` in all.

    Gzip files may hold several members one after another (``cat a.gz b.gz``), as the gzip
    module reads them; each is inflated in turn, and zero padding after the last is ignored.
    A raw deflate or zlib stream ends at its end marker. Corrupt data raises ``zlib.error``.
    Nothing past ``limit`` is ever inflated, so a bomb costs at most one piece of memory.

    With ``check_end``, a stream that stops at ``limit`` is followed to its end marker (at
    most one more piece), so zlib checks the gzip CRC and length: corrupt data that still
    inflates to the right length, or a missing trailer, raises ``zlib.error``. A stream that
    goes on past ``limit`` is left there unchecked.
    """
    gzip_stream = not raw_deflate
    inflater = zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else zlib.MAX_WBITS | 32)
    produced = 0
    data = b""
    while produced < limit:
        if not data:
            data = stream.read(CHUNK)
            if not data:
                return
        out = inflater.decompress(data, min(CHUNK, limit - produced))
        data = inflater.unconsumed_tail
        if out:
            produced += len(out)
            yield out
        if inflater.eof:
            if not gzip_stream:
                return
            data = (inflater.unused_data + data).lstrip(b"\0")
            while not data:  # zero padding, as gzip allows, then another member or the end
                more = stream.read(CHUNK)
                if not more:
                    return
                data = more.lstrip(b"\0")
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # the next gzip member
    if check_end and not inflater.eof:
        while not inflater.eof:
            if not data:
                data = stream.read(CHUNK)
                if not data:
                    raise zlib.error("the compressed data ends before its end marker")
            if inflater.decompress(data, CHUNK):
                return  # more data than the caller wanted: not ours to check
            data = inflater.unconsumed_tail


def inflated_size(stream, cap: int, what: str, raw_deflate: bool = False) -> int:
    """Bytes a zlib/gzip/raw-deflate stream inflates to, refusing as soon as it passes ``cap``.

    Decompresses in 1 MiB pieces and discards them, so memory stays at a few MiB whatever
    the stream holds.
    """
    total = 0
    for piece in inflate_pieces(stream, cap + 1, raw_deflate):
        total += len(piece)
        if total > cap:
            raise ResourceLimitError(
                f"{what}: compressed data inflates to more than the {_gib(cap)} cap (a decompression bomb?); "
                f"raise max_gib (or {MAX_GIB_ENV}) if this is intended"
            )
    return total


def check_gzip_file(path: Path, cap: int, what: str) -> int:
    """Inflated size of a gzip file, refused above ``cap`` (reads it once, in pieces)."""
    with open(path, "rb") as handle:
        return inflated_size(handle, cap, what)


__all__ = [
    "DEFAULT_MAX_GIB",
    "ResourceLimitError",
    "TruncatedError",
    "check_declared",
    "check_gzip_file",
    "check_present",
    "gzip",
    "inflate_pieces",
    "inflated_size",
    "max_bytes",
    "size_text",
]

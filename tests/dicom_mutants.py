"""Damaged compressed DICOM files, made deterministically from good ones, for the decoder fuzz test.

Each mutant gets its own Series and SOP Instance UIDs (so it is its own case) and then one
kind of damage to its bytes: bit flips in the pixel data, truncation, a corrupt basic offset
table, a wrong fragment length, an overwritten codestream header, a defined Pixel Data length
that is wrong, or Rows/Columns that disagree with the codestream. Deflated files get flips and
truncation of the deflated stream.
"""

from __future__ import annotations

import random
import struct
import warnings
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

PIXEL_TAG = b"\xe0\x7f\x10\x00"
ITEM = b"\xfe\xff\x00\xe0"
KINDS = ("flip", "truncate", "offset_table", "fragment_length", "codestream_header", "pixel_length", "dimensions")
DEFLATED_KINDS = ("flip", "truncate")


def mutant_bytes(base: Path, kind: str, rng: random.Random) -> bytes:
    """``base`` re-identified as a new one-file series, then damaged as ``kind`` says."""
    warnings.simplefilter("ignore")
    ds = pydicom.dcmread(base)
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if kind == "dimensions":
        ds.Rows = rng.choice([1, ds.Rows - 1, ds.Rows + 1, ds.Rows * 2, 4096])
        ds.Columns = rng.choice([ds.Columns, ds.Columns + 3, 1])
    from io import BytesIO

    buffer = BytesIO()
    deflated = ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    if deflated:
        pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    else:
        ds.save_as(buffer, enforce_file_format=True)
    raw = bytearray(buffer.getvalue())
    if deflated:
        return _damage_deflated(raw, kind, rng)
    pixel = raw.rfind(PIXEL_TAG)
    value = pixel + 12  # encapsulated Pixel Data: tag, OB, 2 reserved, undefined length
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(value, len(raw))
            raw[position] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del raw[rng.randrange(value, len(raw) - 1) :]
    elif kind == "offset_table":
        bot_length = struct.unpack_from("<I", raw, value + 4)[0]
        garbage = struct.pack("<II", rng.randrange(2**32), rng.randrange(2**32))
        raw[value + 4 : value + 8 + bot_length] = struct.pack("<I", len(garbage)) + garbage
    elif kind == "fragment_length":
        fragments = _fragments(raw, value)
        at = rng.choice(fragments[1:] or fragments)
        old = struct.unpack_from("<I", raw, at + 4)[0]
        new = rng.choice([0, 1, old - 1, old + 1, old * 2 + 7, 0xFFFFFFFF, 0x7FFFFFFF])
        struct.pack_into("<I", raw, at + 4, new % 2**32)
    elif kind == "codestream_header":
        fragments = _fragments(raw, value)
        start = (fragments[1] if len(fragments) > 1 else fragments[0]) + 8
        for _ in range(8):
            raw[start + rng.randrange(min(64, len(raw) - start))] = rng.randrange(256)
    elif kind == "pixel_length":
        struct.pack_into("<I", raw, pixel + 8, rng.choice([0, 2, len(raw) - value - 2, len(raw), 2**31]))
    return bytes(raw)


def _fragments(raw: bytearray, value: int) -> list[int]:
    """Offsets of the items (offset table first) of encapsulated Pixel Data starting at ``value``."""
    found, position = [], value
    while position + 8 <= len(raw) and raw[position : position + 4] == ITEM:
        found.append(position)
        position += 8 + struct.unpack_from("<I", raw, position + 4)[0]
    return found or [value]


def _damage_deflated(raw: bytearray, kind: str, rng: random.Random) -> bytes:
    meta_length = struct.unpack_from("<I", raw, 132 + 8)[0]
    stream = 132 + 12 + meta_length
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(stream, len(raw))
            raw[position] ^= 1 << rng.randrange(8)
    else:
        del raw[rng.randrange(stream + 1, len(raw) - 1) :]
    return bytes(raw)


def write_mutants(bases: dict[str, Path], folder: Path, per_codec: int, seed: int = 14) -> list[Path]:
    """``per_codec`` mutants of each base file, with scanner-like names, in ``folder``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for codec, base in sorted(bases.items()):
        deflated = codec == "deflate"
        kinds = DEFLATED_KINDS if deflated else KINDS
        for i in range(per_codec):
            kind = kinds[i % len(kinds)]
            path = folder / f"MU{len(written):05d}.dcm"
            path.write_bytes(mutant_bytes(base, kind, rng))
            written.append(path)
    return written

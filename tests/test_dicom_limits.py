"""Hostile DICOM structure in discovery and loading (issue 14 §5 deflated discovery, §6 nesting).

A deflated file of about a megabyte that inflates to hundreds of MiB once made discovery hold
the whole inflated stream several times over (4.1 GiB for 1 GiB). Discovery now inflates a
deflated data set only up to Pixel Data and at most ``DEFLATED_HEADER_CAP`` bytes; loading
inflates it whole only when its size fits the header cap plus the pixels it declares. Memory
is measured with tracemalloc, as tests/test_security.py does for the other bombs.

Sequences nested deeper than ``MAX_NESTING`` are refused with their own reason in every
encoding the readers meet (explicit and implicit VR, undefined and defined lengths, without
the preamble, deflated), never reported as "not an image".
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from voxpipe_plugins.io_dicom import headers as H
from voxpipe_plugins.io_dicom.loader import DicomOptions, discover_series, load_volume
from voxpipe_plugins.io_dicom.series import read_headers
from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series

BUDGET = 48 * 2**20
PIXEL_TAG = b"\xe0\x7f\x10\x00"


def _peak(function) -> tuple[int, object]:
    """Peak traced memory of a call (after a warm-up call) and what it returned or raised."""
    for _ in range(2):
        tracemalloc.start()
        try:
            outcome = function()
        except Exception as exc:  # noqa: BLE001 - the caller checks what was raised
            outcome = exc
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, outcome


def _slice(tmp_path: Path) -> pydicom.Dataset:
    warnings.simplefilter("ignore")
    [path] = write_series(tmp_path / "src", ct_like_volume((1, 32, 32), seed=4), SeriesSpec())
    return pydicom.dcmread(path)


def _deflated(path: Path, ds, before_pixels: int = 0, after_pixels: int = 0) -> Path:
    """``ds`` deflated, with ``before_pixels`` zero bytes in a private OB before Pixel Data and
    ``after_pixels`` in trailing padding after it: a small file that inflates to that much."""
    plain = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(plain, enforce_file_format=True)
    raw = plain.getvalue()
    body = raw[144 + struct.unpack_from("<I", raw, 140)[0] :]
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    coded = io.BytesIO()
    pydicom.dcmwrite(coded, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    meta = coded.getvalue()[: 144 + struct.unpack_from("<I", coded.getvalue(), 140)[0]]
    pixels_at = body.rfind(PIXEL_TAG)
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(meta)
        handle.write(deflater.compress(body[:pixels_at]))
        if before_pixels:
            handle.write(
                deflater.compress(
                    struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 4)
                    + b"BOMB"
                    + struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, before_pixels)
                )
            )
            _zeros(handle, deflater, before_pixels)
        handle.write(deflater.compress(body[pixels_at:]))
        if after_pixels:
            handle.write(deflater.compress(struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, after_pixels)))
            _zeros(handle, deflater, after_pixels)
        handle.write(deflater.flush())
    return path


def _zeros(handle, deflater, count: int) -> None:
    block = bytes(1 << 22)
    for start in range(0, count, len(block)):
        handle.write(deflater.compress(block[: min(len(block), count - start)]))


def test_deflated_series_still_loads(tmp_path):
    ds = _slice(tmp_path)
    expected = ds.pixel_array.copy()
    path = _deflated(tmp_path / "in" / "IM0001.dcm", ds)
    [series] = discover_series(path.parent)
    assert series.first.transfer_syntax == DeflatedExplicitVRLittleEndian and series.first.pixel_offset is None
    volume = load_volume([path], DicomOptions(), None, series.headers)
    np.testing.assert_array_equal(volume.array[0, :, :, 0].T, expected.astype(np.int32) - 1024)  # slope 1, intercept -1024
    assert H.read_header_pydicom(path).values == H.header_of(path).values


def test_deflated_header_bomb_is_refused_in_discovery_within_budget(tmp_path, monkeypatch):
    """256 MiB of zeros before Pixel Data, under the default 16 GiB cap: refused at the header cap."""
    monkeypatch.delenv("VOXPIPE_MAX_GIB", raising=False)
    bomb = _deflated(tmp_path / "in" / "IM0001.dcm", _slice(tmp_path), before_pixels=256 * 2**20)
    assert bomb.stat().st_size < 2**21
    skipped: Counter = Counter()
    peak, headers = _peak(lambda: read_headers([bomb], skipped))
    assert headers == [] and peak < BUDGET, peak
    assert skipped[H.HeaderBomb.reason] == 2  # one per measured call
    peak, caught = _peak(lambda: H.read_header_pydicom(bomb))
    assert isinstance(caught, H.HeaderBomb) and peak < BUDGET


def test_deflated_pixel_bomb_is_refused_before_pydicom_inflates_it(tmp_path, monkeypatch):
    """A valid header and 32x32 pixels, then 256 MiB of trailing padding: discovery is cheap, loading refuses."""
    monkeypatch.delenv("VOXPIPE_MAX_GIB", raising=False)
    bomb = _deflated(tmp_path / "in" / "IM0001.dcm", _slice(tmp_path), after_pixels=256 * 2**20)
    peak, found = _peak(lambda: discover_series(bomb.parent))
    assert len(found) == 1 and peak < BUDGET, peak
    from voxpipe_plugins.io_dicom.pixels import PixelError

    peak, caught = _peak(lambda: load_volume([bomb], DicomOptions(), None, found[0].headers))
    assert isinstance(caught, PixelError) and "decompression bomb" in str(caught) and peak < BUDGET, (peak, caught)


# --- nesting -----------------------------------------------------------------------------------


def _nested(depth: int, defined: bool, implicit: bool) -> bytes:
    """A private sequence (0009,1001) nested ``depth`` levels deep."""

    def sq(value: bytes) -> bytes:
        length = len(value) if defined else 0xFFFFFFFF
        head = struct.pack("<HHI", 0x0009, 0x1001, length) if implicit else struct.pack("<HH2sHI", 0x0009, 0x1001, b"SQ", 0, length)
        return head + value + (b"" if defined else struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))

    def item(value: bytes) -> bytes:
        if defined:
            return struct.pack("<HHI", 0xFFFE, 0xE000, len(value)) + value
        return struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + value + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)

    value = b""
    for _ in range(depth):
        value = sq(item(value))
    creator = (struct.pack("<HHI", 0x0009, 0x0010, 4) if implicit else struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 4)) + b"DEEP"
    return creator + value


def _deep_file(tmp_path: Path, depth: int, variant: str) -> Path:
    ds = _slice(tmp_path)
    implicit = variant == "implicit"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=implicit, little_endian=True, force_encoding=True)
    raw = buffer.getvalue()
    at = raw.rfind(PIXEL_TAG)
    raw = raw[:at] + _nested(depth, variant == "defined", implicit) + raw[at:]
    if variant == "no-preamble":
        raw = raw[132:]
    path = tmp_path / "in" / variant / "IM0001.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("variant", ["explicit", "implicit", "no-preamble"])
@pytest.mark.parametrize("depth", [H.MAX_NESTING + 1, 1000, 5000])
def test_deep_nesting_is_named_as_such(tmp_path, variant, depth):
    path = _deep_file(tmp_path, depth, variant)
    skipped: Counter = Counter()
    assert read_headers([path], skipped) == []
    assert dict(skipped) == {H.NestingTooDeep.reason: 1}


@pytest.mark.parametrize("depth", [2, 10])
@pytest.mark.parametrize("variant", ["explicit", "implicit", "defined", "no-preamble"])
def test_ordinary_nesting_still_reads(tmp_path, variant, depth):
    path = _deep_file(tmp_path, depth, variant)
    skipped: Counter = Counter()
    assert len(read_headers([path], skipped)) == 1 and not skipped


def test_deep_nesting_in_a_deflated_file(tmp_path):
    ds = _slice(tmp_path)
    plain = tmp_path / "plain.dcm"
    ds.save_as(plain, enforce_file_format=True)
    raw = plain.read_bytes()  # pydicom cannot re-encode a 1000-deep data set: the deflated file is built by hand
    body_plain = raw[144 + struct.unpack_from("<I", raw, 140)[0] :]
    body = body_plain[: body_plain.rfind(PIXEL_TAG)] + _nested(1000, False, False) + body_plain[body_plain.rfind(PIXEL_TAG) :]
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    coded = io.BytesIO()
    pydicom.dcmwrite(coded, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    meta = coded.getvalue()[: 144 + struct.unpack_from("<I", coded.getvalue(), 140)[0]]
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    path = tmp_path / "in" / "IM0001.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(meta + deflater.compress(body) + deflater.flush())
    skipped: Counter = Counter()
    assert read_headers([path], skipped) == [] and dict(skipped) == {H.NestingTooDeep.reason: 1}

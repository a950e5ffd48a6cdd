"""Pixel values: read frames into one preallocated array in sorted order.

Uncompressed little-endian frames are read straight from the file into their slot of the
output array (no per-file pydicom decode, no intermediate copies). Compressed frames go
through pydicom's pixel backends (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg,
pylibjpeg-rle, pyjpegls), in a process pool when there are many. Then sign extension for
signed data stored in fewer bits than allocated; :mod:`.rescale` makes real-world values.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from voxpipe_plugins.io_dicom.frames import Frame
from voxpipe_plugins.io_dicom.headers import EXPLICIT_LE, IMPLICIT_LE, SliceHeader


class PixelError(ValueError):
    """A frame's pixel data cannot be read as declared; the message names the file."""


def _container(header: SliceHeader) -> np.dtype:
    pixel_tag = header.values.get("_pixel_tag")
    if pixel_tag in (0x7FE00008, 0x7FE00009):  # Float / Double Float Pixel Data
        return np.dtype("<f4" if pixel_tag == 0x7FE00008 else "<f8")
    bits = int(header.get("BitsAllocated", 16))
    signed = int(header.get("PixelRepresentation", 0)) == 1
    if bits not in (8, 16, 32):
        raise PixelError(f"{header.path.name}: BitsAllocated {bits} is not supported")
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}").newbyteorder("<")


def fast_readable(header: SliceHeader) -> bool:
    """Uncompressed, little endian, one sample per pixel, offset known: read bytes in place."""
    return (
        header.transfer_syntax in (EXPLICIT_LE, IMPLICIT_LE)
        and header.pixel_offset is not None
        and int(header.get("SamplesPerPixel", 1)) == 1
        and int(header.get("BitsAllocated", 16)) in (8, 16, 32)
    )


def check_frames(frames: list[Frame], shape: tuple[int, int], max_bytes: int) -> np.dtype:
    """The stack's stored type, after checking declared sizes against the cap and the data present.

    Runs before anything is allocated, so a header that declares a huge or short image is
    refused with its file named instead of failing (or swapping) half-way.
    """
    dtype = _container(frames[0].header)
    rows, cols = shape
    total = len(frames) * rows * cols * dtype.itemsize
    if total > max_bytes:
        raise PixelError(
            f"volume of {len(frames)}x{rows}x{cols} ({total / 2**30:.1f} GiB) exceeds the {max_bytes / 2**30:.1f} GiB cap; "
            "raise max_gib if this is intended"
        )
    frame_bytes = rows * cols * dtype.itemsize
    for frame in frames:
        header = frame.header
        if (int(header.get("Rows", 0)), int(header.get("Columns", 0))) != shape:
            raise PixelError(f"{header.path.name}: {header.get('Rows')}x{header.get('Columns')} pixels, but the series is {rows}x{cols}")
        if frame.index is None and header.pixel_length is not None and header.pixel_length < frame_bytes and fast_readable(header):
            raise PixelError(f"{header.path.name}: Pixel Data holds {header.pixel_length} bytes, {frame_bytes} expected for {rows}x{cols} pixels")
    return dtype


def in_place_readable(frame: Frame, dtype: np.dtype) -> bool:
    """A single-frame file whose bytes can go straight into a ``dtype`` slot."""
    return frame.index is None and fast_readable(frame.header) and _container(frame.header) == dtype


def read_frames(frames: list[Frame], shape: tuple[int, int], max_bytes: int, workers: int = 0) -> np.ndarray:
    """Stored values of ``frames`` (already in output order) as a ``(K, rows, cols)`` array."""
    dtype = check_frames(frames, shape, max_bytes)
    out = np.empty((len(frames), *shape), dtype=dtype.newbyteorder("="))
    slow: list[int] = []
    for k, frame in enumerate(frames):
        if in_place_readable(frame, dtype):
            read_in_place(frame.header, out[k])
        else:
            slow.append(k)
    if slow:
        _decode_into(out, frames, slow, workers)
    return out


def read_in_place(header: SliceHeader, target: np.ndarray) -> None:
    needed = target.nbytes
    if header.pixel_length is not None and header.pixel_length < needed:
        raise PixelError(f"{header.path.name}: Pixel Data holds {header.pixel_length} bytes, {needed} expected for {header.get('Rows')}x{header.get('Columns')} pixels")
    with open(header.path, "rb") as handle:
        handle.seek(header.pixel_offset)
        read = handle.readinto(memoryview(target).cast("B"))
    if read != needed:
        raise PixelError(f"{header.path.name}: file ends inside Pixel Data ({read} of {needed} bytes); the file is truncated")


def decode_pixels(path: str | Path):
    """``(dataset, pixel_array)`` through pydicom's backends; failures become one-line PixelErrors."""
    import warnings

    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
            return ds, ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - any backend failure is this file's problem
            from voxpipe.errors import one_line

            syntax = ""
            try:
                syntax = f" {ds.file_meta.TransferSyntaxUID.name}"
            except Exception:  # noqa: BLE001
                pass
            raise PixelError(f"{Path(path).name}: cannot decode{syntax} pixel data ({one_line(exc)})") from None


def _decode_file(path: str, frames: list[int | None]) -> list[np.ndarray]:
    """Decode frames of one file with pydicom (runs in worker processes too)."""
    ds, array = decode_pixels(path)
    if ds.get("PhotometricInterpretation", "") in ("MONOCHROME1", "MONOCHROME2") or array.ndim == 2 or int(ds.get("SamplesPerPixel", 1)) == 1:
        array = array if int(ds.get("NumberOfFrames", 1) or 1) > 1 else array[None]
    return [array[f if f is not None else 0] for f in frames]


def _decode_into(out: np.ndarray, frames: list[Frame], which: list[int], workers: int) -> None:
    by_file: dict[Path, list[int]] = {}
    for k in which:
        by_file.setdefault(frames[k].path, []).append(k)
    jobs = [(str(path), [frames[k].index for k in ks], ks) for path, ks in by_file.items()]
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers > 1 and len(jobs) >= 8:
        from concurrent.futures import ProcessPoolExecutor  # ~10 ms of imports that uncompressed series never need

        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_decode_file, [j[0] for j in jobs], [j[1] for j in jobs], chunksize=max(1, len(jobs) // (workers * 4)))
            for (path, _, ks), arrays in zip(jobs, results):
                _place(out, ks, arrays, path)
    else:
        for path, indices, ks in jobs:
            _place(out, ks, _decode_file(path, indices), path)


def _place(out: np.ndarray, ks: list[int], arrays: list[np.ndarray], path: str) -> None:
    for k, array in zip(ks, arrays):
        if array.shape != out.shape[1:]:
            raise PixelError(f"{Path(path).name}: decoded frame is {array.shape}, expected {out.shape[1:]}")
        out[k] = array


def fix_bits(stored: np.ndarray, header: SliceHeader) -> None:
    """Sign-extend or mask values stored in fewer bits than allocated (in place)."""
    allocated = int(header.get("BitsAllocated", 16))
    bits = int(header.get("BitsStored", allocated))
    if bits >= allocated:
        return
    shift = allocated - bits
    if np.issubdtype(stored.dtype, np.signedinteger):
        np.left_shift(stored, shift, out=stored)
        np.right_shift(stored, shift, out=stored)  # arithmetic shift: sign-extends
    else:
        np.bitwise_and(stored, (1 << bits) - 1, out=stored)

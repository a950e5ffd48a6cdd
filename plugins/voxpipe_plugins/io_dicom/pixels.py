"""Pixel values: read frames into one preallocated array in sorted order.

Uncompressed little-endian frames are read straight from the file into their slot of the
output array (no per-file pydicom decode, no intermediate copies). Compressed frames go
through pydicom's pixel backends (pylibjpeg-libjpeg, pylibjpeg-openjpeg, pyjpegls, GDCM,
Pillow). Then sign extension for signed data stored in fewer bits than allocated;
:mod:`.rescale` makes real-world values.

Decoders are native code fed untrusted bytes, so whatever they raise -- including
pyo3's ``PanicException``, which derives from ``BaseException`` -- becomes this file's
:class:`PixelError`, and one bad series never stops a batch. RLE goes through pydicom's
own numpy decoder rather than pylibjpeg-rle, whose Rust code panics (and prints a panic
report to stderr) on a damaged frame. Many files are decoded in a process pool only from
the main process: a pipeline worker is itself a (daemonic) pool process, which may not
have children, and the batch already keeps every core busy one case per worker; there
frames are decoded one after another (the JPEG, JPEG-LS and JPEG 2000 bindings hold the
GIL, so threads would not decode faster).
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np

from voxpipe_plugins.io_dicom.frames import Frame
from voxpipe_plugins.io_dicom.headers import (
    DEFLATED,
    EXPLICIT_LE,
    IMPLICIT_LE,
    SliceHeader,
)

_JPEG = ("pillow", "pylibjpeg")  # Pillow (libjpeg-turbo) decodes as GDCM does; pylibjpeg for 12-bit
_JPEG_LOSSLESS = ("pylibjpeg",)
# Backends per compressed syntax, in order. GDCM is left out: on damaged data it throws a C++
# exception that nothing catches and aborts the whole process. pylibjpeg-rle is left out: it panics.
SAFE_PLUGINS: dict[str, tuple[str, ...]] = {
    "1.2.840.10008.1.2.5": ("pydicom",),  # RLE: pydicom's numpy decoder
    "1.2.840.10008.1.2.4.50": _JPEG,
    "1.2.840.10008.1.2.4.51": _JPEG,
    "1.2.840.10008.1.2.4.57": _JPEG_LOSSLESS,
    "1.2.840.10008.1.2.4.70": _JPEG_LOSSLESS,
    "1.2.840.10008.1.2.4.80": ("pylibjpeg", "pyjpegls"),
    "1.2.840.10008.1.2.4.81": ("pylibjpeg", "pyjpegls"),
    "1.2.840.10008.1.2.4.90": ("pylibjpeg", "pillow"),
    "1.2.840.10008.1.2.4.91": ("pylibjpeg", "pillow"),
}


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
            raise PixelError(
                f"{header.path.name}: Pixel Data holds {header.pixel_length} bytes, {frame_bytes} expected for {rows}x{cols} pixels"
            )
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
        raise PixelError(
            f"{header.path.name}: Pixel Data holds {header.pixel_length} bytes, {needed} expected for {header.get('Rows')}x{header.get('Columns')} pixels"
        )
    with open(header.path, "rb") as handle:
        handle.seek(header.pixel_offset)
        read = handle.readinto(memoryview(target).cast("B"))
    if read != needed:
        raise PixelError(f"{header.path.name}: file ends inside Pixel Data ({read} of {needed} bytes); the file is truncated")


def decode_pixels(path: str | Path, header: SliceHeader | None = None):
    """``(dataset, pixel_array)`` through pydicom's backends; any failure becomes a one-line PixelError."""
    import warnings

    import pydicom

    name = Path(path).name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = None
        try:
            _check_inflation(Path(path), header)
            ds = pydicom.dcmread(path)
            return ds, _pixel_array(ds)
        except (KeyboardInterrupt, SystemExit):
            raise
        except PixelError:
            raise
        except RecursionError:
            raise PixelError(f"{name}: sequences nested too deep to read (corrupt or hostile file)") from None
        except BaseException as exc:  # noqa: BLE001 - any decoder failure (a Rust panic too) is this file's problem
            from voxpipe.errors import one_line

            detail = str(exc) if isinstance(exc, _BackendsFailed) else one_line(exc)
            raise PixelError(f"{name}: cannot decode{_syntax_name(ds)} pixel data ({detail})") from None


def _pixel_array(ds):
    """Try the syntax's safe backends in order; the first one that decodes wins."""
    plugins = SAFE_PLUGINS.get(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if not plugins:
        return ds.pixel_array
    errors = []
    for plugin in plugins:
        try:
            ds.pixel_array_options(decoding_plugin=plugin)
            return ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - try the next backend; all failing is reported together
            errors.append(exc)
    raise _BackendsFailed("; ".join(dict.fromkeys(_reason(e) for e in errors)))  # often one shared reason


class _BackendsFailed(Exception):
    """Every backend tried failed; the message holds their reasons."""


def _reason(exc: BaseException) -> str:
    from voxpipe.errors import one_line

    return one_line(exc).replace("RuntimeError: Unable to decode as exceptions were raised by all available plugins: ", "")


def _syntax_name(ds) -> str:
    try:
        return f" {ds.file_meta.TransferSyntaxUID.name}"
    except Exception:  # noqa: BLE001 - no data set, or no usable file meta
        return ""


def _check_inflation(path: Path, header: SliceHeader | None) -> None:
    """A deflated file may inflate only to its header (capped) plus the pixels it declares.

    pydicom inflates the whole data set in memory before decoding; a small file whose stream
    carries far more than its declared image (a decompression bomb) is refused first.
    """
    from voxpipe_plugins.io_dicom.headers import (
        check_deflated_size,
        header_cap,
        header_of,
    )

    if header is None:
        try:
            header = header_of(path)
        except Exception:  # noqa: BLE001 - pydicom's own reading reports the problem
            return
    if header.transfer_syntax != DEFLATED:
        return
    declared = 1
    for keyword in ("NumberOfFrames", "Rows", "Columns", "SamplesPerPixel"):
        declared *= max(int(header.get(keyword, 1) or 1), 1)
    declared = declared * max(int(header.get("BitsAllocated", 16) or 16), 8) // 8
    from voxpipe.limits import ResourceLimitError

    try:
        check_deflated_size(path, header_cap() + declared + 2**16)
    except ResourceLimitError as exc:
        raise PixelError(str(exc)) from None


def _decode_file(path: str, frames: list[int | None], header: SliceHeader | None = None) -> list[np.ndarray]:
    """Decode frames of one file with pydicom (runs in worker processes too)."""
    ds, array = decode_pixels(path, header)
    if (
        ds.get("PhotometricInterpretation", "") in ("MONOCHROME1", "MONOCHROME2")
        or array.ndim == 2
        or int(ds.get("SamplesPerPixel", 1)) == 1
    ):
        array = array if int(ds.get("NumberOfFrames", 1) or 1) > 1 else array[None]
    return [array[f if f is not None else 0] for f in frames]


def may_start_processes() -> bool:
    """Only the main process starts a decoding pool: pipeline and Dask workers may not (or should not) have children."""
    return multiprocessing.parent_process() is None and not multiprocessing.current_process().daemon


def _decode_into(out: np.ndarray, frames: list[Frame], which: list[int], workers: int) -> None:
    by_file: dict[Path, list[int]] = {}
    for k in which:
        by_file.setdefault(frames[k].path, []).append(k)
    jobs = [(str(path), [frames[k].index for k in ks], ks, frames[ks[0]].header) for path, ks in by_file.items()]
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers > 1 and len(jobs) >= 8 and may_start_processes():
        _decode_in_pool(out, jobs, workers)
    else:
        for path, indices, ks, header in jobs:
            _place(out, ks, _decode_file(path, indices, header), path)


def _decode_in_pool(out: np.ndarray, jobs: list, workers: int) -> None:
    from concurrent.futures import (
        ProcessPoolExecutor,  # ~10 ms of imports that uncompressed series never need
    )
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(
                _decode_file, [j[0] for j in jobs], [j[1] for j in jobs], [j[3] for j in jobs], chunksize=max(1, len(jobs) // (workers * 4))
            )
            for (path, _, ks, _), arrays in zip(jobs, results):
                _place(out, ks, arrays, path)
    except BrokenProcessPool:
        raise PixelError("a pixel decoder crashed on this series' compressed frames (a corrupt file?)") from None


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

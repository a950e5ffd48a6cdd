"""Read the few header fields series assembly needs, fast, from any DICOM file.

Hospitals' folders hold thousands of files; parsing each header fully with pydicom
dominates load time (about 0.5 ms a file). Assembly needs about thirty top-level
attributes, so :func:`read_header` walks the data set itself for the common encodings
(explicit and implicit VR little endian, including the encapsulated syntaxes), skipping
values it does not need (sequences included) and stopping at Pixel Data, whose file
offset it records so uncompressed pixels can later be read straight into place.

Anything unusual -- big endian, files without the ``DICM`` preamble, enhanced multi-frame
objects whose geometry lives in functional-group sequences, or any parse surprise -- falls
back to pydicom (:func:`read_header_pydicom`), which gives the same :class:`SliceHeader`.
Tests check the two agree on every file pydicom ships.

Deflated data sets are inflated only as far as Pixel Data, and at most
``DEFLATED_HEADER_CAP`` bytes: pydicom inflates the whole stream (pixels and any padding
a bomb carries) just to read a header, so discovery never hands it a deflated file.
Sequences nested deeper than ``MAX_NESTING`` are refused: no real object nests that deep,
and recursive readers (pydicom's included) fail on such files in ways that hide the cause.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxpipe.limits import ResourceLimitError

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
NATIVE_SYNTAXES = {EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE, DEFLATED}
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD

# tag -> (keyword, kind). Kinds: str, strs (backslash list), float(s), int(s), us (binary uint16).
WANTED: dict[int, tuple[str, str]] = {
    0x00080008: ("ImageType", "strs"),
    0x00080016: ("SOPClassUID", "str"),
    0x00080018: ("SOPInstanceUID", "str"),
    0x00080060: ("Modality", "str"),
    0x0008103E: ("SeriesDescription", "str"),
    0x00180050: ("SliceThickness", "float"),
    0x00180086: ("EchoNumbers", "int"),
    0x00181120: ("GantryDetectorTilt", "float"),
    0x00181164: ("ImagerPixelSpacing", "floats"),
    0x0020000D: ("StudyInstanceUID", "str"),
    0x0020000E: ("SeriesInstanceUID", "str"),
    0x00200011: ("SeriesNumber", "int"),
    0x00200012: ("AcquisitionNumber", "int"),
    0x00200013: ("InstanceNumber", "int"),
    0x00200032: ("ImagePositionPatient", "floats"),
    0x00200037: ("ImageOrientationPatient", "floats"),
    0x00200052: ("FrameOfReferenceUID", "str"),
    0x00200100: ("TemporalPositionIdentifier", "int"),
    0x00280002: ("SamplesPerPixel", "us"),
    0x00280004: ("PhotometricInterpretation", "str"),
    0x00280006: ("PlanarConfiguration", "us"),
    0x00280008: ("NumberOfFrames", "int"),
    0x00280010: ("Rows", "us"),
    0x00280011: ("Columns", "us"),
    0x00280030: ("PixelSpacing", "floats"),
    0x00280100: ("BitsAllocated", "us"),
    0x00280101: ("BitsStored", "us"),
    0x00280103: ("PixelRepresentation", "us"),
    0x00281052: ("RescaleIntercept", "float"),
    0x00281053: ("RescaleSlope", "float"),
    0x3004000C: ("GridFrameOffsetVector", "floats"),
    0x3004000E: ("DoseGridScaling", "float"),
}
KEYWORDS = {keyword: tag for tag, (keyword, _) in WANTED.items()}
FUNCTIONAL_GROUPS = {0x52009229, 0x52009230}  # shared / per-frame functional groups: enhanced objects


MAX_NESTING = 32  # sequence depth; real objects nest well under 10 levels
DEFLATED_HEADER_CAP = 16 * 2**20  # inflated bytes before Pixel Data that discovery accepts


class NotDicom(Exception):
    """The file is not a DICOM file (no preamble and no plausible data set)."""


class Unsupported(Exception):
    """The fast reader declines this file; use pydicom."""


class DeflatedDataSet(Unsupported):
    """The data set is deflated: read it through :func:`read_header_deflated`, never whole."""


class NestingTooDeep(Exception):
    """Sequences nested deeper than MAX_NESTING: a corrupt or hostile file."""

    reason = f"sequences nested deeper than {MAX_NESTING} levels (corrupt or hostile file)"

    def __init__(self, name: str = "") -> None:
        super().__init__(f"{name}: {self.reason}" if name else self.reason)


@dataclass
class SliceHeader:
    """What assembly needs to know about one DICOM file (never any patient attribute)."""

    path: Path
    transfer_syntax: str
    sop_class: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    pixel_offset: int | None = None  # file offset of native Pixel Data's value, if known
    pixel_length: int | None = None  # its length in bytes (None: encapsulated/undefined)
    enhanced: bool = False  # geometry lives in functional groups: read with pydicom

    def get(self, keyword: str, default: Any = None) -> Any:
        value = self.values.get(keyword)
        return default if value is None else value

    @property
    def has_pixels(self) -> bool:
        return self.pixel_offset is not None or self.values.get("_has_pixels", False)

    @property
    def compressed(self) -> bool:
        return self.transfer_syntax not in NATIVE_SYNTAXES


def _decode(raw: bytes, kind: str, little: bool = True) -> Any:
    if kind == "us":
        if len(raw) < 2:
            return None
        return struct.unpack("<H" if little else ">H", raw[:2])[0]
    text = raw.decode("latin-1").strip("\x00 ").strip()
    if kind == "str":
        return text
    parts = [p.strip() for p in text.split("\\")]
    if kind == "strs":
        return tuple(parts)
    try:
        if kind == "float":
            return float(parts[0]) if parts[0] else None
        if kind == "floats":
            return tuple(float(p) for p in parts if p)
        if kind == "int":
            return int(float(parts[0])) if parts[0] else None
    except ValueError:
        return None
    raise AssertionError(kind)


_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class _Buffer:
    """A file's bytes from the start, extended on demand (headers are read once, front to back)."""

    CHUNK = 1 << 16

    def __init__(self, handle) -> None:
        self.handle = handle
        self.data = handle.read(self.CHUNK)

    def need(self, end: int) -> bytes:
        """Make sure ``data`` covers offsets below ``end``; raise if the file is shorter."""
        while end > len(self.data):
            self.handle.seek(len(self.data))
            more = self.handle.read(max(self.CHUNK, end - len(self.data)))
            if not more:
                raise Unsupported("truncated")
            self.data += more
        return self.data


def _value_start(data: bytes, buf: _Buffer, pos: int, explicit: bool) -> tuple[int, int]:
    """(offset of the value, its length) for the element whose tag starts at ``pos``."""
    if not explicit or data[pos : pos + 2] == b"\xfe\xff":  # implicit VR, or item/delimiter tags
        return pos + 8, _U32.unpack_from(data, pos + 4)[0]
    vr = data[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        data = buf.need(pos + 12)
        return pos + 12, _U32.unpack_from(data, pos + 8)[0]
    if not vr.isalpha():
        raise Unsupported("bad VR")
    return pos + 8, _U16.unpack_from(data, pos + 6)[0]


def _skip_undefined(buf: _Buffer, pos: int, explicit: bool, depth: int = 0) -> int:
    """Offset just past a sequence or item of undefined length whose value starts at ``pos``."""
    if depth > 2 * MAX_NESTING:  # a sequence and its item are one level each
        raise NestingTooDeep()
    while True:
        data = buf.need(pos + 12)
        group, element = _TAG.unpack_from(data, pos)
        tag = (group << 16) | element
        start, length = _value_start(data, buf, pos, explicit)
        if tag in (_SEQ_END, _ITEM_END):
            return start
        pos = _skip_undefined(buf, start, explicit, depth + 1) if length == _UNDEFINED else start + length


def read_header(path: Path) -> SliceHeader:
    """Fast header read; raises :class:`Unsupported` when pydicom should read the file instead."""
    with open(path, "rb") as handle:
        buf = _Buffer(handle)
        pos, syntax, sop_class = _read_meta(buf)
        if syntax == DEFLATED:
            raise DeflatedDataSet("deflated data set")
        if syntax == EXPLICIT_BE or not syntax:
            raise Unsupported(f"transfer syntax {syntax or 'missing'}")
        header = SliceHeader(path=Path(path), transfer_syntax=syntax, sop_class=sop_class)
        _read_data_set(buf, pos, handle.seek(0, 2), header, syntax != IMPLICIT_LE)
        return header


def _read_meta(buf: _Buffer) -> tuple[int, str, str]:
    """(offset after the file meta group, transfer syntax, SOP class) of a Part 10 file."""
    data = buf.data
    if len(data) < 132 or data[128:132] != b"DICM":
        raise Unsupported("no DICM preamble")
    pos, syntax, sop_class = 132, "", ""
    while True:  # file meta group: always explicit VR little endian
        data = buf.need(pos + 12)
        if _U16.unpack_from(data, pos)[0] != 0x0002:
            return pos, syntax, sop_class
        element = _U16.unpack_from(data, pos + 2)[0]
        start, length = _value_start(data, buf, pos, True)
        data = buf.need(start + length)
        if element == 0x0010:
            syntax = _decode(data[start : start + length], "str")
        elif element == 0x0002:
            sop_class = _decode(data[start : start + length], "str")
        pos = start + length


def _read_data_set(buf: _Buffer, pos: int, size: int, header: SliceHeader, explicit: bool) -> bool:
    """Fill ``header`` from the data set starting at ``pos``; whether a Pixel Data tag was reached."""
    values = header.values
    wanted_get = WANTED.get
    data = buf.data
    found = False
    while pos + 8 <= size:
        if pos + 12 > len(data):  # rarely: the first 64 KiB usually hold the whole header
            data = buf.need(min(pos + 12, size))
        group, element = _TAG.unpack_from(data, pos)
        tag = (group << 16) | element
        start, length = _value_start(data, buf, pos, explicit)
        if tag >= 0x7FE00008:
            if tag in (PIXEL_DATA, 0x7FE00008, 0x7FE00009):
                values["_pixel_tag"] = tag  # float (7FE0,0008) and double (7FE0,0009) pixel data differ
                if length == _UNDEFINED:
                    values["_has_pixels"] = True
                else:
                    header.pixel_offset, header.pixel_length = start, length
                found = True
            break
        if tag in FUNCTIONAL_GROUPS:
            header.enhanced = True
        if length == _UNDEFINED:
            pos = _skip_undefined(buf, start, explicit)
            data = buf.data
            continue
        wanted = wanted_get(tag)
        if wanted is not None:
            keyword, kind = wanted
            data = buf.need(start + length)
            if explicit and kind == "us" and data[pos + 4 : pos + 6] not in (b"US", b"SS"):
                raise Unsupported(f"{keyword} has an unexpected VR")
            value = _decode(data[start : start + length], kind)
            if value is not None and value != "":
                values[keyword] = value
        pos = start + length
    header.sop_class = values.get("SOPClassUID") or header.sop_class
    return found


def read_header_pydicom(path: Path) -> SliceHeader:
    """The same header through pydicom: slower, but reads every encoding pydicom can."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if _syntax_of(path) == DEFLATED:
        return read_header_deflated(path)
    try:
        try:
            with open(path, "rb") as handle:
                ds = pydicom.dcmread(handle, stop_before_pixels=True)
                pixel_start = handle.tell()
        except InvalidDicomError:
            ds, pixel_start = _without_preamble(path)
    except RecursionError:
        raise NestingTooDeep(Path(path).name) from None
    _check_nesting(ds, Path(path).name)
    syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "") if hasattr(ds, "file_meta") else ""
    header = _header_from(ds, Path(path), syntax or IMPLICIT_LE)
    header.values["_has_pixels"] = _has_pixel_data(path, pixel_start)
    for tag in (0x7FE00008, 0x7FE00009):
        if header.values["_has_pixels"] and _has_pixel_data(path, pixel_start, tag):
            header.values["_pixel_tag"] = tag
    return header


def _header_from(ds: Any, path: Path, syntax: str) -> SliceHeader:
    header = SliceHeader(path=path, transfer_syntax=syntax)
    for tag, (keyword, kind) in WANTED.items():
        element = ds.get(tag)
        if element is None or element.value is None or element.value == "":
            continue
        header.values[keyword] = _from_pydicom(element.value, kind)
    meta = getattr(ds, "file_meta", None)
    header.sop_class = header.values.get("SOPClassUID", "") or str(getattr(meta, "MediaStorageSOPClassUID", "") or "")
    header.enhanced = any(tag in ds for tag in FUNCTIONAL_GROUPS)
    return header


def _check_nesting(ds: Any, name: str) -> None:
    """Refuse sequences nested deeper than MAX_NESTING (walked without recursion)."""
    stack = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        for element in current:
            if element.VR == "SQ":
                if depth + 1 > MAX_NESTING:
                    raise NestingTooDeep(name)
                stack.extend((item, depth + 1) for item in element.value)


def _syntax_of(path: Path) -> str:
    """The transfer syntax named in the file meta group ('' without a preamble or meta)."""
    try:
        with open(path, "rb") as handle:
            return _read_meta(_Buffer(handle))[1]
    except (Unsupported, struct.error, UnicodeDecodeError):
        return ""


class HeaderBomb(ResourceLimitError):
    """A deflated data set inflates to more than the header cap before reaching Pixel Data."""

    reason = "refused: deflated header inflates to more than the header cap (a decompression bomb?)"


class _Whole(_Buffer):
    """A buffer over bytes already in memory (an inflated prefix)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def need(self, end: int) -> bytes:
        if end > len(self.data):
            raise Unsupported("truncated")
        return self.data


def _inflate_prefix(handle, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` inflated bytes of a raw-deflate stream, and whether that is all of it."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pieces, total = [], 0
    while total < cap and not inflater.eof:
        data = inflater.unconsumed_tail or handle.read(1 << 20)
        if not data:
            break
        piece = inflater.decompress(data, cap - total)
        pieces.append(piece)
        total += len(piece)
    complete = inflater.eof or (not inflater.unconsumed_tail and not handle.read(1))
    prefix = b"".join(pieces)
    return prefix, complete


def header_cap() -> int:
    from voxpipe.limits import max_bytes

    return min(DEFLATED_HEADER_CAP, max_bytes())


def read_header_deflated(path: Path) -> SliceHeader:
    """Header of a deflated file from its inflated prefix: never more than :func:`header_cap` bytes inflated."""
    cap = header_cap()
    with open(path, "rb") as handle:
        pos, syntax, sop_class = _read_meta(_Buffer(handle))
        handle.seek(pos)
        prefix, complete = _inflate_prefix(handle, cap)
    header = SliceHeader(path=Path(path), transfer_syntax=syntax, sop_class=sop_class)
    try:
        found = _read_data_set(_Whole(prefix), 0, len(prefix), header, True)
    except (Unsupported, struct.error, UnicodeDecodeError, ValueError):
        if not complete:
            found = False
        else:
            header, found = _prefix_with_pydicom(prefix, Path(path), syntax)
    if not found and not complete:
        raise HeaderBomb(
            f"{Path(path).name}: deflated data set inflates to more than {cap / 2**20:.0f} MiB before "
            "Pixel Data (a decompression bomb?); refused"
        )
    header.pixel_offset = header.pixel_length = None  # offsets in the inflated stream are not file offsets
    header.values["_has_pixels"] = found
    return header


def _prefix_with_pydicom(prefix: bytes, path: Path, syntax: str) -> tuple[SliceHeader, bool]:
    """pydicom's reading of an inflated data set that the fast reader declined (stops at Pixel Data)."""
    from pydicom.filereader import read_dataset

    stream = io.BytesIO(prefix)
    try:
        ds = read_dataset(stream, False, True, stop_when=lambda tag, vr, length: tag >= 0x7FE00008)
    except RecursionError:
        raise NestingTooDeep(path.name) from None
    _check_nesting(ds, path.name)
    header = _header_from(ds, path, syntax)
    at = stream.tell()
    tags = {struct.pack("<HH", t >> 16, t & 0xFFFF): t for t in (PIXEL_DATA, 0x7FE00008, 0x7FE00009)}
    tag = tags.get(prefix[at : at + 4])
    if tag is not None:
        header.values["_pixel_tag"] = tag
    return header, tag is not None


def check_deflated_size(path: Path, limit: int) -> None:
    """Refuse a deflated file whose whole data set inflates past ``limit`` (counted in pieces, kept nowhere).

    pydicom inflates a deflated data set whole before decoding it; this runs first.
    """
    from voxpipe.limits import inflated_size

    with open(path, "rb") as handle:
        pos = _read_meta(_Buffer(handle))[0]
        handle.seek(pos)
        inflated_size(handle, limit, f"{Path(path).name}: deflated data set", raw_deflate=True)


def _without_preamble(path: Path):
    """Old files may lack the 128-byte preamble and ``DICM``; accept them only if they parse as an image object."""
    import pydicom

    try:
        with open(path, "rb") as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
            pixel_start = handle.tell()
        uid = ds.get("SOPClassUID")
        if uid is None or not str(uid).startswith("1.2.840.10008."):
            raise NotDicom("no DICOM preamble and no SOP class")
        return ds, pixel_start
    except (NotDicom, RecursionError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a forced parse of a foreign file raises
        raise NotDicom(f"not DICOM ({type(exc).__name__})") from None


def _from_pydicom(value: Any, kind: str) -> Any:
    if kind in ("str",):
        return str(value).strip()
    if kind == "strs":
        items = value if hasattr(value, "__iter__") and not isinstance(value, str) else [value]
        return tuple(str(v).strip() for v in items)
    if kind in ("float",):
        return float(value[0] if isinstance(value, (list, tuple)) else value)
    if kind == "floats":
        return tuple(float(v) for v in value) if hasattr(value, "__iter__") and not isinstance(value, str) else (float(value),)
    if kind in ("int", "us"):
        return int(value[0] if isinstance(value, (list, tuple)) else value)
    raise AssertionError(kind)


def _has_pixel_data(path: Path, start: int, tag: int | None = None) -> bool:
    """After ``stop_before_pixels`` the file position is at a pixel data tag, if there is one."""
    with open(path, "rb") as handle:
        handle.seek(start)
        found = handle.read(4)
    tags = (PIXEL_DATA, 0x7FE00008, 0x7FE00009) if tag is None else (tag,)
    encodings = {struct.pack("<HH", t >> 16, t & 0xFFFF) for t in tags} | {struct.pack(">HH", t >> 16, t & 0xFFFF) for t in tags}
    return found in encodings


def header_of(path: Path) -> SliceHeader:
    """Fast path first, pydicom when the fast path declines (deflated files: their bounded prefix)."""
    try:
        return read_header(path)
    except DeflatedDataSet:
        return read_header_deflated(path)
    except (Unsupported, struct.error, UnicodeDecodeError, ValueError):
        return read_header_pydicom(path)


def orientation_key(iop: tuple[float, ...] | None, decimals: int = 4) -> tuple[float, ...] | None:
    return None if iop is None else tuple(np.round(np.asarray(iop, float), decimals) + 0.0)

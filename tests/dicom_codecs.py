"""Small DICOM series in every compressed transfer syntax this environment can write, for tests.

pydicom encodes RLE, JPEG-LS and JPEG 2000 itself (``ds.compress``); JPEG lossless comes from
GDCM, JPEG baseline from Pillow (encapsulated here). No installed library writes 12-bit JPEG
(GDCM's output does not decode), so the JPEG extended series reuses the codestream of pydicom's
``JPGExtended.dcm``. Each coded series has an uncompressed *twin*, written from pydicom's own
decoding of every coded file, so "the uncompressed series' load" is defined for lossy syntaxes too.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid as U

from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series

CODECS: dict[str, str] = {
    "rle": U.RLELossless,
    "jpeg-baseline": U.JPEGBaseline8Bit,
    "jpeg-extended": U.JPEGExtended12Bit,
    "jpeg-lossless": U.JPEGLossless,
    "jpeg-lossless-sv1": U.JPEGLosslessSV1,
    "jpeg-ls": U.JPEGLSLossless,
    "jpeg-ls-near": U.JPEGLSNearLossless,
    "j2k": U.JPEG2000Lossless,
    "j2k-lossy": U.JPEG2000,
    "deflate": U.DeflatedExplicitVRLittleEndian,
}
LOSSLESS = {"rle", "jpeg-lossless", "jpeg-lossless-sv1", "jpeg-ls", "j2k", "deflate"}


def write_coded_series(folder: Path, codec: str, slices: int = 8, size: int = 64, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    """A series of ``slices`` ``size`` x ``size`` frames in ``codec``; returns its paths and the source volume (HU)."""
    warnings.simplefilter("ignore")
    volume = ct_like_volume((slices, size, size), seed=seed)
    paths = write_series(folder, volume, SeriesSpec(seed=seed, series_description=f"coded {codec}"))
    for path in paths:
        ds = pydicom.dcmread(path)
        _encode(ds, codec, path)
    return paths, volume


def _encode(ds, codec: str, path: Path) -> None:
    syntax = CODECS[codec]
    if codec in ("rle", "jpeg-ls", "j2k"):
        ds.compress(syntax)
    elif codec == "jpeg-ls-near":
        ds.compress(syntax, jls_error=3)
    elif codec == "j2k-lossy":
        ds.compress(syntax, j2k_cr=[20])
    elif codec == "jpeg-baseline":
        _pillow_jpeg(ds)
    elif codec == "jpeg-extended":
        _borrowed_extended(ds)
    elif codec in ("jpeg-lossless", "jpeg-lossless-sv1"):
        ds.save_as(path, enforce_file_format=True)
        _gdcm_transcode(path, "JPEGLosslessProcess14" if codec == "jpeg-lossless" else "JPEGLosslessProcess14_1")
        return
    elif codec == "deflate":
        ds.file_meta.TransferSyntaxUID = syntax
        pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=True, force_encoding=True)
        return
    ds.save_as(path, enforce_file_format=True)


def _pillow_jpeg(ds) -> None:
    """8-bit baseline JPEG: stored = (HU + 1024) / 8, encoded by Pillow, encapsulated as one fragment."""
    from PIL import Image
    from pydicom.encaps import encapsulate

    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    stored = np.clip(np.rint((hu + 1024) / 8), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(stored, "L").save(buffer, "JPEG", quality=90)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.RescaleSlope, ds.RescaleIntercept = "8", "-1024"
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.file_meta.TransferSyntaxUID = U.JPEGBaseline8Bit


def _borrowed_extended(ds) -> None:
    from pydicom.data import get_testdata_file

    source = pydicom.dcmread(get_testdata_file("JPGExtended.dcm", download=False))
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData"):
        setattr(ds, keyword, getattr(source, keyword))
    ds["PixelData"].VR = "OB"
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.file_meta.TransferSyntaxUID = U.JPEGExtended12Bit


def _gdcm_transcode(path: Path, syntax: str) -> None:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    assert reader.Read(), "GDCM cannot read the uncompressed slice"
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change(), f"GDCM cannot encode {syntax}"
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write(), "GDCM cannot write the coded slice"


def write_decoded_twin(paths: list[Path], folder: Path) -> list[Path]:
    """Each coded file as pydicom decodes it, stored uncompressed (explicit VR little endian)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        else:
            ds.file_meta.TransferSyntaxUID = U.ExplicitVRLittleEndian
        target = folder / path.name
        pydicom.dcmwrite(target, ds, implicit_vr=False, little_endian=True, force_encoding=True)
        out.append(target)
    return out

"""Read a DICOM file for de-identification within the resource limits.

The whole file is parsed (pixels are copied as bytes, never decoded), so the limits are:
the file's size, and for deflated transfer syntaxes the size the data set inflates to,
counted in 1 MiB pieces before pydicom inflates it (a few kilobytes of deflate can hold
gigabytes). Warnings pydicom raises about odd values quote those values; they are counted
by the caller, never shown.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from voxpipe.limits import ResourceLimitError, inflated_size

DEFLATED = "1.2.840.10008.1.2.1.99"
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


class NotDicomFile(Exception):
    """Not a DICOM file (no DICM preamble and no recognisable meta)."""


def read_dicom(path: Path, cap: int):
    """The file's data set, or :class:`NotDicomFile`, or a :class:`ResourceLimitError` above ``cap`` bytes."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    size = path.stat().st_size
    if size > cap:
        raise ResourceLimitError(f"{size / 2**30:.3g} GiB file is above the {cap / 2**30:.3g} GiB cap; raise max_gib if this is intended")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with open(path, "rb") as handle:
                meta = pydicom.filereader.read_preamble(handle, False) is not None and pydicom.filereader._read_file_meta_info(handle)
                if str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
                    inflated_size(handle, cap, "deflated data set", raw_deflate=True)
        except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
            if isinstance(exc, ResourceLimitError):
                raise
            raise NotDicomFile(type(exc).__name__) from None
        try:
            return pydicom.dcmread(path)
        except RecursionError:
            raise ResourceLimitError("sequences nested too deeply to parse; refused") from None

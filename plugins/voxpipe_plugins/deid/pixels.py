"""Clean Pixel Data: blank the rectangles where a device burns in text.

Only the user knows where a given ultrasound or secondary-capture device writes names
and dates, so regions are given in the config (rows and columns, end exclusive) and the
same regions apply to every frame. The result is stored uncompressed (explicit VR little
endian) so no lossy re-encoding happens behind the user's back.
"""

from __future__ import annotations

from voxpipe.limits import check_declared, max_bytes


def blank_regions(ds, regions) -> None:
    """Set every pixel inside ``regions`` to the lowest stored value, in every frame and sample."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    check_declared("pixel data", (frames, rows, cols, samples), int(ds.get("BitsAllocated", 16) or 16) / 8, max_bytes())
    array = ds.pixel_array.copy()
    framed = array if frames > 1 else array[None]
    for r0, c0, r1, c1 in regions:
        framed[:, max(0, r0) : min(rows, r1), max(0, c0) : min(cols, c1), ...] = framed.min() if framed.size else 0
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if samples == 3 and photometric.startswith("YBR"):
        photometric = "RGB"  # pydicom decodes YBR to RGB
    ds.set_pixel_data(framed if frames > 1 else framed[0], photometric, int(ds.get("BitsStored", array.dtype.itemsize * 8)))

"""DICOM series -> NIfTI file one slice at a time, without holding the volume (``voxpipe convert``).

Why: going through a whole in-memory volume touches the data several times beyond the
read (a min/max pass to settle int16, the intercept add, the copy into the page cache) and
needs fresh memory for all of it; on a busy or virtualised host the first-touch page
faults of 150 MB cost as much as the rest of the conversion, and made ``convert``'s
timings swing from 0.4 to 2 s. Here each slice is read into one reused buffer, converted
while it is in cache and written out: ~1 slice of memory, and the same voxels, affine and
header as :func:`load_volume` + :func:`write_nifti` (tests compare the two files).

Only series that need nothing across slices stream: single-frame, uncompressed,
little-endian files of one stored type, on a regular grid (no resampling). Anything else
-- or a slice whose values overflow the int16 that the headers promised -- raises
:class:`NotStreamable` and the caller takes the in-memory path.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from voxpipe.atomic import atomic_path
from voxpipe_plugins.io_dicom.frames import Frame, frames_of
from voxpipe_plugins.io_dicom.loader import DicomOptions, frame_shape, stack_layout
from voxpipe_plugins.io_dicom.pixels import check_frames, fix_bits, in_place_readable, read_in_place
from voxpipe_plugins.io_dicom.rescale import Rescale, plan_rescale
from voxpipe_plugins.io_dicom.series import Series
from voxpipe_plugins.io_nifti.header import write_blocks


class NotStreamable(Exception):
    """This series needs the in-memory path; the message says why (for debugging, not users)."""


def stream_to_nifti(series: Series, target: Path, options: DicomOptions, gzip_level: int = 1) -> None:
    """Write ``series`` to ``target`` (.nii/.nii.gz) slice by slice, atomically.

    Raises :class:`NotStreamable` (nothing written) when the series must be loaded whole,
    and the loader's own errors (SeriesError, PixelError) for broken series.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warnings quote raw header values
        frames = frames_of(series.headers, series.frames)
    if any(f.position is None or f.orientation is None for f in frames):
        raise NotStreamable("no patient geometry")
    ordered, geometry = stack_layout(frames, options)
    if geometry.problems:
        raise NotStreamable("irregular grid: resampled or refused by the loader")
    shape = frame_shape(ordered[0])
    stored_type = check_frames(ordered, shape, int(options.max_gib * 2**30))
    if not all(in_place_readable(f, stored_type) for f in ordered):
        raise NotStreamable("compressed, big-endian or multi-frame data")
    plan = plan_rescale(ordered, stored_type, options.dtype)
    rows, cols = shape
    with atomic_path(target) as tmp:
        write_blocks(
            tmp,
            (cols, rows, len(ordered)),
            plan.target,
            geometry.affine(),
            _converted_slices(ordered, shape, stored_type, plan),
            gzip_level=gzip_level,
        )


def _converted_slices(ordered: list[Frame], shape: tuple[int, int], stored_type: np.dtype, plan: Rescale) -> Iterator[np.ndarray]:
    """Each slice's real-world values, in output order, through one reused buffer."""
    buffer = np.empty((1, *shape), dtype=stored_type.newbyteorder("="))
    check_range = not plan.settled()
    first = ordered[0].header
    for k, frame in enumerate(ordered):
        read_in_place(frame.header, buffer[0])
        fix_bits(buffer, first)
        if check_range and not plan.fits(int(buffer.min()), int(buffer.max())):
            raise NotStreamable(f"slice {k} does not fit {plan.target}")
        yield plan.apply(buffer, k)

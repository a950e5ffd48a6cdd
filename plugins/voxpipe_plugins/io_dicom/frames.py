"""Frames: the unit of assembly. A classic series has one frame per file; multi-frame
objects (enhanced CT/MR/PET, RT dose) hold many frames in one file with per-frame
geometry and rescale. Both become :class:`Frame` records so one assembly path serves all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxpipe_plugins.io_dicom.headers import SliceHeader


@dataclass
class Frame:
    header: SliceHeader
    index: int | None  # frame number inside a multi-frame file; None for single-frame files
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slope: float
    intercept: float
    stack: tuple = ()  # what separates stacks inside one multi-frame file

    @property
    def path(self) -> Path:
        return self.header.path


def _spacing(header: SliceHeader) -> tuple[float, float] | None:
    spacing = header.get("PixelSpacing") or header.get("ImagerPixelSpacing")
    return (float(spacing[0]), float(spacing[1])) if spacing and len(spacing) >= 2 else None


def single_frames(headers: list[SliceHeader]) -> list[Frame]:
    """One frame per classic single-frame file."""
    return [
        Frame(
            h,
            None,
            h.get("ImagePositionPatient"),
            h.get("ImageOrientationPatient"),
            _spacing(h),
            _slope(h),
            float(h.get("RescaleIntercept", 0.0)),
        )
        for h in headers
    ]


def _slope(header: SliceHeader) -> float:
    """RescaleSlope, or DoseGridScaling for RT dose (which has no rescale)."""
    return float(header.get("DoseGridScaling") or header.get("RescaleSlope", 1.0))


def legacy_multiframe(header: SliceHeader) -> list[Frame]:
    """Multi-frame objects without functional groups: RT dose (GridFrameOffsetVector) or a plain stack."""
    count = int(header.get("NumberOfFrames", 1) or 1)
    iop = header.get("ImageOrientationPatient")
    ipp = header.get("ImagePositionPatient")
    slope, intercept = _slope(header), float(header.get("RescaleIntercept", 0.0))
    offsets = header.get("GridFrameOffsetVector")
    frames = []
    if iop is not None and ipp is not None and offsets and len(offsets) == count:
        from voxpipe_plugins.io_dicom.geometry import orientation_vectors

        normal = orientation_vectors(iop)[2]
        # Offsets run along the normal. Relative vectors start at 0; absolute ones (axial
        # only) start at the first frame's z, which is then ImagePositionPatient's z.
        for f in range(count):
            position = tuple(np.asarray(ipp, float) + normal * (offsets[f] - offsets[0]))
            frames.append(Frame(header, f, position, iop, _spacing(header), slope, intercept))
        return frames
    return [Frame(header, f, None, iop, _spacing(header), slope, intercept) for f in range(count)]


def enhanced_frames(header: SliceHeader) -> list[Frame]:
    """Frames of an enhanced multi-frame object from its shared and per-frame functional groups."""
    import pydicom

    ds = pydicom.dcmread(header.path, stop_before_pixels=True)
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    count = int(ds.get("NumberOfFrames", len(per_frame)) or len(per_frame))
    frames = []
    for f in range(count):
        item = per_frame[f] if f < len(per_frame) else None
        position = _group_value(item, shared, "PlanePositionSequence", "ImagePositionPatient")
        orientation = _group_value(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = _group_value(item, shared, "PixelMeasuresSequence", "PixelSpacing")
        slope = _group_value(item, shared, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _group_value(item, shared, "PixelValueTransformationSequence", "RescaleIntercept")
        stack = _group_value(item, shared, "FrameContentSequence", "StackID")
        temporal = _group_value(item, shared, "FrameContentSequence", "TemporalPositionIndex")
        frames.append(
            Frame(
                header,
                f,
                tuple(float(v) for v in position) if position is not None else None,
                tuple(float(v) for v in orientation) if orientation is not None else None,
                (float(spacing[0]), float(spacing[1])) if spacing is not None else _spacing(header),
                float(slope) if slope is not None else float(header.get("RescaleSlope", 1.0)),
                float(intercept) if intercept is not None else float(header.get("RescaleIntercept", 0.0)),
                stack=(str(stack) if stack is not None else None, int(temporal) if temporal is not None else None),
            )
        )
    return frames


def _group_value(item: Any, shared: Any, sequence: str, keyword: str) -> Any:
    for source in (item, shared):
        if source is None:
            continue
        group = source.get(sequence)
        if group:
            value = group[0].get(keyword)
            if value is not None and value != "":
                return value
    return None


def frames_of(headers: list[SliceHeader], selected: list[int] | None = None) -> list[Frame]:
    """Frames of a series, whatever its encoding; ``selected`` picks frames of a multi-frame file."""
    if len(headers) == 1 and (headers[0].enhanced or int(headers[0].get("NumberOfFrames", 1) or 1) > 1):
        header = headers[0]
        frames = enhanced_frames(header) if header.enhanced else legacy_multiframe(header)
        return [frames[i] for i in selected] if selected is not None else frames
    return single_frames(headers)

"""Group DICOM files into series, split mixed series, and skip what is not an image volume.

One *series* (one case) is a set of frames with one geometry and one meaning. Files are
grouped by SeriesInstanceUID and then split where a series mixes orientations, echoes,
temporal positions, image types or matrix sizes -- each part is its own case. Files that
are not images (DICOMDIR, structured reports, RT structures, non-DICOM files) are skipped,
localizers/scouts and duplicate instances dropped, and every skip is counted with its
reason; nothing identifying is recorded.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxpipe.limits import ResourceLimitError
from voxpipe_plugins.io_dicom.geometry import orientation_label, orientation_vectors
from voxpipe_plugins.io_dicom.headers import (
    DICOMDIR_CLASS,
    HeaderBomb,
    NestingTooDeep,
    NotDicom,
    SliceHeader,
    header_of,
    orientation_key,
)

LOCALIZER_TYPES = {"LOCALIZER", "SCOUT", "SURVEY", "TOPOGRAM", "SCANOGRAM"}


@dataclass
class Series:
    """The frames of one case, with what was dropped from it and why."""

    series_uid: str
    headers: list[SliceHeader]
    split: tuple = ()  # what distinguishes this part of a mixed series
    dropped: Counter = field(default_factory=Counter)
    frames: list[int] | None = None  # multi-frame objects: the frames of this stack

    @property
    def first(self) -> SliceHeader:
        return self.headers[0]

    @property
    def modality(self) -> str:
        return self.first.get("Modality", "")

    @property
    def description(self) -> str:
        return self.first.get("SeriesDescription", "")

    @property
    def slice_count(self) -> int:
        if self.frames is not None:
            return len(self.frames)
        if len(self.headers) == 1:
            return int(self.first.get("NumberOfFrames", 1) or 1)
        return len(self.headers)

    @property
    def orientation(self) -> str:
        iop = self.first.get("ImageOrientationPatient")
        if iop is None or len(iop) != 6:
            return "none"
        try:
            return orientation_label(orientation_vectors(iop)[2])
        except ValueError:
            return "invalid"

    @property
    def identity(self) -> str:
        """Stable, never shown: hashed into the case id."""
        return "dicom:" + self.series_uid + ("|" + repr(self.split) if self.split else "")


@dataclass
class Selection:
    """Which series a config wants: every given rule must match."""

    modalities: tuple[str, ...] = ()
    description: str | None = None
    min_slices: int = 1
    orientations: tuple[str, ...] = ()

    def reason_to_skip(self, series: Series) -> str | None:
        if self.modalities and series.modality.upper() not in {m.upper() for m in self.modalities}:
            return f"not selected: modality {series.modality or 'missing'}"
        if self.description and not re.search(self.description, series.description or ""):
            return "not selected: series description does not match"
        if series.slice_count < self.min_slices:
            return f"not selected: fewer than {self.min_slices} slices"
        if self.orientations and series.orientation not in self.orientations:
            return f"not selected: {series.orientation} orientation"
        return None


def read_headers(paths: Iterable[Path], skipped: Counter) -> list[SliceHeader]:
    """Headers of the image files among ``paths``; everything else is counted in ``skipped``."""
    headers = []
    for path in paths:
        try:
            header = header_of(path)
        except NotDicom:
            skipped["not DICOM"] += 1
            continue
        except PermissionError:
            skipped["unreadable (permission denied)"] += 1
            continue
        except (NestingTooDeep, HeaderBomb) as exc:
            skipped[exc.reason] += 1
            continue
        except ResourceLimitError:
            skipped["refused: inflates above the size cap (VOXPIPE_MAX_GIB)"] += 1
            continue
        except Exception:  # noqa: BLE001 - a corrupt header must not stop discovery
            skipped["unreadable DICOM header"] += 1
            continue
        if header.sop_class == DICOMDIR_CLASS or path.name.upper() == "DICOMDIR":
            skipped["DICOMDIR (index file)"] += 1
        elif not header.has_pixels:
            skipped["no pixel data (not an image)"] += 1
        elif not header.get("SeriesInstanceUID"):
            skipped["no SeriesInstanceUID"] += 1
        else:
            headers.append(header)
    return headers


def group_series(headers: list[SliceHeader], skipped: Counter | None = None) -> list[Series]:
    """Group by SeriesInstanceUID, drop localizers and duplicates, split mixed series.

    Drops within a series that still yields a case are recorded on that case; drops from a
    series that yields nothing (localizers only) are counted in ``skipped``.
    """
    by_uid: dict[str, list[SliceHeader]] = defaultdict(list)
    for header in headers:
        by_uid[header.get("SeriesInstanceUID")].append(header)
    result: list[Series] = []
    for uid in sorted(by_uid):
        dropped: Counter = Counter()
        members = []
        seen_sop: set[str] = set()
        for header in sorted(by_uid[uid], key=lambda h: str(h.path)):
            sop = header.get("SOPInstanceUID")
            if sop and sop in seen_sop:
                dropped["duplicate instance"] += 1
                continue
            seen_sop.add(sop)
            if LOCALIZER_TYPES & {t.upper() for t in header.get("ImageType", ())}:
                dropped["localizer or scout image"] += 1
                continue
            members.append(header)
        if not members:
            if skipped is not None:
                skipped.update(dropped)
            continue
        result.extend(_split(uid, members, dropped))
    return result


def _split_key(header: SliceHeader) -> tuple:
    geometry = header.get("ImagePositionPatient") is not None and header.get("ImageOrientationPatient") is not None
    return (
        orientation_key(header.get("ImageOrientationPatient")),
        header.get("EchoNumbers"),
        header.get("TemporalPositionIdentifier"),
        tuple(t.upper() for t in header.get("ImageType", ())),
        (header.get("Rows"), header.get("Columns")),
        geometry,
    )


def _split(uid: str, members: list[SliceHeader], dropped: Counter) -> list[Series]:
    parts: dict[tuple, list[SliceHeader]] = defaultdict(list)
    for header in members:
        parts[_split_key(header)].append(header)
    keys = sorted(parts, key=lambda k: (-len(parts[k]), repr(k)))
    out: list[Series] = []
    for key in keys:
        group = parts[key]
        if not key[-1] or any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in group) or any(h.enhanced for h in group):
            # 2D images (no geometry) and multi-frame objects: one case per file.
            for header in group:
                out.append(
                    Series(uid, [header], split=(key, str(header.get("SOPInstanceUID"))) if len(members) > 1 else (), dropped=dropped)
                )
            continue
        for sub_key, sub in _split_repeated_positions(group):
            split = (key, sub_key) if len(parts) > 1 or sub_key is not None else ()
            out.append(Series(uid, sub, split=split if len(keys) > 1 or sub_key is not None else (), dropped=dropped))
    return out


def _split_repeated_positions(group: list[SliceHeader]) -> list[tuple]:
    """Slices at one position with different AcquisitionNumbers are separate volumes."""
    positions = Counter(tuple(np.round(h.get("ImagePositionPatient"), 3)) for h in group)
    if max(positions.values()) == 1:
        return [(None, group)]
    by_acquisition: dict = defaultdict(list)
    for header in group:
        by_acquisition[header.get("AcquisitionNumber")].append(header)
    if len(by_acquisition) > 1:
        return [(("acquisition", k), v) for k, v in sorted(by_acquisition.items(), key=lambda kv: repr(kv[0]))]
    return [(None, group)]  # left to assembly, which refuses repeated positions clearly

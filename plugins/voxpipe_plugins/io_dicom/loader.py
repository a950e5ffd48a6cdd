"""`load.dicom`: discover series under an input path and assemble each into a MetaTensor."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxpipe.cases import CaseSource, Discovery, iter_files
from voxpipe.stage import record
from voxpipe_plugins.io_dicom.frames import Frame, frames_of
from voxpipe_plugins.io_dicom.geometry import StackGeometry, orientation_label, stack_geometry
from voxpipe_plugins.io_dicom.headers import header_of
from voxpipe_plugins.io_dicom.pixels import PixelError, fix_bits, read_frames
from voxpipe_plugins.io_dicom.rescale import to_real_world
from voxpipe_plugins.io_dicom.series import Selection, Series, group_series, read_headers

ORIENTATION_TOLERANCE = 1e-4


class SeriesError(ValueError):
    """A series that cannot be assembled as it is; the message says what and what to do."""


@dataclass
class DicomOptions:
    """How series are chosen and assembled (mirrors the `load.dicom` parameters)."""

    dtype: str = "auto"
    irregular: str = "refuse"
    spacing_tolerance: float = 0.05
    max_gib: float = 16.0
    selection: Selection = field(default_factory=Selection)
    workers: int = 0


@dataclass
class Volume:
    """An assembled series: values in (column, row, slice) order and where they lie."""

    array: np.ndarray  # channel-first: (1, columns, rows, slices) or (C, columns, rows) for 2D
    affine: np.ndarray  # RAS
    meta: dict
    warnings: list[str]
    files: list[Path]  # source files in slice order (for writers that reference the series)
    frame_order: list[int] | None = None  # multi-frame files: the stored frame index of each output slice


def discover_series(root: Path | list[Path], selection: Selection | None = None, skipped: Counter | None = None) -> list[Series]:
    """Every selected series under ``root`` (a folder, a file, or a list of files).

    Reasons for everything passed over are counted in ``skipped``.
    """
    skipped = skipped if skipped is not None else Counter()
    paths = root if isinstance(root, list) else iter_files(Path(root))
    headers = read_headers(paths, skipped)
    series = []
    for candidate in group_series(headers, skipped):
        for part in _split_multiframe(candidate):
            reason = (selection or Selection()).reason_to_skip(part)
            if reason:
                skipped[reason] += 1
            else:
                series.append(part)
    return series


def _split_multiframe(series: Series) -> list[Series]:
    """An enhanced object can hold several stacks (orientations, temporal positions): one case each."""
    if len(series.headers) != 1 or not series.first.enhanced:
        return [series]
    frames = frames_of(series.headers)
    stacks: dict[tuple, list[int]] = {}
    for i, frame in enumerate(frames):
        orientation = tuple(np.round(frame.orientation, 4)) if frame.orientation is not None else None
        stacks.setdefault((orientation, frame.stack), []).append(i)
    if len(stacks) == 1:
        return [series]
    return [
        Series(series.series_uid, series.headers, split=series.split + (repr(key),), dropped=series.dropped, frames=indices)
        for key, indices in sorted(stacks.items(), key=lambda kv: repr(kv[0]))
    ]


def discover(root: Path, params=None) -> Discovery:
    """The loader's discovery hook: one case per selected series."""
    found = Discovery()
    options = options_from(params)
    for series in discover_series(root, options.selection, found.skipped):
        found.cases.append(case_source(series))
    return found


def case_source(series: Series) -> CaseSource:
    return CaseSource(
        identity=series.identity,
        paths=tuple(h.path for h in series.headers),
        kind="dicom",
        # Headers travel with the case so loading does not parse them a second time.
        info={"frames": series.frames, "dropped": dict(series.dropped), "headers": series.headers},
    )


def select_series(found: list[Series], wanted: str, key: bytes) -> list[Series]:
    """The series ``wanted`` names: a case id (as ``voxpipe info`` and ``convert`` show) or a SeriesInstanceUID.

    A SeriesInstanceUID can name several series once a mixed series is split (matrix sizes,
    orientations, echoes...); each part keeps its own case id, which selects it alone.
    """
    from voxpipe.cases import case_id

    by_id = [s for s in found if case_id(case_source(s), key) == wanted]
    return by_id or [s for s in found if s.series_uid == wanted]


def choose_one_hint(found: list[Series], key: bytes) -> str:
    """What to pass to select one of ``found``: their case ids, with sizes to tell them apart."""
    from voxpipe.cases import case_id

    listed = ", ".join(
        f"{case_id(case_source(s), key)} ({s.first.get('Columns', '?')}x{s.first.get('Rows', '?')}x{s.slice_count}"
        f" {s.modality or '?'} {s.orientation})"
        for s in found[:12]
    )
    more = f" and {len(found) - 12} more" if len(found) > 12 else ""
    split = len({s.series_uid for s in found}) == 1 and len(found) > 1
    what = (
        "one SeriesInstanceUID was split into these series (they differ in matrix size, orientation, echo or type)" if split else "they are"
    )
    return f"{what}: {listed}{more}; pass --series CASE_ID with one of these case ids"


def options_from(params) -> DicomOptions:
    if params is None:
        return DicomOptions()
    if isinstance(params, DicomOptions):
        return params
    dicom = getattr(params, "dicom", params)
    select = getattr(dicom, "select", None)
    selection = Selection(
        modalities=tuple(select.modality) if select else (),
        description=select.description if select else None,
        min_slices=select.min_slices if select else 1,
        orientations=tuple(select.orientation) if select else (),
    )
    return DicomOptions(
        dtype=dicom.dtype,
        irregular=dicom.irregular,
        spacing_tolerance=dicom.spacing_tolerance,
        max_gib=dicom.max_gib,
        selection=selection,
        workers=getattr(dicom, "workers", 0),
    )


def load_volume(paths: list[Path], options: DicomOptions, frames: list[int] | None = None, headers=None) -> Volume:
    """Assemble one series (its files, or headers already read) into a :class:`Volume`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warnings quote raw header values
        headers = headers or [header_of(Path(p)) for p in paths]
        frame_list = frames_of(headers, frames)
    if all(f.position is None or f.orientation is None for f in frame_list):
        return _planar(frame_list, options)
    return _stack(frame_list, options)


def stack_layout(frames: list[Frame], options: DicomOptions) -> tuple[list[Frame], StackGeometry]:
    """Frames in output order and the stack's geometry, after checking they form one stack."""
    first = frames[0]
    missing = [f for f in frames if f.position is None or f.orientation is None or f.pixel_spacing is None]
    if missing:
        absent = [
            name
            for name, attr in (
                ("ImagePositionPatient", "position"),
                ("ImageOrientationPatient", "orientation"),
                ("PixelSpacing", "pixel_spacing"),
            )
            if getattr(missing[0], attr) is None
        ]
        where = (
            "in every slice" if len(missing) == len(frames) else f"in {len(missing)} of {len(frames)} slices, first {missing[0].path.name}"
        )
        raise SeriesError(f"{' and '.join(absent)} missing {where}: the series' geometry is unknown")
    reference = np.asarray(first.orientation, float)
    for frame in frames:
        if np.max(np.abs(np.asarray(frame.orientation, float) - reference)) > ORIENTATION_TOLERANCE:
            raise SeriesError(f"{frame.path.name}: orientation differs from the rest of the series")
        if np.max(np.abs(np.asarray(frame.pixel_spacing) - np.asarray(first.pixel_spacing))) > 1e-4:
            raise SeriesError(f"{frame.path.name}: pixel spacing differs from the rest of the series")
    thickness = first.header.get("SliceThickness")
    try:
        geometry = stack_geometry(
            [f.position for f in frames], first.orientation, first.pixel_spacing, thickness, options.spacing_tolerance
        )
    except ValueError as exc:
        raise SeriesError(str(exc)) from None
    return [frames[i] for i in geometry.order], geometry


def frame_shape(frame: Frame) -> tuple[int, int]:
    return int(frame.header.get("Rows", 0)), int(frame.header.get("Columns", 0))


def _stack(frames: list[Frame], options: DicomOptions) -> Volume:
    ordered, geometry = stack_layout(frames, options)
    first = ordered[0]
    shape = frame_shape(first)
    stored = read_frames(ordered, shape, int(options.max_gib * 2**30), options.workers)
    fix_bits(stored, first.header)
    values, processing = to_real_world(stored, ordered, options.dtype)
    del stored
    found: list[str] = list(geometry.problems)
    affine = geometry.affine()
    if geometry.problems:
        if options.irregular != "resample":
            raise SeriesError(
                "; ".join(geometry.problems) + ". Set `irregular: resample` to interpolate onto a uniform grid, or exclude this series"
            )
        from voxpipe_plugins.io_dicom.resample import resample_uniform

        values, affine = resample_uniform(values, geometry)
        found = [f"{p} -> resampled to a uniform {geometry.spacing:.4g} mm grid" for p in geometry.problems]
    array = values.transpose(2, 1, 0)[None]  # (K, R, C) -> (1, C, R, K): MONAI/ITK axis order
    meta = _meta(first.header, processing, geometry.spacing, len(ordered), orientation_label(geometry.normal))
    multiframe = ordered[0].index is not None
    files = [ordered[0].path] if multiframe else [f.path for f in ordered]
    return Volume(array, affine, meta, found, files, [f.index for f in ordered] if multiframe else None)


def _planar(frames: list[Frame], options: DicomOptions) -> Volume:
    """Images without patient geometry (CR, DX, secondary capture, RGB): 2D, or a plain frame stack."""
    from voxpipe_plugins.io_dicom.pixels import decode_pixels

    header = frames[0].header
    _check_declared_size(header, options)
    ds, pixels = decode_pixels(header.path, header)
    if header.get("PhotometricInterpretation") == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
        header.values["SamplesPerPixel"] = 3
    samples = int(header.get("SamplesPerPixel", 1))
    count = int(header.get("NumberOfFrames", 1) or 1)
    if count == 1:
        pixels = pixels[None]
    if samples == 1:
        values, processing = to_real_world(pixels if pixels.flags.writeable else pixels.copy(), frames, options.dtype)
    else:
        values, processing = pixels, {"rescale": "none", "photometric": "RGB"}
    spacing = frames[0].pixel_spacing or (1.0, 1.0)
    affine = np.diag([spacing[1], spacing[0], 1.0, 1.0])  # no patient geometry: index axes, physical size
    warning = []
    if count > 1:
        warning.append(f"{count} frames without patient geometry: stacked with 1 mm spacing")
        array = values.transpose(3, 2, 1, 0) if samples > 1 else values.transpose(2, 1, 0)[None]
    else:
        array = values[0].transpose(2, 1, 0) if samples > 1 else values[0].T[None]
    meta = _meta(header, processing, 1.0, count, "none")
    return Volume(array, affine, meta, warning, [header.path])


def _check_declared_size(header, options: DicomOptions) -> None:
    """Rows x columns x frames x samples x bits, from the header, against the cap: refused before decoding."""
    from voxpipe.limits import ResourceLimitError, check_declared

    shape = tuple(int(header.get(k, 1) or 1) for k in ("NumberOfFrames", "Rows", "Columns", "SamplesPerPixel"))
    try:
        check_declared(header.path.name, shape, max(int(header.get("BitsAllocated", 16) or 16), 8) / 8, int(options.max_gib * 2**30))
    except ResourceLimitError as exc:
        raise SeriesError(str(exc)) from None


def _meta(header, processing: dict, spacing: float, count: int, orientation: str) -> dict:
    """Technical facts only: nothing that identifies the patient."""
    return {
        "source_format": "dicom",
        "modality": header.get("Modality", ""),
        "transfer_syntax": header.transfer_syntax,
        "slices": count,
        "slice_spacing": spacing,
        "orientation": orientation,
        "rescale": processing.get("rescale"),
        "photometric": processing.get("photometric"),
    }


class DicomLoader:
    """Loads the DICOM series named by ``case["source"]`` into ``case[key]``."""

    def __init__(
        self,
        key: str = "image",
        dtype: str = "auto",
        irregular: str = "refuse",
        spacing_tolerance: float = 0.05,
        max_gib: float = 16.0,
        select=None,
        workers: int = 0,
    ) -> None:
        from types import SimpleNamespace

        self.key = key
        self.options = options_from(
            SimpleNamespace(
                dtype=dtype, irregular=irregular, spacing_tolerance=spacing_tolerance, max_gib=max_gib, select=select, workers=workers
            )
        )

    def __call__(self, case: dict) -> dict:
        return load_into_case(case, self.key, self.options, "load.dicom")


def load_into_case(case: dict, key: str, options: DicomOptions, op: str) -> dict:
    from voxpipe_plugins.common.tensors import make_metatensor

    source: CaseSource = case["source"]
    try:
        volume = load_volume(list(source.paths), options, source.info.get("frames"), source.info.get("headers"))
    except PixelError as exc:
        raise SeriesError(str(exc)) from None
    out = dict(case)
    meta = dict(volume.meta, filename_or_obj=case.get("case_id", ""))
    out[key] = make_metatensor(volume.array, volume.affine, meta)
    out["dicom"] = {  # for writers that reference the source series (DICOM SEG)
        "files": volume.files,
        "frame_order": volume.frame_order,
        "affine": volume.affine,
        "shape": tuple(volume.array.shape[1:]),
        "resampled": bool(volume.warnings and any("resampled" in w for w in volume.warnings)),
    }
    out["warnings"] = list(case.get("warnings", [])) + volume.warnings
    dropped = dict(source.info.get("dropped") or {})
    record(
        out,
        op,
        kind="dicom",
        shape=list(out[key].shape),
        dtype=str(volume.array.dtype),
        modality=meta["modality"],
        orientation=meta["orientation"],
        slice_spacing=round(float(meta["slice_spacing"]), 6),
        rescale=meta["rescale"],
        photometric=meta["photometric"],
        dropped=dropped,
        warnings=volume.warnings,
    )
    return out

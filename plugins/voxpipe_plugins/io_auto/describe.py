"""``voxpipe info`` for NIfTI volumes and 2D images: shape, spacing, orientation, dtype, value range.

Why a describer of its own: the loaders build MetaTensors (torch), and ``info`` must stay
light. It reads each file the way the loader would (same size limits, same PHI-free
errors) but keeps only what a user checks before a run. Nothing identifying is shown:
NIfTI ``descrip``/``aux_file``/``db_name`` and 2D text chunks never are, and a file is
named by its pseudonymous case id (its path only with ``--show-phi``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from voxpipe.cases import CaseSource, case_id, suffix_of
from voxpipe.errors import one_line
from voxpipe.limits import check_declared, max_bytes
from voxpipe_plugins.io_image.reader import FORMATS, IMAGE_SUFFIXES, ImageReadError
from voxpipe_plugins.io_nifti.reader import NIFTI_SUFFIXES
from voxpipe_plugins.io_nifti.voxels import WHAT as NIFTI_WHAT
from voxpipe_plugins.io_nifti.voxels import NiftiReadError, read_raw, scaled

KINDS = {**NIFTI_SUFFIXES, **IMAGE_SUFFIXES}
COLUMNS = ["case_id", "kind", "size", "spacing", "orientation", "dtype", "range"]


def kind_of(path: Path) -> str | None:
    """``nifti``, ``image`` or None (offered to DICOM discovery)."""
    return KINDS.get(suffix_of(path))


def describe_file(path: Path, key: bytes, show_phi: bool = False) -> dict:
    """One row for a NIfTI or 2D image; a file that cannot be read gets ``error`` (one PHI-free line)."""
    kind = kind_of(path) or "?"
    row: dict = {"case_id": case_id(CaseSource(identity=str(path.resolve()), paths=(path,), kind=kind), key), "kind": kind}
    try:
        row.update(_nifti(path) if kind == "nifti" else _image(path))
    except (NiftiReadError, ImageReadError, ValueError, OSError, MemoryError) as exc:
        from voxpipe.input_redaction import redact_inputs

        text = str(exc).splitlines()[0] if str(exc).strip() else one_line(exc)
        row["error"] = text if show_phi else redact_inputs(text)
    if show_phi:
        row["file"] = str(path)
    return row


def _nifti(path: Path) -> dict:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        if not isinstance(image, nib.Nifti1Image):
            raise TypeError(type(image).__name__)
        proxy = image.dataobj
        shape, stored, offset = tuple(int(n) for n in proxy.shape), np.dtype(proxy.dtype), int(proxy.offset)
    except FileNotFoundError:
        raise NiftiReadError(f"{NIFTI_WHAT} not found") from None
    except Exception as exc:  # noqa: BLE001 - nibabel's messages quote the path
        raise NiftiReadError(
            f"{NIFTI_WHAT}: cannot be read as NIfTI-1 or NIfTI-2 ({type(exc).__name__}); check it with another viewer"
        ) from None
    check_declared("NIfTI header", shape, stored.itemsize, max_bytes())
    data = scaled(read_raw(path, shape, stored, offset), proxy.slope, proxy.inter)
    zooms = image.header.get_zooms()[: min(3, len(shape))]
    return {
        "size": "x".join(str(n) for n in shape),
        "spacing": "x".join(f"{float(z):.3g}" for z in zooms),
        "orientation": "".join(nib.aff2axcodes(image.affine)),
        "dtype": stored.name if data.dtype.name == stored.name else f"{stored.name} (scaled to {data.dtype.name})",
        "range": _range(data),
    }


def _image(path: Path) -> dict:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            handle = Image.open(path, formats=FORMATS)
    except Image.DecompressionBombError:
        raise ImageReadError("image file: more pixels than Pillow's decompression-bomb limit") from None
    except FileNotFoundError:
        raise ImageReadError("image file not found") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's messages quote the path
        raise ImageReadError(f"image file: not a readable {', '.join(FORMATS)} image ({type(exc).__name__})") from None
    with handle:
        width, height = handle.size
        check_declared(f"image file ({handle.format})", (len(handle.getbands()), width, height), 4, max_bytes())
        try:
            handle.load()
            pixels = np.asarray(handle)
        except Exception as exc:  # noqa: BLE001 - decoders raise many types
            raise ImageReadError(f"image file: the {handle.format} data is truncated or corrupt ({type(exc).__name__})") from None
        mode = handle.mode
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return {
        "size": f"{width}x{height}" + (f"x{channels}ch" if channels > 1 else ""),
        "spacing": "1x1 (pixels)",
        "orientation": "none (2D)",
        "dtype": f"{pixels.dtype} ({mode})",
        "range": _range(pixels),
    }


def _range(data: np.ndarray) -> list[float] | None:
    """[min, max] over the finite values (None when there are none)."""
    finite = data[np.isfinite(data)] if np.issubdtype(data.dtype, np.floating) else data
    if finite.size == 0:
        return None
    low, high = finite.min(), finite.max()
    return [_number(low), _number(high)]


def _number(value) -> float | int:
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, (int, np.integer)) or float(value).is_integer() else round(float(value), 6)


def render_files(rows: list[dict], show_phi: bool) -> list[str]:
    """The NIfTI / 2D table of ``voxpipe info``."""
    columns = COLUMNS + (["file"] if show_phi else [])
    shown = [{**r, "range": "" if r.get("range") is None else f"{r['range'][0]}..{r['range'][1]}"} for r in rows]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in shown)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    for row in shown:
        lines.append("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())
        if row.get("error"):
            lines.append(f"    error: {row['error']}")
    return lines

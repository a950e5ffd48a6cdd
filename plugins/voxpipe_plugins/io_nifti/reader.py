"""Read NIfTI files into MetaTensors, matching MONAI's LoadImage + EnsureChannelFirst."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from voxpipe.cases import Discovery, discover_by_suffix
from voxpipe.limits import check_declared, max_bytes
from voxpipe.stage import record
from voxpipe_plugins.io_nifti.voxels import WHAT, NiftiReadError, read_raw, scaled

NIFTI_SUFFIXES = {".nii": "nifti", ".nii.gz": "nifti"}


def discover(root: Path, params=None) -> Discovery:
    return discover_by_suffix(root, NIFTI_SUFFIXES)


def read_nifti(path: Path, dtype: str = "float32", case_id: str = "", max_gib: float | None = None):
    """Load one NIfTI file as a channel-first MetaTensor.

    The header's shape is checked against ``max_gib`` (default: ``$VOXPIPE_MAX_GIB`` or 16 GiB)
    and against the bytes the file really holds before any voxel is read; voxels are then
    read by :mod:`.voxels`, whose memory follows the bytes present, never the declaration.
    """
    image = _open(path)
    proxy = image.dataobj
    shape, stored = tuple(int(n) for n in proxy.shape), np.dtype(proxy.dtype)
    target = stored.itemsize if dtype == "keep" else max(stored.itemsize, np.dtype(dtype).itemsize)
    check_declared("NIfTI header", shape, target, max_bytes(max_gib))  # before anything is inflated
    data = scaled(read_raw(path, shape, stored, int(proxy.offset)), proxy.slope, proxy.inter)
    if dtype != "keep":
        data = data.astype(dtype, copy=False)
    if data.ndim == 4:
        array = np.moveaxis(data, -1, 0)
    elif data.ndim in (2, 3):
        array = data[None]
    else:
        raise ValueError(f"NIfTI with {data.ndim} dimensions is not supported (expected 2D, 3D or 4D)")
    header = image.header
    meta = {
        "filename_or_obj": case_id,  # never the path: it may name the patient
        "original_channel_dim": -1 if data.ndim == 4 else "no_channel",
        "pixdim": np.asarray(header["pixdim"], dtype=np.float64),
        "nifti_sform_code": int(header["sform_code"]),
        "nifti_qform_code": int(header["qform_code"]),
        "source_format": "nifti",
    }
    from voxpipe_plugins.common.tensors import make_metatensor  # torch + MONAI: not needed for discovery

    return make_metatensor(array, image.affine, meta)


def _open(path: Path):
    """nibabel's image (header only); its errors name the file's path, which may name the patient, so they become ours."""
    try:
        image = nib.load(str(path))
        if not isinstance(image, nib.Nifti1Image):  # Nifti2Image subclasses it
            raise TypeError(type(image).__name__)
        image.dataobj.offset  # noqa: B018 - a bad vox_offset raises here, not later
        return image
    except FileNotFoundError:
        raise NiftiReadError(f"{WHAT} not found (moved or deleted since the input was listed)") from None
    except Exception as exc:  # noqa: BLE001 - nibabel and gzip raise many types for corrupt files
        raise NiftiReadError(
            f"{WHAT}: cannot be read as NIfTI-1 or NIfTI-2 ({type(exc).__name__}: corrupt header or not a NIfTI "
            "file); check it with another viewer, or export it again"
        ) from None


class NiftiLoader:
    """Loads ``case["source"]`` into ``case[key]``."""

    def __init__(self, key: str = "image", dtype: str = "float32", max_gib: float | None = None) -> None:
        self.key = key
        self.dtype = dtype
        self.max_gib = max_gib

    def __call__(self, case: dict) -> dict:
        out = dict(case)
        out[self.key] = read_nifti(case["source"].path, self.dtype, case.get("case_id", ""), self.max_gib)
        record(out, "load.nifti", shape=list(out[self.key].shape), dtype=str(out[self.key].dtype).replace("torch.", ""))
        return out

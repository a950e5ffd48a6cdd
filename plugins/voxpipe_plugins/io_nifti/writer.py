"""Write MetaTensors as NIfTI files, atomically, with a header free of identifying text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voxpipe.atomic import atomic_path
from voxpipe.stage import record
from voxpipe_plugins.io_nifti import header

GZIP_LEVEL = 1  # zlib level 1 compresses medical volumes nearly as well as 6, several times faster


class NoAffineError(ValueError):
    """The data has no 4x4 affine: without one, the file's geometry would be made up."""


def nifti_array(image, label_map: bool = False) -> np.ndarray:
    """Channel-first tensor or array -> NIfTI array: 1 channel dropped, several moved to the 4th axis.

    Label maps (and boolean masks) are stored in the smallest unsigned type that holds them;
    images keep their type (float64 becomes float32).
    """
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if array.shape[0] == 1:
        array = array[0]
    else:
        array = np.moveaxis(array, 0, -1)
    if array.dtype == np.bool_ or (label_map and np.issubdtype(array.dtype, np.integer)):
        top = int(array.max()) if array.size else 0
        low = int(array.min()) if array.size else 0
        if low >= 0:
            array = array.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    return array


def write_nifti(image, target: Path, affine: np.ndarray | None = None, meta: dict | None = None) -> None:
    """Write ``image`` (channel-first MetaTensor, or array with ``affine``) to ``target`` (.nii/.nii.gz).

    qform and sform are both set (with the codes the image was loaded with, else 1); the
    header carries no text but ``descrip = voxpipe`` and no extensions. Written by
    :mod:`voxpipe_plugins.io_nifti.header` (no nibabel import, no copy of the voxels).
    """
    meta = meta if meta is not None else (getattr(image, "meta", {}) or {})
    if affine is None:
        raw = getattr(image, "affine", None)
        if raw is None:  # an identity affine would silently turn a 2 mm scan into 1 mm and change its orientation
            raise NoAffineError(f"{type(image).__name__} has no affine; write a MetaTensor (voxpipe.plugin.as_image) or pass affine=")
        affine = np.asarray(raw.detach().cpu().numpy() if hasattr(raw, "detach") else raw, dtype=np.float64)
    if affine.shape != (4, 4):
        raise NoAffineError(f"affine of shape {affine.shape}, expected 4x4")
    array = nifti_array(image, label_map=bool(meta.get("label_names")))
    with atomic_path(target) as tmp:
        header.write(
            tmp,
            array,
            affine,
            qform_code=int(meta.get("nifti_qform_code") or 1),
            sform_code=int(meta.get("nifti_sform_code") or 1),
            gzip_level=GZIP_LEVEL,
        )


class NiftiWriter:
    """Writes each of ``keys`` to ``<output_dir>/<key>.nii.gz``."""

    def __init__(self, keys: list[str] = ("image",), compress: bool = True) -> None:
        self.keys = list(keys)
        self.suffix = ".nii.gz" if compress else ".nii"

    def __call__(self, case: dict) -> dict:
        out_dir = Path(case["output_dir"])
        written = []
        for key in self.keys:
            if key not in case:
                raise ValueError(f"write.nifti: the case has no `{key}`; an earlier stage must write it, or drop it from `keys`")
            image = case[key]
            target = out_dir / f"{key}{self.suffix}"
            try:
                write_nifti(image, target)
            except NoAffineError as exc:
                raise NoAffineError(f"write.nifti: `{key}`: {exc}") from None
            written.append(target.name)
            names = (getattr(image, "meta", {}) or {}).get("label_names")
            if names:
                with atomic_path(out_dir / f"{key}.labels.json") as tmp:
                    tmp.write_text(json.dumps({str(k): v for k, v in names.items()}, indent=2) + "\n")
                written.append(f"{key}.labels.json")
            if key == "label" or names:  # the report's volumes, also for pipelines that draw no picture
                from voxpipe_plugins.label.volumes import report_label_volumes

                report_label_volumes(case, key, source="write.nifti")
        record(case, "write.nifti", files=written)
        return case

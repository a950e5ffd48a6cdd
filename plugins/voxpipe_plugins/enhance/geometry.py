"""Resampling to a target spacing and reorienting, through MONAI's Spacingd and Orientationd.

Both update the MetaTensor's affine so that every voxel keeps its world (RAS, mm) position.
"""

from __future__ import annotations

import torch
from monai.data import MetaTensor
from monai.transforms import Orientationd, Spacingd

from voxpipe.stage import record
from voxpipe_plugins.common.checks import StageInputError, spatial_dims
from voxpipe_plugins.common.tensors import spacing_of
from voxpipe_plugins.enhance.util import checked_float, source_device

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def _get(case: dict, key: str, stage: str):
    if key not in case or case[key] is None:
        raise StageInputError(f"{stage}: case has no `{key}`; run a stage that writes it first or remove it from the keys")
    return case[key]


def _codes(image) -> str:
    """Axis codes of the image's affine (RAS world), e.g. "LAS"; identity for plain tensors."""
    import nibabel as nib

    dims = image.ndim - 1
    if not isinstance(image, MetaTensor):
        return "RAS"[:dims]
    return "".join(nib.aff2axcodes(image.affine.detach().cpu().numpy())[:dims])


class Resample:
    """Resamples images (interpolated) and label maps (nearest, dtype kept) onto one grid of the target spacing."""

    STAGE = "enhance.resample"

    def __init__(
        self,
        spacing_mm: list[float],
        keys: list[str] = ("image",),
        label_keys: list[str] = (),
        mode: str = "bilinear",
        padding_mode: str = "border",
        device: str = "cpu",
    ) -> None:
        self.spacing_mm, self.keys, self.label_keys = [float(s) for s in spacing_mm], list(keys), list(label_keys)
        self.mode, self.padding_mode, self.device = mode, padding_mode, device

    def pixdim(self, dims: int) -> list[float]:
        if len(self.spacing_mm) == 1:
            return self.spacing_mm * dims
        if len(self.spacing_mm) != dims:
            raise StageInputError(
                f"{self.STAGE}: spacing_mm has {len(self.spacing_mm)} values but the image is {dims}D; give {dims} values or one"
            )
        return self.spacing_mm

    def __call__(self, case: dict) -> dict:
        stage = self.STAGE
        first = _get(case, self.keys[0], stage)
        dims = spatial_dims(first, stage)
        if self.mode == "bicubic" and dims == 3:
            raise StageInputError(f"{stage}: mode bicubic works on 2D images only (torch grid_sample); use bilinear for 3D")
        pixdim = self.pixdim(dims)
        home = source_device(first)
        batch, dtypes = {}, {}
        for key in self.keys:
            image, _, _ = checked_float(_get(case, key, stage), stage)
            batch[key] = image.to(self.device)
        for key in self.label_keys:
            label = _get(case, key, stage)
            spatial_dims(label, stage)
            label = label if isinstance(label, torch.Tensor) else torch.as_tensor(label)
            dtypes[key] = label.dtype
            batch[key] = label.to(self.device)
        for key, value in batch.items():
            if tuple(value.shape[1:]) != tuple(first.shape[1:]):
                raise StageInputError(
                    f"{stage}: `{key}` has shape {tuple(value.shape)}, `{self.keys[0]}` {tuple(first.shape)}; all keys must share one grid"
                )
        before = [round(s, 4) for s in spacing_of(batch[self.keys[0]])]
        shape_before = list(first.shape[1:])
        names = self.keys + self.label_keys
        transform = Spacingd(
            keys=names,
            pixdim=pixdim,
            mode=[self.mode] * len(self.keys) + ["nearest"] * len(self.label_keys),
            padding_mode=self.padding_mode,
            dtype=torch.float32,
            ensure_same_shape=True,
        )
        resampled = transform(batch)
        out = dict(case)
        for key in names:
            value = resampled[key]
            if key in dtypes and value.dtype != dtypes[key]:
                value = value.round().to(dtypes[key]) if not dtypes[key].is_floating_point else value.to(dtypes[key])
            out[key] = value.to(home)
        result = out[self.keys[0]]
        record(
            out,
            stage,
            keys=self.keys,
            label_keys=self.label_keys,
            mode=self.mode,
            spacing_before=before,
            spacing_after=[round(s, 4) for s in spacing_of(result)],
            shape_before=shape_before,
            shape_after=list(result.shape[1:]),
            device=str(self.device),
        )
        return out


class Reorient:
    """Flips/permutes the array axes to the requested axis codes; the affine follows, world positions are kept."""

    STAGE = "enhance.reorient"

    def __init__(self, axcodes: str = "RAS", keys: list[str] = ("image",)) -> None:
        self.axcodes, self.keys = axcodes.upper(), list(keys)

    def __call__(self, case: dict) -> dict:
        stage = self.STAGE
        out = dict(case)
        before = None
        codes = None
        for key in self.keys:
            image = _get(case, key, stage)
            dims = spatial_dims(image, stage)
            codes = self.axcodes[:dims]
            if len(codes) < dims:
                raise StageInputError(f"{stage}: axcodes {self.axcodes!r} has {len(self.axcodes)} letters, `{key}` is {dims}D")
            if key == self.keys[0]:
                before = _codes(image)
            out[key] = Orientationd(keys=key, axcodes=codes, labels=RAS_LABELS)({key: image})[key]
        record(out, stage, keys=self.keys, axcodes_before=before, axcodes_after=codes)
        return out

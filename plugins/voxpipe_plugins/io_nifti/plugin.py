"""Registers `load.nifti` and `write.nifti`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import CaseKey, StageParams


class NiftiLoadParams(StageParams):
    key: CaseKey = Field("image", description="Case key the loaded image is stored under.")
    dtype: Literal["float32", "float64", "keep"] = Field(
        "float32", description="Voxel type after loading (scl_slope/inter applied); `keep` keeps the stored type."
    )
    max_gib: float | None = Field(
        None,
        gt=0,
        le=1024,
        description="Refuse files whose header declares more than this many GiB "
        "(after the dtype conversion), before reading; unset: `$VOXPIPE_MAX_GIB`, else 16.",
    )


class NiftiWriteParams(StageParams):
    keys: list[CaseKey] = Field(["image"], min_length=1, description="Case keys to write, each to `<key>.nii.gz`.")
    compress: bool = Field(True, description="Write .nii.gz (true) or .nii (false).")


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="load.nifti",
            kind=StageKind.LOADER,
            summary="Load NIfTI-1/2 volumes (.nii, .nii.gz) with nibabel; affine and header kept.",
            description=(
                "Each .nii/.nii.gz file under the input is one case. The image becomes a channel-first "
                "MetaTensor (3D: 1xXxYxZ; 4D: the 4th axis becomes channels) with nibabel's affine "
                "(sform when its code is set, else qform), as MONAI's LoadImage gives it."
            ),
            params=NiftiLoadParams,
            factory="voxpipe_plugins.io_nifti.reader:NiftiLoader",
            writes=("{key}",),
            discover="voxpipe_plugins.io_nifti.reader:discover",
        )
    )
    register(
        StageSpec(
            id="write.nifti",
            kind=StageKind.WRITER,
            summary="Write images and label maps as NIfTI with qform and sform set and a clean header.",
            description=(
                "Label maps (images carrying a label table) and masks are stored as the smallest unsigned type that holds them; "
                "a label table, when the label carries one, is written beside it as `<key>.labels.json`. "
                "Header text fields that may hold identifying text (descrip, aux_file, intent_name, "
                "extensions) are cleared."
            ),
            params=NiftiWriteParams,
            factory="voxpipe_plugins.io_nifti.writer:NiftiWriter",
            reads=("{keys}",),
        )
    )

"""Registers `load.auto`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import CaseKey, StageParams
from voxpipe_plugins.io_dicom.params import DicomOptionsParams


class AutoLoadParams(StageParams):
    key: CaseKey = Field("image", description="Case key the loaded image is stored under.")
    dtype: Literal["float32", "float64", "keep"] = Field("float32", description="NIfTI voxel type after loading.")
    image_mode: Literal["keep", "gray", "rgb"] = Field("keep", description="Channel handling for 2D images.")
    dicom: DicomOptionsParams = Field(
        default_factory=DicomOptionsParams, description="DICOM series selection and assembly (as in `load.dicom`)."
    )


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="load.auto",
            kind=StageKind.LOADER,
            summary="Load every supported input: DICOM series, NIfTI volumes and 2D images, chosen per file.",
            description="Finds .nii/.nii.gz files and PNG/JPEG/TIFF/BMP images under the input by suffix, and DICOM "
            "series among the other files by their headers; each file or series is one case, loaded as `load.nifti`, "
            "`load.image2d` or `load.dicom` would load it. DICOM options sit under `dicom:`.",
            params=AutoLoadParams,
            factory="voxpipe_plugins.io_auto.loader:AutoLoader",
            writes=("{key}",),
            discover="voxpipe_plugins.io_auto.loader:discover",
        )
    )

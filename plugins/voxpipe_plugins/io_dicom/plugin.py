"""Registers `load.dicom`, `write.dicom_seg`, and the `voxpipe convert` and `voxpipe info` commands (info covers every input kind)."""

from __future__ import annotations

from voxpipe.commands_spec import CommandSpec
from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.io_dicom.params import DicomLoadParams, DicomSegParams


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="load.dicom",
            kind=StageKind.LOADER,
            summary="Load DICOM series: one case per series, slices ordered by position, rescaled, affine in RAS.",
            description=(
                "Scans the input recursively reading headers only, groups files by SeriesInstanceUID and splits series "
                "that mix orientations, echoes, temporal positions, image types or matrix sizes. DICOMDIR, non-image "
                "objects and non-DICOM files are skipped; localizers and duplicate instances dropped; all counted in the "
                "manifest. Slices are ordered by ImagePositionPatient along the normal, spacing is measured from the "
                "positions, RescaleSlope/Intercept are applied per slice, MONOCHROME1 is inverted to MONOCHROME2. Missing "
                "slices, uneven spacing and gantry tilt are refused or resampled (`irregular`). Compressed syntaxes (RLE, "
                "JPEG, JPEG-LS, JPEG 2000, deflate) decode through pydicom's backends. Enhanced multi-frame objects, RT dose "
                "and single 2D images (CR, DX, secondary capture, RGB) are supported."
            ),
            params=DicomLoadParams,
            factory="voxpipe_plugins.io_dicom.loader:DicomLoader",
            writes=("{key}",),
            discover="voxpipe_plugins.io_dicom.loader:discover",
        )
    )
    register(
        StageSpec(
            id="write.dicom_seg",
            kind=StageKind.WRITER,
            summary="Write the label map as a DICOM Segmentation (highdicom) that references its source series.",
            description=(
                "One segment per label value, named from the label table. The label must lie on the grid the series "
                "was loaded on; frames are tied to the source images, so resampled labels are refused. The object is "
                "validated by highdicom on creation and opens in DICOM SEG viewers (3D Slicer, OHIF). Identity is an explicit "
                "choice: by default (`identity: deidentified`) the SEG carries no patient identity: it is built from "
                "de-identified copies of the source headers (PS3.15 Annex E, keyed UIDs, pseudonymous Patient ID and shifted "
                "dates under the same key and options as deid.dicom), so it matches the source series de-identified with that "
                "key, by deid.dicom earlier in the pipeline or by `voxpipe deid` at any time. `identity: source` keeps the "
                "source's patient, study and UIDs: use it only for a SEG that goes back to the PACS it came from. Attributes "
                "the SEG needs and the source lacks (SliceThickness, type 2 patient and study attributes, a frame of reference) "
                "are derived from the loaded series and reported as a warning."
            ),
            params=DicomSegParams,
            factory="voxpipe_plugins.io_dicom.seg_writer:DicomSegWriter",
            reads=("{label_key}", "{image_key}"),
        )
    )


@hookimpl
def voxpipe_register_commands(register):
    register(
        CommandSpec(
            name="convert",
            summary="Convert DICOM series to NIfTI with a BIDS-style JSON sidecar, like dcm2niix (-f names, no overwrite without --force).",
            factory="voxpipe_plugins.io_dicom.commands:convert_command",
        )
    )
    register(
        CommandSpec(
            name="info",
            summary="Describe DICOM series, NIfTI volumes and 2D images: size, spacing, orientation, dtype, range.",
            factory="voxpipe_plugins.io_dicom.commands:info_command",
        )
    )

"""The pacs family's input sources: ``-i dicomweb+http(s)://...`` and ``-i dimse://...`` (openers imported only when used)."""

from __future__ import annotations

from voxpipe.plugin import InputSourceSpec

SOURCES = (
    InputSourceSpec(
        "dicomweb+http",
        "DICOMweb server (QIDO-RS to find series, WADO-RS to fetch them in their stored transfer syntax)",
        "voxpipe_plugins.pacs.dicomweb_source:open_dicomweb",
    ),
    InputSourceSpec(
        "dicomweb+https",
        "DICOMweb server over TLS (CA bundle: --ca-bundle or VOXPIPE_DICOMWEB_CA_BUNDLE)",
        "voxpipe_plugins.pacs.dicomweb_source:open_dicomweb",
    ),
    InputSourceSpec(
        "dimse",
        "DICOM peer by C-FIND and C-GET (dimse://CALLED_AE@HOST:PORT?StudyInstanceUID=...; --ae-title is VoxPipe's AE)",
        "voxpipe_plugins.pacs.dimse_source:open_dimse",
    ),
)


def register_input_sources(register) -> None:
    for spec in SOURCES:
        register(spec)

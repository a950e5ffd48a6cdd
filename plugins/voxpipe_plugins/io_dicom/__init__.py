"""DICOM series: discovery, selection, volume assembly, compressed syntaxes, DICOM SEG."""

import logging

# pydicom logs every failed decoder attempt at ERROR; with no handler configured Python
# would print them to stderr. VoxPipe reports failures itself, one line per case.
logging.getLogger("pydicom").addHandler(logging.NullHandler())

from voxpipe.redaction import redact_pydicom_log  # noqa: E402 - records quote raw header values: rewrite them

redact_pydicom_log()

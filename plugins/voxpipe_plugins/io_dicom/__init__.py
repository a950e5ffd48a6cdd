"""DICOM series: discovery, selection, volume assembly, compressed syntaxes, DICOM SEG."""

import logging

# pydicom logs every failed decoder attempt at ERROR; with no handler configured Python
# would print them to stderr. VoxPipe reports failures itself, one line per case.
logging.getLogger("pydicom").addHandler(logging.NullHandler())

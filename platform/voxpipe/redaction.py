"""Keep raw header values out of logs: pydicom's warnings and log records quote them.

pydicom reports odd values by quoting them ("Invalid value for VR DA: 'Doe^Jane'"), both
as Python warnings and through the ``pydicom`` logger. VoxPipe's readers catch the
warnings and count them; :func:`redact_pydicom_log` makes the logger safe as well: every
record it emits is rewritten to a fixed text (its level kept), so even a user's own
``logging.basicConfig`` cannot print a header value.
"""

from __future__ import annotations

import logging
import re

WITHHELD = "pydicom reported an unusual header value (value withheld: it may identify the patient)"


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = WITHHELD, None
        record.exc_info = record.exc_text = None
        return True


def redact_pydicom_log() -> None:
    """Idempotent: a NullHandler (no "last resort" printing to stderr) and the redacting filter."""
    logger = logging.getLogger("pydicom")
    if not any(isinstance(f, _Redact) for f in logger.filters):
        logger.addFilter(_Redact())
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


_TECHNICAL_NAME = re.compile(r"^(?:[A-Za-z]{0,6}[_-]?)?[0-9][0-9._-]*(?:\.(?:dcm|dicom|ima|img))?$|^[0-9a-fA-F]{8,64}(?:\.dcm)?$")


def technical_name(name: str) -> bool:
    """Whether a file name is the kind scanners and PACS generate (``IM000123.dcm``, ``1.2.840....dcm``, a hash).

    Only such names are shown in messages; any other name (``Doe_Jane_CT.dcm``) may name the patient.
    """
    return bool(_TECHNICAL_NAME.match(name))

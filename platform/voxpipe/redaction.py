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


# Letters only from prefixes scanners and viewers write (IM_0001, MR.1.2.840..., CT000123): a free
# prefix of letters would let SMITH01.dcm through.
_SCANNER_PREFIXES = "IM|IMG|IMAGE|I|CT|MR|MRI|PT|PET|NM|US|XA|RF|CR|DX|MG|SC|OT|SEG|SR|RT|RTDOSE|RTSTRUCT|SLICE|FILE|DCM|EE|Z"
_TECHNICAL_NAME = re.compile(
    rf"^(?:(?i:{_SCANNER_PREFIXES})[_.-]?)?[0-9][0-9._-]*(?:\.(?i:dcm|dicom|ima|img))?$|^[0-9a-fA-F]{{8,64}}(?:\.(?i:dcm))?$"
)


def technical_name(name: str) -> bool:
    """Whether a file name is the kind scanners and PACS generate (``IM000123.dcm``, ``1.2.840....dcm``, a hash).

    Only such names are shown in messages; any other name (``Doe_Jane_CT.dcm``) may name the patient.
    """
    return bool(_TECHNICAL_NAME.match(name))


# ----------------------------------------------------------------------------- case messages
VALUE_WITHHELD = "<value withheld>"
MIN_VALUE_LENGTH = 3
"""Shorter header values are not searched for: they would cut words out of every message."""

_QUOTED = re.compile(r"""(?<![A-Za-z0-9_\\])[bBrRuU]?(['"])(.{0,400}?)\1(?![A-Za-z0-9_])""")
_NUMBER = re.compile(r"^[+-]?(?:\d{1,6}(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9]*(?:[_.][a-z0-9]+)+$|^[a-z][a-z0-9]{0,15}$")
_NUMBERS = re.compile(r"^[\d\s,.()\[\]x+-]+$")
_OWN = re.compile(r"^<[a-z ]+(?: \d+)?>$")
_TYPE_NAMES = frozenset(
    {
        "FileDataset",
        "Dataset",
        "DataElement",
        "RawDataElement",
        "FileMetaDataset",
        "Sequence",
        "MultiValue",
        "PersonName",
        "DSfloat",
        "DSdecimal",
        "IS",
        "DA",
        "DT",
        "TM",
        "UID",
        "MetaTensor",
        "Tensor",
        "ndarray",
        "NoneType",
        "Nifti1Image",
        "Nifti1Header",
        "Segmentation",
        "PixelMeasuresSequence",
        "PlaneOrientationSequence",
        "PlanePositionSequence",
    }
)
_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE", "AS", "DA", "DT", "TM", "CS", "UI", "DS", "IS"})


def header_values(paths, limit: int = 4096) -> set[str]:
    """Text-like values in the headers of a case's source files: what a library error may quote.

    DICOM: every text, name, date, time, age, code and unregistered UID at any depth (file
    meta included), names also split into their parts; numbers only when they are not
    numbers (text in a DS). NIfTI: the free-text header fields. Unreadable files give nothing.
    """
    found: set[str] = set()
    for count, path in enumerate(paths):
        if count >= limit:
            break
        name = str(path).lower()
        try:
            if name.endswith((".nii", ".nii.gz", ".hdr", ".img")):
                _nifti_values(path, found)
            else:
                _dicom_values(path, found)
        except Exception:  # noqa: BLE001, S112 - a file the loader could not read either; nothing to add
            continue
    return {value for value in found if len(value) >= MIN_VALUE_LENGTH}


def _dicom_values(path, found: set[str]) -> None:
    import warnings

    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        _dataset_values(ds, found, 0)
        if getattr(ds, "file_meta", None) is not None:
            _dataset_values(ds.file_meta, found, 0)


def _dataset_values(ds, found: set[str], depth: int) -> None:
    """Values read from the raw bytes where they are still raw: a value that fails its VR (text in a DS)
    cannot be converted, and it is exactly the value a library will quote."""
    from pydicom.dataelem import RawDataElement

    if depth > 16:
        return
    for tag in list(ds.keys()):
        try:
            elem = ds.get_item(tag)
            vr = elem.VR or _dictionary_vr(tag)
            if vr == "SQ" or (isinstance(elem, RawDataElement) and vr is None):
                for item in ds[tag].value or []:
                    _dataset_values(item, found, depth + 1)
                continue
            value = elem.value
        except Exception:  # noqa: BLE001, S112 - undecodable: the quoted-value rule still applies
            continue
        if isinstance(elem, RawDataElement) and isinstance(value, bytes) and vr in _TEXT_VRS:
            value = [part for part in value.decode("latin-1").split("\\")]
        _element_values(vr, value, found)


def _dictionary_vr(tag) -> str | None:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _element_values(vr: str | None, value, found: set[str]) -> None:
    from pydicom.uid import UID_dictionary

    if isinstance(value, bytes):
        text = value.decode("latin-1", "replace").strip(" \x00")
        if vr in ("UN", "OB", None) and text.isprintable():
            found.add(text)
        return
    if vr not in _TEXT_VRS or value is None:
        return
    for item in value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]:
        text = str(item).strip(" \x00")
        if vr in ("DS", "IS") and _NUMBER.match(text):
            continue
        if vr == "UI" and text in UID_dictionary:
            continue
        found.add(text)
        if vr == "PN":
            found.update(part for part in re.split(r"[\^=\s,]+", text) if part)
        if vr in ("DA", "DT") and re.match(r"^\d{8}", text):
            found.add(f"{text[:4]}-{text[4:6]}-{text[6:8]}")


def _nifti_values(path, found: set[str]) -> None:
    import nibabel as nib

    header = nib.load(str(path)).header
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        try:
            text = bytes(header[field]).split(b"\x00")[0].decode("latin-1").strip()
        except (KeyError, ValueError, TypeError):
            continue
        if text:
            found.add(text)


def redact_values(text: str, values) -> str:
    """``text`` with every occurrence of ``values`` (any case) replaced by ``<value withheld>``."""
    values = sorted({v for v in values if len(v) >= MIN_VALUE_LENGTH}, key=len, reverse=True)
    if not values or not text:
        return text
    pattern = re.compile("|".join(re.escape(v) for v in values), re.IGNORECASE)
    return pattern.sub(VALUE_WITHHELD, text)


def redact_quoted(text: str) -> str:
    """Withhold quoted values in library messages (``Unable to convert 'Doe^Jane' to 'DA' object``).

    pydicom, highdicom, MONAI and Python itself quote the value they choke on. Kept: what names
    a thing rather than holding a value (DICOM keywords, VRs, registered UIDs, type and parameter
    names), small numbers, and VoxPipe's own placeholders.
    """

    def replace(match: re.Match) -> str:
        inner = match.group(2)
        return match.group(0) if _harmless(inner) else f"{match.group(1)}{VALUE_WITHHELD}{match.group(1)}"

    return _QUOTED.sub(replace, text)


def _harmless(inner: str) -> bool:
    if inner in ("", VALUE_WITHHELD) or _OWN.match(inner) or inner in _TYPE_NAMES or _IDENTIFIER.match(inner):
        return True
    if _NUMBERS.match(inner):  # sizes, shapes, spacings; not dates (19700102, 1970-01-02)
        return not re.search(r"\d{7}|\d{4}-\d{2}-\d{2}", inner)
    from pydicom.datadict import keyword_dict
    from pydicom.uid import UID_dictionary

    return inner in keyword_dict or inner in UID_dictionary or (len(inner) == 2 and inner in _TEXT_VRS | {"SQ", "OB", "OW", "UN"})


class CaseRedactor:
    """Redacts the texts of one case (its error and warnings) before they are stored or printed: header
    values and quoted values withheld, then one line (tracebacks reduced to their last line, cut).

    Header values of the case's source files are read once, on first use, so a case with
    nothing to say costs nothing.
    """

    def __init__(self, paths) -> None:
        self.paths = list(paths)
        self._values: set[str] | None = None

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        from voxpipe.errors import flatten

        if self._values is None:
            self._values = header_values(self.paths)
        return flatten(redact_quoted(redact_values(text, self._values)))

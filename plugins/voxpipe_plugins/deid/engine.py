"""Apply the Basic Application Level Confidentiality Profile (PS3.15 E.1.1) to one data set.

Rules, in order, for every element at every depth:

1. File meta (group 0002) is rebuilt from the de-identified data set; the preamble is zeroed.
2. Private elements (odd groups) are removed, unless Retain Safe Private is on and the
   element is on the user's safe list (``GGGG,CREATOR,EE``).
3. A public element the table names gets the table's action under the enabled options.
4. A public element the table does not name (a newer edition may list it) is judged by
   its value representation: numbers, codes (CS), registered UIDs and binary data are
   kept; free text, names, dates, times and ages are removed unless an option keeps them;
   an unregistered UID is remapped like any instance UID.

5. A value left after these rules that fails its VR's grammar (text in a DS, a name in a
   date, a lowercase sentence in a CS; :mod:`voxpipe_plugins.deid.vr`) is removed, never copied.

Sequences are processed item by item, to any depth up to ``max_depth`` (deeper nesting is
refused: it is either corrupt or an attack on recursive readers). The data set is marked
(PatientIdentityRemoved, DeidentificationMethod and its code sequence,
LongitudinalTemporalInformationModified) and a data set VoxPipe already marked is refused,
so dates can never be shifted twice.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import UID_dictionary

from voxpipe import __version__
from voxpipe_plugins.deid.pseudonyms import Pseudonyms, shift_date, shift_datetime
from voxpipe_plugins.deid.table import Row, load_table
from voxpipe_plugins.deid.vr import GRAMMAR_VRS, valid

METHOD_MARK = "VoxPipe"
NUMERIC_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "IS", "DS", "AT", "SV", "UV", "OB", "OW", "OF", "OD", "OL", "OV"}
TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE"}
SAFE_TEXT = {
    # Public attributes Table E.1-1 does not name whose text describes the equipment or codes, not the patient.
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "ConvolutionKernel",
    "CodeValue",
    "CodingSchemeDesignator",
    "CodingSchemeVersion",
    "CodeMeaning",
    "LongCodeValue",
    "URNCodeValue",
    "ContextIdentifier",
    "MappingResource",
    "ContextGroupExtensionFlag",
    "SpecificCharacterSet",
    "DeidentificationMethod",
    "ReceiveCoilName",
    "TransmitCoilName",
    "SequenceName",
    "PulseSequenceName",
    "ScanningSequence",
    "SequenceVariant",
    "PositionReferenceIndicator",
    "WindowCenterWidthExplanation",
    "LUTExplanation",
    "RescaleType",
    "Units",
    "CodingSchemeName",
    "ContentLabel",
}
SECONDARY_CAPTURE = {
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
}
ULTRASOUND = {"1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.3.1"}
OPTION_CODES = {  # CID 7050 De-identification Method
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "pixels": ("113101", "Clean Pixel Data Option"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "rtn_long_full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "rtn_long_modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "rtn_patient_chars": ("113108", "Retain Patient Characteristics Option"),
    "rtn_device": ("113109", "Retain Device Identity Option"),
    "rtn_uids": ("113110", "Retain UIDs Option"),
    "rtn_safe_private": ("113111", "Retain Safe Private Option"),
    "rtn_institution": ("113112", "Retain Institution Identity Option"),
}


class DeidError(ValueError):
    """A data set that cannot be de-identified as asked; the message names no value from it."""


class Quarantined(DeidError):
    """Not written: the pixels may show identity (burned-in annotation)."""


class AlreadyDeidentified(DeidError):
    """VoxPipe de-identified this data set already; doing it again would shift dates twice."""


@dataclass(frozen=True)
class DeidOptions:
    """The profile's options (PS3.15 E.3) plus VoxPipe's pixel and safety settings."""

    retain_long_dates: str = "modified"  # off | full | modified
    retain_patient_chars: bool = False
    retain_device: bool = False
    retain_institution: bool = False
    retain_uids: bool = False
    safe_private: tuple[str, ...] = ()  # "GGGG,CREATOR,EE" entries kept under Retain Safe Private
    clean_descriptors: bool = False
    clean_structured: bool = False
    clean_graphics: bool = False
    burned_in: str = "quarantine"  # quarantine | blank
    blank_regions: tuple[tuple[int, int, int, int], ...] = ()  # (row0, col0, row1, col1), end exclusive
    max_depth: int = 16
    max_shift_days: int = 3650

    def enabled(self) -> frozenset[str]:
        names = {
            "rtn_patient_chars": self.retain_patient_chars,
            "rtn_device": self.retain_device,
            "rtn_institution": self.retain_institution,
            "rtn_uids": self.retain_uids,
            "rtn_safe_private": bool(self.safe_private),
            "clean_descriptors": self.clean_descriptors,
            "clean_structured": self.clean_structured,
            "clean_graphics": self.clean_graphics,
            "rtn_long_full_dates": self.retain_long_dates == "full",
            "rtn_long_modified_dates": self.retain_long_dates == "modified",
        }
        return frozenset(name for name, on in names.items() if on)


@dataclass
class Outcome:
    """What was done to one data set (counts only: never values)."""

    actions: Counter = field(default_factory=Counter)
    library_warnings: int = 0
    pixels_blanked: bool = False


def burned_in_reason(ds: Dataset) -> str | None:
    """Why the pixels may show identity, or None. Flag YES always; US and secondary capture when the flag is absent."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if flag:
        return None
    modality = str(ds.get("Modality", "") or "").upper()
    sop = str(ds.get("SOPClassUID", "") or "")
    if modality == "US" or sop in ULTRASOUND:
        return "ultrasound image without a BurnedInAnnotation flag"
    if sop in SECONDARY_CAPTURE:
        return "secondary capture without a BurnedInAnnotation flag"
    return None


class Deidentifier:
    """De-identifies data sets in place under one key and one set of options."""

    def __init__(self, key: bytes, options: DeidOptions | None = None) -> None:
        self.options = options or DeidOptions()
        self.table = load_table()
        self.pseudonyms = Pseudonyms(key, self.options.max_shift_days)
        self.enabled = self.options.enabled()
        self._safe_private = {_safe_key(entry) for entry in self.options.safe_private}

    # -- one data set ---------------------------------------------------------------
    def apply(self, ds: Dataset) -> Outcome:
        """De-identify ``ds`` (a file data set) in place. Raises :class:`DeidError` subclasses."""
        outcome = Outcome()
        with warnings.catch_warnings(record=True) as caught:  # pydicom's warnings quote raw values: count, never show
            warnings.simplefilter("always")
            self._apply(ds, outcome)
        outcome.library_warnings = len(caught)
        return outcome

    def _apply(self, ds: Dataset, outcome: Outcome) -> None:
        if str(ds.get("PatientIdentityRemoved", "")).upper() == "YES" and METHOD_MARK in str(ds.get("DeidentificationMethod", "")):
            raise AlreadyDeidentified(
                "already de-identified by VoxPipe (PatientIdentityRemoved is YES); "
                "refused so that dates are not shifted twice; de-identify the original instead"
            )
        reason = burned_in_reason(ds)
        if reason:
            if self.options.burned_in == "blank" and self.options.blank_regions:
                from voxpipe_plugins.deid.pixels import blank_regions

                blank_regions(ds, self.options.blank_regions)
                outcome.pixels_blanked = True
            else:
                raise Quarantined(
                    f"{reason} (pixels may show identity); set burned_in: blank with "
                    "blank_regions to blank the text areas, or review the file by hand"
                )
        self.patient = str(ds.get("PatientID", "") or "") + "\x00" + str(ds.get("IssuerOfPatientID", "") or "")
        self.days = self.pseudonyms.day_offset(self.patient)
        self.identifiers = (
            _identifiers(ds) if self.enabled & {"clean_descriptors", "clean_structured", "clean_graphics", "rtn_patient_chars"} else []
        )
        was_modified = str(ds.get("LongitudinalTemporalInformationModified", "")).upper() == "MODIFIED"
        self._shift = self.options.retain_long_dates == "modified" and not was_modified
        self._structured = 0
        self._walk(ds, 0, outcome.actions)
        _drop_invalid(ds, 0, outcome.actions)
        self._mark(ds, outcome)
        self._file_meta(ds)

    def _walk(self, ds: Dataset, depth: int, counts: Counter) -> None:
        if depth > self.options.max_depth:
            raise DeidError(f"sequences nested deeper than {self.options.max_depth} levels; refused (raise max_depth if this is intended)")
        kept_private_blocks: set[tuple[int, int]] = set()
        private_creators: list[int] = []
        for tag in list(ds.keys()):
            tag = Tag(tag)
            if tag.group == 0x0002:
                continue
            if tag.is_private:
                if tag.element <= 0x00FF and tag.element >= 0x0010:
                    private_creators.append(tag)
                    continue
                if self._keep_private(ds, tag):
                    kept_private_blocks.add((tag.group, tag.element >> 8))
                    counts["K"] += 1
                else:
                    del ds[tag]
                    counts["X"] += 1
                continue
            elem = ds[tag]
            row = self.table.lookup(tag)
            if row is not None:
                code, column = self._action(row)
                counts[code] += 1
                self._do(ds, elem, code, column, depth, counts)
            else:
                counts["vr:" + elem.VR] += 1
                self._by_vr(ds, elem, depth, counts)
        for tag in private_creators:
            if (tag.group, tag.element) not in kept_private_blocks:
                del ds[tag]
        for tag in list(ds.keys()):  # group lengths describe the old encoding
            if Tag(tag).element == 0x0000 and Tag(tag).group != 0x0000:
                del ds[tag]

    def _action(self, row: Row) -> tuple[str, str | None]:
        found = [(row.options[name], name) for name in sorted(self.enabled) if row.options.get(name)]
        for code in ("K", "C", "X"):
            for value, name in found:
                if value == code:
                    return code, name
        return row.basic, None

    def _do(self, ds: Dataset, elem: DataElement, code: str, column: str | None, depth: int, counts: Counter) -> None:
        vr = elem.VR
        if code == "K":
            if vr == "SQ":
                self._items(elem, depth, counts)
            return
        if code == "X":
            del ds[elem.tag]
            return
        if code == "C":
            self._clean(ds, elem, column, depth, counts)
            return
        if code == "U" or (code == "X/Z/U*" and vr == "UI"):
            elem.value = self._uids(elem.value)
            return
        if vr == "SQ" and code in ("D", "Z/D", "X/D", "X/Z/D", "X/Z/U*"):
            self._items(elem, depth, counts)  # a dummy sequence: its items keep only what the profile allows
            return
        if code in ("Z", "X/Z", "X/Z/U*"):
            elem.value = Sequence() if vr == "SQ" else (b"" if vr in ("OB", "OW", "UN") else None if vr in NUMERIC_VRS else "")
            return
        elem.value = self._dummy(elem)  # D, Z/D, X/D, X/Z/D

    def _items(self, elem: DataElement, depth: int, counts: Counter) -> None:
        for item in elem.value or []:
            self._walk(item, depth + 1, counts)

    def _dummy(self, elem: DataElement):
        """A replacement value of the element's VR that carries no information about the original."""
        vr, value = elem.VR, elem.value
        if value in (None, "", b"") or (isinstance(value, (list, tuple)) and not value):
            return value
        if vr == "PN":
            return "ANONYMOUS"
        if vr == "UI":
            return self._uids(value)
        if vr == "DA":
            return self._date(value, shift_date) or "19000101"
        if vr == "DT":
            return self._date(value, shift_datetime) or "19000101000000"
        if vr == "TM":
            return value if self.options.retain_long_dates != "off" else "000000"
        if vr in ("LO", "SH", "CS", "AE"):
            token = self.pseudonyms.token(f"dummy:{elem.tag:08x}", str(value), 10).upper()
            return f"ANON{token}" if vr != "CS" else f"ANON{token}"[:16]
        if vr in ("ST", "LT", "UT", "UC"):
            return "ANONYMIZED"
        if vr in ("IS", "DS"):
            return "0"
        if vr in ("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"):
            return 0
        return b"" if vr in ("OB", "OW", "UN", "OF", "OD", "OL", "OV") else ""

    def _date(self, value, shifter):
        if _empty(value) or self.options.retain_long_dates == "full":
            return value
        if self.options.retain_long_dates != "modified":
            return None
        if not self._shift:
            return value
        values = value if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str) else [value]
        shifted = [shifter(str(v), self.days) for v in values]
        if any(s is None for s in shifted):
            return None
        return shifted[0] if len(shifted) == 1 else shifted

    def _uids(self, value):
        if _empty(value) or self.options.retain_uids:
            return value
        if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, str)):
            return [self.pseudonyms.uid(str(v)) for v in value]
        return self.pseudonyms.uid(str(value))

    def _clean(self, ds: Dataset, elem: DataElement, column: str | None, depth: int, counts: Counter) -> None:
        vr = elem.VR
        if vr == "SQ":
            structured = column == "clean_structured"
            self._structured += structured  # inside an SR tree, free text is cleaned rather than removed
            try:
                self._items(elem, depth, counts)
            finally:
                self._structured -= structured
            return
        if column in ("rtn_long_modified_dates",):
            if vr in ("DA", "DT"):
                shifted = self._date(elem.value, shift_date if vr == "DA" else shift_datetime)
                if shifted is None:
                    del ds[elem.tag]  # a malformed date cannot be shifted, so it cannot stay
                else:
                    elem.value = shifted
            elif not re.fullmatch(r"[+-]?\d{0,6}(\.\d{1,6})?", str(elem.value or "").strip()):
                del ds[elem.tag]  # TM and the UTC offset keep their values (the shift is whole days) only when well formed
            return
        if column == "rtn_safe_private":
            return
        if vr in TEXT_VRS or vr == "PN":
            cleaned = self._clean_text(elem.value)
            if cleaned is None:
                del ds[elem.tag]
            else:
                elem.value = cleaned
            return
        if vr in NUMERIC_VRS or vr == "CS":
            return
        del ds[elem.tag]

    def _clean_text(self, value):
        """Clean Descriptors: the text without any identifying value found in the same data set, nor dates."""
        if value is None:
            return None
        text = "\\".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        for needle in self.identifiers:
            text = re.sub(re.escape(needle), "", text, flags=re.IGNORECASE)
        text = re.sub(r"\b(19|20)\d{2}[-./]?\d{2}[-./]?\d{2}\b", "", text)
        text = " ".join(text.split())
        return text

    def _by_vr(self, ds: Dataset, elem: DataElement, depth: int, counts: Counter) -> None:
        vr = elem.VR
        if vr == "SQ":
            self._items(elem, depth, counts)
        elif vr in NUMERIC_VRS or vr == "CS":
            return
        elif vr == "UI":
            if _empty(elem.value):
                return
            values = [elem.value] if isinstance(elem.value, str) else list(elem.value)
            if not all(str(v) in UID_dictionary for v in values):
                elem.value = self._uids(elem.value)
        elif vr in ("DA", "DT"):
            shifted = self._date(elem.value, shift_date if vr == "DA" else shift_datetime)
            if shifted is None:
                del ds[elem.tag]
            else:
                elem.value = shifted
        elif vr == "TM":
            if self.options.retain_long_dates == "off":
                del ds[elem.tag]
        elif vr == "AS":
            if not self.options.retain_patient_chars:
                del ds[elem.tag]
        elif vr in TEXT_VRS and elem.keyword in SAFE_TEXT:
            return
        elif vr in TEXT_VRS and (self.options.clean_descriptors or self._structured):
            elem.value = self._clean_text(elem.value)
        else:  # PN, free text, UN and anything unknown
            del ds[elem.tag]

    def _keep_private(self, ds: Dataset, tag) -> bool:
        if not self._safe_private:
            return False
        creator_tag = Tag(tag.group, tag.element >> 8)
        creator = str(ds[creator_tag].value).strip() if creator_tag in ds else ""
        return (tag.group, creator.upper(), tag.element & 0xFF) in self._safe_private

    # -- marks and file meta -----------------------------------------------------------
    def _mark(self, ds: Dataset, outcome: Outcome) -> None:
        ds.PatientIdentityRemoved = "YES"
        used = ["basic"] + sorted(self.enabled) + (["pixels"] if outcome.pixels_blanked else [])
        ds.DeidentificationMethod = [f"{METHOD_MARK} {__version__} PS3.15 E.1.1"] + [OPTION_CODES[name][1][:64] for name in used[1:]]
        items = []
        for name in used:
            value, meaning = OPTION_CODES[name]
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = {"full": "UNMODIFIED", "modified": "MODIFIED", "off": "REMOVED"}[
            self.options.retain_long_dates
        ]
        if outcome.pixels_blanked:
            ds.BurnedInAnnotation = "NO"

    def _file_meta(self, ds: Dataset) -> None:
        old = getattr(ds, "file_meta", None) or FileMetaDataset()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", old.get("MediaStorageSOPClassUID", ""))
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "") or self.pseudonyms.uid(
            str(old.get("MediaStorageSOPInstanceUID", ""))
        )
        meta.TransferSyntaxUID = old.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"VOXPIPE_{__version__}"[:16]
        ds.file_meta = meta
        ds.preamble = b"\x00" * 128


def _drop_invalid(ds: Dataset, depth: int, counts: Counter) -> None:
    """Remove every kept value that fails its VR's grammar, at any depth: it is text in disguise, never copied."""
    for tag in list(ds.keys()):
        if Tag(tag).group == 0x0002:
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value or []:
                _drop_invalid(item, depth + 1, counts)
        elif elem.VR in GRAMMAR_VRS and not valid(elem.VR, elem.value):
            del ds[tag]
            counts["invalid:" + elem.VR] += 1


def _empty(value) -> bool:
    return (
        value is None
        or value == ""
        or value == b""
        or (not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and len(value) == 0)
    )


def _safe_key(entry: str) -> tuple[int, str, int]:
    group, creator, element = (part.strip() for part in entry.split(","))
    return int(group, 16), creator.upper(), int(element, 16)


def _identifiers(ds: Dataset) -> list[str]:
    """Values that identify the patient or the institution, for Clean Descriptors (longest first)."""
    found: set[str] = set()
    keywords = (
        "PatientName",
        "PatientID",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientBirthName",
        "PatientMotherBirthName",
        "AccessionNumber",
        "InstitutionName",
        "InstitutionAddress",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "StationName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "StudyID",
        "MedicalRecordLocator",
        "PatientBirthDate",
        "InstitutionalDepartmentName",
        "RequestingPhysician",
        "NameOfPhysiciansReadingStudy",
    )
    for keyword in keywords:
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            text = str(item)
            found.add(text)
            found.update(part for part in re.split(r"[\^=\s,]+", text) if len(part) >= 3)
    return sorted((f for f in found if len(f) >= 3), key=len, reverse=True)

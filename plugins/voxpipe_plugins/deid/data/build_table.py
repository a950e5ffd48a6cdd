"""Rebuild ``annex_e.tsv`` (DICOM PS3.15 Table E.1-1) from public extractions of the standard.

Not used at run time: the TSV it writes is the shipped, reviewed artefact, and
``tests/test_deid.py`` checks that every row maps to an action. Run it by hand when a new
edition of the standard appears::

    pip download --no-deps dicom-anonymizer==2.1.0 -d /tmp/anon && unzip -q /tmp/anon/*.whl -d /tmp/anon
    python plugins/voxpipe_plugins/deid/data/build_table.py \
        /tmp/anon/dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py

Where each part comes from (recorded in the TSV header and in the ``options_source`` column):

* Rows, names and Basic Profile actions: the 2026c extraction of Table E.1-1 shipped in the
  ``dicom-anonymizer`` 2.1.0 wheel on PyPI (KitwareMedical/dicom-anonymizer, BSD licence),
  ``dicom_anonymization_databases/dicomfields_2026c.py``; 655 rows.
* Option columns (Retain Safe Private, Retain UIDs, Retain Device Identity, Retain Institution
  Identity, Retain Patient Characteristics, Retain Longitudinal Full / Modified Dates, Clean
  Descriptors, Clean Structured Content, Clean Graphics): for the rows present in the
  innolitics/dicom-standard extraction (``standard/confidentiality_profile_attributes.json``,
  commit 0d01bf11dfc1d0b73b6df85bbf6e1764d3c558a3, ~450 rows) the tag lists below were read
  from it (``options_source = innolitics``). Rows added to the standard since then get their
  option columns from the standard's own regularities (``options_source = rule``): every
  date/time VR row has K / C under the two longitudinal options; every U row has K under
  Retain UIDs; free-text descriptions, comments, labels and notes have C under Clean
  Descriptors.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CATEGORIES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
COLUMNS = [
    "tag",
    "name",
    "basic",
    "rtn_safe_private",
    "rtn_uids",
    "rtn_device",
    "rtn_institution",
    "rtn_patient_chars",
    "rtn_long_full_dates",
    "rtn_long_modified_dates",
    "clean_descriptors",
    "clean_structured",
    "clean_graphics",
    "options_source",
]

# --- option columns read from the innolitics extraction (tags as 8 hex digits, lower case) ---
DEVICE_K = set(
    """00181007 0018700a 00500020 3010002d 00181000 00181002 00181008 00181005 0016004f 00160050
00160051 0016004e 0018100b 30100043 00400241 00404030 00400242 00404028 00181004 00400011 00400001 00404027
00400010 00404025 00321020 00321021 300a0216 30080105 00081010 00185011 300a00b2 0018100a 00181009 00189371
00189373 00189367""".split()
)
INSTITUTION_K = set("00120060 00120081 00120030 00120031 00080081 00081040 00081041 00080082 00080080".split())
PATIENT_K = set("00102160 00101010 00100040 00102203 00101020 00101030 001021c0 001021a0 00102161 00102162".split())
PATIENT_C = set("00102110 00380500 00400012 00380050".split())
UIDS_NOT_K = {"04000100": "", "0040a124": "", "00081120": "X"}  # Digital Signature UID, UID, Referenced Patient Sequence
UIDS_K_SEQUENCES = set("00081140 00081111 00081110 00082112 00001000".split())  # + Affected SOP Instance UID (X, K)
DATES_NOT_OPTION = {"00100030", "00100032"}  # Patient's Birth Date / Time: no longitudinal option
DATES_EXTRA = {"00080201"}  # Timezone Offset From UTC (SH) travels with the dates
CLEAN_DESC = set(
    """00184000 00181400 001811bb 00189424 001021b0 00081084 00081080 00102110 300a00c3 300a00dd
00120072 00120051 00400310 00400280 300a02eb 3010000f 30100017 00180010 0018a003 0018937f 00082111 0016004b
00380040 300a0016 30100037 30100035 30100038 30100036 300a0676 300a0196 3010007f 300a0072 00209158 00084000
00204000 00402400 40080300 300a0742 300a0783 40080115 4008010b 22000002 00500021 0016002b 00102000 0018937b
00102180 00104000 00380500 00400254 300a000e 3010007b 30100081 30100061 00181030 300a0619 300a0623 300a067d
300a067c 300c0113 0040100a 00321030 3010005c 00402001 00401002 00321066 00321067 00400275 00321070 00401400
00321060 00189937 00189185 40084000 30060028 30060038 30060026 30060088 30060085 3010005a 300a0004 300a0002
300a0003 30100054 300a062a 30100056 00400007 0008103e 00380062 300a01b2 300a01a6 00400602 00400600 30060006
30060002 30060004 00324000 00081030 300a0608 30100077 3010007a 300a0734 30100033 30100034 00384000""".split()
)
CLEAN_STRUCT = set("00400555 0040a730 00400610".split())
CLEAN_GRAPH = set("50xxxxxx 00700001 60xx4000 60xx3000".split())
INNOLITICS_SEEN = (
    DEVICE_K | INSTITUTION_K | PATIENT_K | PATIENT_C | set(UIDS_NOT_K) | UIDS_K_SEQUENCES | CLEAN_DESC | CLEAN_STRUCT | CLEAN_GRAPH
)
_DESCRIPTIVE = re.compile(r"(Description|Comments?|Label|Notes?|Narrative|Text|Reason)\b", re.I)
_ROW = re.compile(r"\(\s*0x([0-9A-Fa-f]{4}),\s*0x([0-9A-Fa-f]{4})(?:,\s*0x([0-9A-Fa-f]{4}),\s*0x([0-9A-Fa-f]{4}))?,?\s*\),?\s*#\s*(.+)")


def parse_rows(source: str) -> list[tuple[str, str, str]]:
    """(tag, name, basic action) for every row of the extraction, masks as ``60xx4000``."""
    rows, action = [], None
    text = re.sub(r"\(\s*\n\s*(0x[0-9A-Fa-f]{4}),\s*\n\s*(0x[0-9A-Fa-f]{4}),\s*\n\s*\),", r"(\1, \2),", source)
    for line in text.splitlines():
        head = line.split("=")[0].strip()
        if head in CATEGORIES and "=" in line:
            action = CATEGORIES[head]
            continue
        match = _ROW.search(line)
        if match and action:
            group, element, gmask, _ = match.group(1, 2, 3, 4)
            tag = (group[:2] + "xx" if gmask else group) + (element if not gmask or element != "0000" else "xxxx")
            rows.append((tag.lower(), match.group(5).strip(), action))
    return rows


def vr_of(tag: str) -> str:
    from pydicom.datadict import dictionary_VR

    if "x" in tag:
        return ""
    try:
        return dictionary_VR(int(tag, 16))
    except KeyError:
        return ""


def options_for(tag: str, name: str, basic: str) -> dict[str, str]:
    vr = vr_of(tag)
    known = tag in INNOLITICS_SEEN
    opts = dict.fromkeys(COLUMNS[3:-1], "")
    if (vr in ("DA", "DT", "TM") or tag in DATES_EXTRA) and tag not in DATES_NOT_OPTION:
        opts["rtn_long_full_dates"], opts["rtn_long_modified_dates"] = "K", "C"
    if "U" in basic or tag in UIDS_K_SEQUENCES:
        opts["rtn_uids"] = "K"
    if tag in UIDS_NOT_K:
        opts["rtn_uids"] = UIDS_NOT_K[tag]
    if tag in DEVICE_K:
        opts["rtn_device"] = "K"
    if tag in INSTITUTION_K:
        opts["rtn_institution"] = "K"
    if tag in PATIENT_K:
        opts["rtn_patient_chars"] = "K"
    if tag in PATIENT_C:
        opts["rtn_patient_chars"] = "C"
    if tag in CLEAN_DESC or (not known and vr in ("LO", "ST", "LT", "UT", "SH", "UC") and _DESCRIPTIVE.search(name)):
        opts["clean_descriptors"] = "C"
    if tag in CLEAN_STRUCT:
        opts["clean_structured"] = "C"
    if tag in CLEAN_GRAPH:
        opts["clean_graphics"] = "C"
    opts["options_source"] = "innolitics" if known or _in_2020(tag) else "rule"
    return opts


_OLD: set[str] = set()


def _in_2020(tag: str) -> bool:
    return tag in _OLD


def main(extraction: Path, old_json: Path | None = None) -> None:
    if old_json is not None and old_json.is_file():
        import json

        _OLD.update(row["id"] for row in json.loads(old_json.read_text()))
    rows = parse_rows(extraction.read_text())
    lines = [
        "# DICOM PS3.15 Annex E, Table E.1-1: Application Level Confidentiality Profile Attributes",
        "# edition: 2026c (rows and Basic Profile actions)",
        "# rows/basic: dicom-anonymizer 2.1.0 (PyPI; KitwareMedical/dicom-anonymizer, BSD), dicomfields_2026c.py",
        "# options (options_source=innolitics): innolitics/dicom-standard confidentiality_profile_attributes.json @0d01bf11",
        "# options (options_source=rule): derived from the standard's regularities, see build_table.py",
        "# plus one row the extractions give as prose: private attributes (odd groups), X, Retain Safe Private C",
        "\t".join(COLUMNS),
    ]
    seen = set()
    for tag, name, basic in sorted(rows):
        if tag in seen:
            raise SystemExit(f"duplicate row {tag}")
        seen.add(tag)
        opts = options_for(tag, name, basic)
        lines.append("\t".join([tag, name, basic] + [opts[c] for c in COLUMNS[3:]]))
    private = dict.fromkeys(COLUMNS, "")
    private.update(tag="private", name="Private attributes (odd groups)", basic="X", rtn_safe_private="C", options_source="innolitics")
    lines.append("\t".join(private[c] for c in COLUMNS))
    (HERE / "annex_e.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(rows)} rows + private -> {HERE / 'annex_e.tsv'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)

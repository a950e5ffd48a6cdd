"""De-identification engine: every Annex E row mapped and applied, options, keyed UIDs and dates, quarantine."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.datadict import dictionary_VR, keyword_for_tag  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from voxpipe_plugins.deid.engine import (  # noqa: E402
    AlreadyDeidentified,
    Deidentifier,
    DeidError,
    DeidOptions,
    Quarantined,
)
from voxpipe_plugins.deid.pseudonyms import Pseudonyms, shift_date  # noqa: E402
from voxpipe_plugins.deid.table import BASIC_ACTIONS, OPTION_COLUMNS, load_table  # noqa: E402

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
MARK = "PHIMKROW"


# --- the table ---------------------------------------------------------------------------
def test_table_has_every_row_mapped_to_an_action():
    table = load_table()
    rows = list(table.rows.values()) + list(table.masks)
    assert len(rows) >= 600, "the current edition of Table E.1-1 has over 600 rows"
    assert any("edition" in line for line in table.header) and any("dicom-anonymizer" in line for line in table.header)
    unmapped = [r.tag for r in rows if r.basic not in BASIC_ACTIONS]
    assert not unmapped, f"rows without a known Basic Profile action: {unmapped[:10]}"
    bad_options = [(r.tag, c, r.options[c]) for r in rows for c in OPTION_COLUMNS if r.options[c] not in ("", "K", "C", "X")]
    assert not bad_options, bad_options[:10]
    assert {r.basic for r in rows} >= {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
    assert table.private.basic == "X" and table.private.options["rtn_safe_private"] == "C"
    assert {r.options_source for r in rows} <= {"innolitics", "rule"}
    # facts of the standard, spot-checked
    assert table.lookup(0x00100010).basic == "Z" and table.lookup(0x0020000D).basic == "U"
    assert table.lookup(0x60023000).tag == "60xx3000", "overlay groups are matched by mask"
    assert table.lookup(0x00080020).options["rtn_long_modified_dates"] == "C"
    assert table.lookup(0x00180010 + 0x0FF0).options["rtn_device"] == "K"  # (0018,1000) Device Serial Number


def _value_for(vr: str):
    return {
        "PN": f"{MARK}^NAME",
        "LO": MARK,
        "SH": MARK,
        "LT": MARK,
        "ST": MARK,
        "UT": MARK,
        "UC": MARK,
        "CS": MARK,
        "AE": MARK,
        "UR": f"http://{MARK.lower()}.example",
        "DA": "20200101",
        "DT": "20200101120000",
        "TM": "120000",
        "UI": "1.2.826.0.1.3680043.2.1143.4242",
        "IS": "7",
        "DS": "7.5",
        "AS": "045Y",
        "US": 7,
        "SS": 7,
        "UL": 7,
        "SL": 7,
        "FL": 7.5,
        "FD": 7.5,
        "AT": 0x00100010,
        "OB": MARK.encode(),
        "OW": MARK.encode(),
        "UN": MARK.encode(),
        "OF": b"\0" * 8,
        "OD": b"\0" * 8,
        "OL": b"\0" * 8,
        "OV": b"\0" * 8,
        "SV": 7,
        "UV": 7,
    }[vr]


def _table_dataset():
    """One data set holding every table row that has a dictionary entry, each with a VR-appropriate value."""
    ds = Dataset()
    placed = {}
    for row in load_table().rows.values():
        tag = int(row.tag, 16)
        if tag >> 16 in (0x0000, 0x0002):
            continue
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue
        if vr == "SQ":
            item = Dataset()
            item.PatientName = f"{MARK}^SEQ"
            ds.add_new(tag, vr, Sequence([item]))
        else:
            ds.add_new(tag, vr, _value_for(vr))
        placed[tag] = (row, vr)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds, placed


def _contains_mark(value) -> bool:
    if isinstance(value, Sequence):
        return any(_contains_mark(e.value) for item in value for e in item)
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return MARK in text or MARK.lower() in text


@pytest.mark.parametrize("dates", ["off", "modified"])
def test_every_table_row_is_applied_as_the_standard_says(dates):
    ds, placed = _table_dataset()
    assert len(placed) > 550
    original = {tag: ds[tag].value for tag in placed}
    Deidentifier(KEY, DeidOptions(retain_long_dates=dates)).apply(ds)
    problems = []
    for tag, (row, vr) in placed.items():
        if tag in (0x00120062, 0x00120063, 0x00120064, 0x00280303, 0x00080018, 0x00080016):
            continue  # written by the engine itself
        action = row.action(DeidOptions(retain_long_dates=dates).enabled())
        present = tag in ds
        name = keyword_for_tag(tag) or row.tag
        if action == "X" and present:
            problems.append(f"{name}: X but still present")
        if present and _contains_mark(ds[tag].value):
            problems.append(f"{name}: {action} kept the identifying value")
        if action == "U" and (not present or not str(ds[tag].value).startswith("2.25.")):
            problems.append(f"{name}: U but not remapped into 2.25.")
        if action == "Z" and (not present or ds[tag].value not in ("", None, b"") and not isinstance(ds[tag].value, Sequence)):
            problems.append(f"{name}: Z but not empty")
        if action == "D" and vr not in ("SQ",) and present and ds[tag].value == original[tag] and vr not in ("TM",):
            problems.append(f"{name}: D but unchanged")
        if action == "C" and vr == "DA" and (not present or ds[tag].value == original[tag]):
            problems.append(f"{name}: dates option C but not shifted")
    assert not problems, "\n".join(problems[:20])


# --- attributes the table does not name: by value representation ----------------------------
def _small_ct(**extra) -> Dataset:
    ds = Dataset()
    meta = FileMetaDataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "Doe^Jane", "MRN123"
    ds.StudyDate = "20190314"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def test_unlisted_public_attributes_are_judged_by_vr():
    ds = _small_ct(
        Manufacturer="ACME",
        ContrastBolusRoute="said by Jane Doe",
        KVP="120",
        BodyPartExamined="CHEST",
        ReferencedSOPClassUID=CTImageStorage,
        DateOfLastCalibration="20180101",
        TimeOfLastCalibration="101010",
    )
    ds.add_new(0x00181016, "LO", "Jane's scanner shop")  # Secondary Capture Device Manufacturer: free text
    ds.add_new(0x00209161 - 0x0100, "UI", "1.2.3.4.5.6")  # (0020,9061)? an unlisted UI that is no registered UID
    Deidentifier(KEY, DeidOptions(retain_long_dates="modified")).apply(ds)
    assert ds.Manufacturer == "ACME" and ds.KVP == 120 and ds.BodyPartExamined == "CHEST"
    assert "ContrastBolusRoute" not in ds and 0x00181016 not in ds
    assert ds.ReferencedSOPClassUID == CTImageStorage, "registered UIDs (classes) are kept"
    assert str(ds[0x00209061].value).startswith("2.25."), "an unregistered UID is remapped"
    assert ds.DateOfLastCalibration != "20180101" and len(ds.DateOfLastCalibration) == 8
    ds2 = _small_ct(DateOfLastCalibration="20180101", TimeOfLastCalibration="101010")
    Deidentifier(KEY, DeidOptions(retain_long_dates="off")).apply(ds2)
    assert "DateOfLastCalibration" not in ds2 and "TimeOfLastCalibration" not in ds2


# --- keyed UIDs and dates ------------------------------------------------------------------
def test_uids_are_keyed_consistent_and_valid():
    p, q = Pseudonyms(KEY), Pseudonyms(OTHER_KEY)
    uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    assert p.uid(uid) == Pseudonyms(KEY).uid(uid), "same key, same UID: across runs"
    assert p.uid(uid) != q.uid(uid), "another key gives other UIDs"
    assert p.uid(uid).startswith("2.25.") and len(p.uid(uid)) <= 64
    assert all(part.isdigit() and (part == "0" or not part.startswith("0")) for part in p.uid(uid).split("."))


def test_dates_shift_by_one_keyed_offset_per_patient_and_keep_intervals():
    a = _small_ct(StudyDate="20190314", SeriesDate="20190320", AcquisitionDateTime="20190320101500.5+0100")
    b = _small_ct(StudyDate="20190314")
    b.PatientID = "OTHER"
    engine = Deidentifier(KEY, DeidOptions())
    engine.apply(a)
    engine.apply(b)
    days = Pseudonyms(KEY).day_offset("MRN123\x00")
    assert a.StudyDate == shift_date("20190314", days) and a.SeriesDate == shift_date("20190320", days)
    assert a.AcquisitionDateTime.endswith("101500.5+0100") and a.AcquisitionDateTime[:8] == shift_date("20190320", days)
    assert 1 <= days <= 3650 and a.StudyDate != "20190314"
    assert a.LongitudinalTemporalInformationModified == "MODIFIED"
    assert b.StudyDate != a.StudyDate or Pseudonyms(KEY).day_offset("OTHER\x00") == days
    bad = _small_ct(StudyDate="notadate", SeriesDate="20191399")
    Deidentifier(KEY, DeidOptions()).apply(bad)
    assert "StudyDate" not in bad and "SeriesDate" not in bad, "malformed dates cannot be shifted, so they go"
    full = _small_ct(StudyDate="20190314")
    Deidentifier(KEY, DeidOptions(retain_long_dates="full")).apply(full)
    assert full.StudyDate == "20190314" and full.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_rerun_on_own_output_is_refused_never_shifted_twice():
    ds = _small_ct()
    Deidentifier(KEY, DeidOptions()).apply(ds)
    once = ds.StudyDate
    with pytest.raises(AlreadyDeidentified):
        Deidentifier(KEY, DeidOptions()).apply(ds)
    assert ds.StudyDate == once
    other_tool = _small_ct(
        PatientIdentityRemoved="YES", LongitudinalTemporalInformationModified="MODIFIED", DeidentificationMethod="another tool"
    )
    Deidentifier(KEY, DeidOptions()).apply(other_tool)
    assert other_tool.StudyDate == "20190314", "dates another tool already modified are not shifted again"


# --- marks, meta, private, nesting ---------------------------------------------------------
def test_marks_file_meta_and_preamble():
    ds = _small_ct()
    ds.preamble = b"Jane Doe".ljust(128, b"\0")
    ds.file_meta.SourceApplicationEntityTitle = "JANESPC"
    old_sop = ds.SOPInstanceUID
    Deidentifier(KEY, DeidOptions(retain_patient_chars=True)).apply(ds)
    assert ds.PatientIdentityRemoved == "YES" and "VoxPipe" in ds.DeidentificationMethod[0]
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and "113108" in codes and "113107" in codes
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == Pseudonyms(KEY).uid(old_sop)
    assert "SourceApplicationEntityTitle" not in ds.file_meta and ds.preamble == b"\0" * 128
    assert ds.PatientName == "" and ds.PatientID.startswith("ANON") and "MRN123" not in ds.PatientID


def test_private_tags_removed_unless_listed_safe():
    ds = _small_ct()
    block = ds.private_block(0x0019, "ACME HEADER", create=True)
    block.add_new(0x0C, "DS", "1000")
    block.add_new(0x10, "LO", "Jane Doe")
    kept = copy.deepcopy(ds)
    Deidentifier(KEY, DeidOptions()).apply(ds)
    assert not any(Tag_is_private(t) for t in ds.keys())
    Deidentifier(KEY, DeidOptions(safe_private=("0019,ACME HEADER,0C",))).apply(kept)
    assert kept[0x0019100C].value == 1000 and 0x00191010 not in kept and kept[0x00190010].value == "ACME HEADER"


def Tag_is_private(tag) -> bool:
    return (int(tag) >> 16) % 2 == 1


def test_sequences_at_any_depth_and_the_depth_cap():
    ds = _small_ct()
    current = ds
    for _ in range(10):
        item = Dataset()
        item.PatientName = "Doe^Jane"
        item.ReferencedSOPInstanceUID = "1.2.3.4"
        current.ReferencedImageSequence = Sequence([item])
        current = item
    Deidentifier(KEY, DeidOptions()).apply(ds)
    depth, current = 0, ds
    while "ReferencedImageSequence" in current:
        current = current.ReferencedImageSequence[0]
        depth += 1
        assert "PatientName" in current and current.PatientName == ""
        assert current.ReferencedSOPInstanceUID == Pseudonyms(KEY).uid("1.2.3.4")
    assert depth == 10
    deep = _small_ct()
    current = deep
    for _ in range(20):
        item = Dataset()
        current.ReferencedImageSequence = Sequence([item])
        current = item
    with pytest.raises(DeidError, match="nested deeper"):
        Deidentifier(KEY, DeidOptions(max_depth=16)).apply(deep)


def test_retain_and_clean_options():
    ds = _small_ct(
        PatientSex="F",
        PatientAge="049Y",
        DeviceSerialNumber="SN1",
        InstitutionName="St Elsewhere",
        SeriesDescription="AXIAL Doe 20190314 MRN123",
        StationName="CT01",
    )
    uid = ds.StudyInstanceUID
    Deidentifier(
        KEY, DeidOptions(retain_patient_chars=True, retain_device=True, retain_institution=True, retain_uids=True, clean_descriptors=True)
    ).apply(ds)
    assert (ds.PatientSex, ds.PatientAge, ds.DeviceSerialNumber, ds.InstitutionName, ds.StationName) == (
        "F",
        "049Y",
        "SN1",
        "St Elsewhere",
        "CT01",
    )
    assert ds.StudyInstanceUID == uid
    assert ds.SeriesDescription == "AXIAL", ds.SeriesDescription
    plain = _small_ct(PatientSex="F", PatientAge="049Y", SeriesDescription="AXIAL Doe")
    Deidentifier(KEY, DeidOptions()).apply(plain)
    assert plain.PatientSex == "" and "PatientAge" not in plain and "SeriesDescription" not in plain


# --- burned-in annotation ---------------------------------------------------------------------
def _image(modality="US", flag=None, sop="1.2.840.10008.5.1.4.1.1.6.1") -> Dataset:
    ds = _small_ct(Modality=modality)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop
    if flag is not None:
        ds.BurnedInAnnotation = flag
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 8, 8, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(64, dtype=np.uint16) + 100).tobytes()
    return ds


@pytest.mark.parametrize(
    "modality,flag,sop,refused",
    [
        ("US", None, "1.2.840.10008.5.1.4.1.1.6.1", True),
        ("OT", None, "1.2.840.10008.5.1.4.1.1.7", True),
        ("CT", "YES", CTImageStorage, True),
        ("US", "NO", "1.2.840.10008.5.1.4.1.1.6.1", False),
        ("CT", None, CTImageStorage, False),
    ],
)
def test_burned_in_annotation_is_quarantined_with_a_reason(modality, flag, sop, refused):
    ds = _image(modality, flag, sop)
    if refused:
        with pytest.raises(Quarantined, match="BurnedInAnnotation"):
            Deidentifier(KEY, DeidOptions()).apply(ds)
    else:
        Deidentifier(KEY, DeidOptions()).apply(ds)


def test_pixel_region_blanking_when_asked():
    ds = _image("US", "YES")
    Deidentifier(KEY, DeidOptions(burned_in="blank", blank_regions=((0, 0, 2, 8),))).apply(ds)
    pixels = ds.pixel_array
    assert (pixels[:2] == pixels.min()).all() and (pixels[2:] > 100).all()
    assert ds.BurnedInAnnotation == "NO" and "113101" in [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]


# --- the command --------------------------------------------------------------------------------
def _write_series(folder: Path, study_uid: str, frame_uid: str, n: int = 3, patient="Doe^Jane") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    sops = [generate_uid() for _ in range(n)]
    paths = []
    for k in range(n):
        ds = _small_ct(PatientName=patient)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sops[k]
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CTImageStorage, sops[(k + 1) % n]
        ds.ReferencedImageSequence = Sequence([ref])
        ds.Rows = ds.Columns = 4
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, "MONOCHROME2", 16, 16, 15
        ds.PixelRepresentation, ds.PixelData = 0, np.zeros(16, np.uint16).tobytes()
        path = folder / f"im{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _read_all(folder: Path) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))]


def test_two_series_in_separate_runs_and_orders_share_study_and_frame_uids(cli, tmp_path):
    study, frame = generate_uid(), generate_uid()
    a, b = tmp_path / "in" / "a", tmp_path / "in" / "b"
    _write_series(a, study, frame)
    _write_series(b, study, frame)
    key = tmp_path / "keys" / "deid.key"
    outputs = {}
    for name, order in (("ab", (a, b)), ("ba", (b, a))):
        for i, series in enumerate(order):
            result = cli("deid", series, tmp_path / f"out-{name}-{i}", "--key", key, *(() if key.exists() else ("--new-key",)))
            assert result.exit_code == 0, result
        outputs[name] = _read_all(tmp_path / f"out-{name}-0") + _read_all(tmp_path / f"out-{name}-1")
    studies = {ds.StudyInstanceUID for name in outputs for ds in outputs[name]}
    frames = {ds.FrameOfReferenceUID for name in outputs for ds in outputs[name]}
    assert len(studies) == 1 and len(frames) == 1 and studies.pop().startswith("2.25.")
    assert sorted(ds.SOPInstanceUID for ds in outputs["ab"]) == sorted(ds.SOPInstanceUID for ds in outputs["ba"])
    sops = {ds.SOPInstanceUID for ds in outputs["ab"]}
    assert all(ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID in sops for ds in outputs["ab"]), "references still resolve"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and len(bytes.fromhex(key.read_text().strip())) == 32
    other = cli("deid", "-i", a, "-o", tmp_path / "out-other", "--key", tmp_path / "keys" / "other.key", "--new-key")
    assert other.exit_code == 0
    assert _read_all(tmp_path / "out-other")[0].StudyInstanceUID not in {ds.StudyInstanceUID for ds in outputs["ab"]}


def test_deid_command_refuses_a_key_inside_the_output_and_its_own_output(cli, tmp_path):
    _write_series(tmp_path / "in", generate_uid(), generate_uid())
    inside = cli("deid", tmp_path / "in", tmp_path / "out", "--key", tmp_path / "out" / "k.key", "--new-key")
    assert inside.exit_code == 2 and len(inside.error_lines) == 1 and "outside" in inside.stderr
    assert not (tmp_path / "out" / "k.key").exists()
    first = cli("deid", tmp_path / "in", tmp_path / "out", "--key", tmp_path / "k.key", "--new-key")
    assert first.exit_code == 0 and "de-identified 3 files in 1 series" in first.stdout
    dates = {ds.StudyDate for ds in _read_all(tmp_path / "out")}
    again = cli("deid", tmp_path / "out", tmp_path / "out2", "--key", tmp_path / "k.key")
    assert again.exit_code == 1 and "already de-identified" in again.stdout
    assert not list((tmp_path / "out2").rglob("*.dcm")), "nothing is written twice-shifted"
    assert {ds.StudyDate for ds in _read_all(tmp_path / "out")} == dates
    mode = stat.S_IMODE(os.stat(next((tmp_path / "out").rglob("*.dcm"))).st_mode)
    assert mode == 0o600 and stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o700


def test_deid_stage_options_are_validated(cli, write_config):
    config = write_config(
        "version: 1\nname: x\nstages:\n  - use: load.dicom\n  - use: deid.dicom\n"
        "    with: {safe_private: ['0018,ACME,10'], folder: ../../x, blank_regions: [[5, 0, 1, 4]]}\n"
    )
    result = cli("validate", config)
    assert result.exit_code == 2 and len(result.error_lines) == 3, result.stderr


def test_empty_values_stay_empty():
    ds = _small_ct(StudyDate="", AccessionNumber="")
    ds.add_new(0x00209161, "UI", "")  # Concatenation UID, U
    ds.add_new(0x00209061, "UI", None)  # unlisted UI, empty
    Deidentifier(KEY, DeidOptions()).apply(ds)
    assert ds[0x00209161].value in ("", None) and ds.StudyDate in ("", None) and ds[0x00209061].value in ("", None)


def test_clean_graphics_keeps_overlays_and_the_basic_profile_removes_them():
    def with_overlay():
        ds = _small_ct()
        ds.add_new(0x60003000, "OW", bytes(8))  # Overlay Data
        ds.add_new(0x60004000, "LT", "Doe overlay note")  # Overlay Comments
        return ds

    plain, kept = with_overlay(), with_overlay()
    Deidentifier(KEY, DeidOptions()).apply(plain)
    assert 0x60003000 not in plain and 0x60004000 not in plain
    Deidentifier(KEY, DeidOptions(clean_graphics=True)).apply(kept)
    assert kept[0x60003000].value == bytes(8) and "Doe" not in str(kept[0x60004000].value)
    assert "113103" in [i.CodeValue for i in kept.DeidentificationMethodCodeSequence]


def test_clean_structured_keeps_sr_text_without_identifying_values():
    def report():
        ds = _small_ct()
        item = Dataset()
        item.ValueType, item.TextValue = "TEXT", "Nodule seen, Doe follow-up on 20190314"
        item.PersonName = "Doe^Jane"
        ds.ContentSequence = Sequence([item])
        return ds

    plain, cleaned = report(), report()
    Deidentifier(KEY, DeidOptions()).apply(plain)
    assert "TextValue" not in plain.ContentSequence[0]
    Deidentifier(KEY, DeidOptions(clean_structured=True)).apply(cleaned)
    text = cleaned.ContentSequence[0].TextValue
    assert "Nodule seen" in text and "Doe" not in text and "2019" not in text
    assert cleaned.ContentSequence[0].PersonName == "ANONYMOUS"


def test_listing_is_private_and_kept_out_of_the_output(cli, tmp_path):
    _write_series(tmp_path / "in", generate_uid(), generate_uid())
    refused = cli(
        "deid", tmp_path / "in", tmp_path / "out", "--key", tmp_path / "k.key", "--new-key", "--list", tmp_path / "out" / "map.tsv"
    )
    assert refused.exit_code == 2 and "outside" in refused.stderr
    ok = cli(
        "deid", "-i", tmp_path / "in", "-o", tmp_path / "out", "--key", tmp_path / "k.key", "--new-key", "--list", tmp_path / "map.tsv"
    )
    assert ok.exit_code == 0
    lines = (tmp_path / "map.tsv").read_text().splitlines()
    assert len(lines) == 4 and all(str(tmp_path / "out") in line for line in lines[1:])
    assert stat.S_IMODE(os.stat(tmp_path / "map.tsv").st_mode) == 0o600


def test_stage_refuses_a_key_inside_the_output(cli, tmp_path, write_config):
    _write_series(tmp_path / "in", generate_uid(), generate_uid())
    config = write_config("version: 1\nname: x\nstages:\n  - use: load.dicom\n  - use: deid.dicom\n    with: {key_file: out/k.key}\n")
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out", "--workers", "0")
    assert result.exit_code == 1 and "inside the output folder" in result.stderr + result.stdout
    assert not (tmp_path / "out" / "k.key").exists()


def test_stage_after_a_dicom_writer_deidentifies_its_output_in_place(cli, tmp_path, write_config):
    from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series

    write_series(tmp_path / "in", ct_like_volume(shape=(6, 32, 32)), SeriesSpec(patient_name="Doe^Jane"))
    # identity: source, because deid.dicom comes after the writer and de-identifies its output in place
    config = write_config(
        f"version: 1\nname: x\nstages:\n  - use: load.dicom\n  - use: segment.otsu\n  - use: write.dicom_seg\n"
        f"    with: {{identity: source}}\n  - use: deid.dicom\n    with: {{key_file: {tmp_path / 'k.key'}}}\n"
    )
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out", "--workers", "0")
    assert result.exit_code == 0, result.stderr
    case = next((tmp_path / "out").glob("case-*"))
    seg = pydicom.dcmread(case / "segmentation.dcm")
    sources = {ds.SOPInstanceUID: ds for ds in _read_all(case / "dicom")}
    refs = [i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence]
    assert seg.PatientIdentityRemoved == "YES" and str(seg.PatientName) == "" and refs and set(refs) <= set(sources)
    assert seg.StudyInstanceUID == next(iter(sources.values())).StudyInstanceUID


# --- values that fail their VR are cleaned, not copied ------------------------------------------
GRAMMAR_CASES = {  # VR: (a valid value, malformed values carrying a marker)
    "DS": ("7.5", ["PHIMKDS1", "7.5PHIMKDS2", "1e3 PHIMK"]),
    "IS": ("7", ["PHIMKIS1", "7.5PHIMK"]),
    "DA": ("20200101", ["PHIMKDA1", "2020PHIMK", "20201340"]),
    "TM": ("120000", ["PHIMKTM1", "12PHIMK", "256100"]),
    "DT": ("20200101120000", ["PHIMKDT1", "20200101PHIMK", "20201301"]),
    "AS": ("045Y", ["PHIMK", "45 Y"]),
    "UI": ("1.2.840.10008.1.2.1", ["PHIMK.1.2", "1.2.PHIMK", "1.02.3"]),
    "CS": ("ORIGINAL", ["phimk lower", "PHIMK-WITH-DASHES", "PHIMK_TOO_LONG_FOR_A_CS"]),
    "AE": ("STATION1", ["PHIMK_TOO_LONG_FOR_AN_AE"]),
    "SH": ("SHORT", ["PHIMK_WAY_TOO_LONG_FOR_SH"]),
    "LO": ("LONG", ["PHIMK" + "x" * 70]),
}
OPTION_SETS = {
    "basic": DeidOptions(retain_long_dates="off"),
    "modified dates": DeidOptions(),
    "full dates": DeidOptions(retain_long_dates="full"),
    "retain everything": DeidOptions(
        retain_long_dates="full",
        retain_patient_chars=True,
        retain_device=True,
        retain_institution=True,
        retain_uids=True,
        clean_descriptors=True,
    ),
}


def _raw(tag: int, vr: str, text: str):
    from pydicom.dataelem import RawDataElement

    data = text.encode() + (b" " if len(text) % 2 else b"")
    return RawDataElement(pydicom.tag.Tag(tag), vr, len(data), data, 0, False, True)


def _vr_dataset(vr: str, value: str) -> tuple[Dataset, list[int]]:
    """Every public, non-retired attribute of ``vr`` with ``value`` (stored raw, as a file would hold it)."""
    from pydicom.datadict import DicomDictionary

    ds = Dataset()
    ds.PatientID = "P1"
    tags = [
        tag
        for tag, entry in DicomDictionary.items()
        if entry[0] == vr
        and entry[3] != "Retired"
        and tag >> 16 not in (0x0002,)
        and (tag >> 16) % 2 == 0
        and tag not in (0x00100020,)
        and "xx" not in f"{tag:08x}"
    ]
    for tag in tags:
        ds._dict[pydicom.tag.Tag(tag)] = _raw(tag, vr, value)
    return ds, tags


@pytest.mark.parametrize("vr", sorted(GRAMMAR_CASES))
def test_kept_values_that_fail_their_vr_are_removed_never_copied(vr):
    """For every attribute of the VR, under every option set: where a valid value is kept (copied, shifted or
    remapped), a malformed one with a marker is removed; the marker is nowhere in the result."""
    from voxpipe_plugins.deid.vr import valid

    good, malformed = GRAMMAR_CASES[vr]
    assert valid(vr, good) and not any(valid(vr, bad) for bad in malformed)
    kept_somewhere = 0
    for name, options in OPTION_SETS.items():
        ds, tags = _vr_dataset(vr, good)
        Deidentifier(KEY, options).apply(ds)
        copied = [t for t in tags if t in ds and str(ds[t].value).strip() == good]  # kept as it was
        kept_somewhere += len(copied)
        for bad in malformed:
            ds, _ = _vr_dataset(vr, bad)
            Deidentifier(KEY, options).apply(ds)
            leaks = [f"{t:08x}" for t in tags if t in ds and "PHIMK" in str(ds[t].value).upper()]
            assert not leaks, (name, bad, leaks[:10])
            assert "phimk" not in str(ds).lower(), (name, bad)
            assert all(valid(vr, ds[t].value) for t in tags if t in ds), (name, bad, "removed or replaced, never copied")
            assert not [t for t in copied if t in ds and str(ds[t].value).strip() == bad], (name, bad, "copied")
    assert kept_somewhere > 0, f"no {vr} attribute is ever copied: the test would prove nothing"


def test_malformed_values_in_sequences_are_removed_too():
    item = Dataset()
    item._dict[pydicom.tag.Tag(0x00180050)] = _raw(0x00180050, "DS", "PHIMKSEQ")  # SliceThickness, unlisted: kept when valid
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "T-1", "SRT", "x"
    ds = Dataset()
    ds.PatientID = "P1"
    ds.ContrastBolusAgentSequence = Sequence([Dataset()])
    ds.ContrastBolusAgentSequence[0].ContrastBolusAdministrationRouteSequence = Sequence([item])
    Deidentifier(KEY).apply(ds)
    inner = ds.ContrastBolusAgentSequence[0].ContrastBolusAdministrationRouteSequence[0]
    assert "SliceThickness" not in inner and inner.CodeValue == "T-1" and "PHIMK" not in str(ds)


def test_voxpipe_deid_cleans_text_in_slice_thickness(cli, tmp_path):
    """The issue's case: `voxpipe deid` on a file whose SliceThickness holds text."""
    from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series

    paths = write_series(tmp_path / "in", ct_like_volume((2, 8, 8)), SeriesSpec())
    for path in paths:
        ds = pydicom.dcmread(path)
        ds._dict[pydicom.tag.Tag(0x00180050)] = _raw(0x00180050, "DS", "PHIMKST Doe")
        ds.save_as(path)
    result = cli("deid", tmp_path / "in", tmp_path / "out", "--key", tmp_path / "k.key", "--new-key")
    assert result.exit_code == 0, result.stderr
    for path in (tmp_path / "out").rglob("*.dcm"):
        assert b"PHIMK" not in path.read_bytes() and "SliceThickness" not in pydicom.dcmread(path)
    assert "PHIMK" not in result.stdout + result.stderr


@pytest.mark.parametrize("form", ["positional", "options"])
def test_deid_refuses_a_missing_key_unless_new_key(cli, tmp_path, form):
    """A typo in --key used to create a fresh key silently: unrelated pseudonyms, no error."""
    _write_series(tmp_path / "in", generate_uid(), generate_uid())
    io = (tmp_path / "in", tmp_path / "out") if form == "positional" else ("-i", tmp_path / "in", "-o", tmp_path / "out")
    key = tmp_path / "keys" / "k.key"
    for missing in (key, tmp_path / "keys" / "k.kye", tmp_path / "nowhere" / "k.key"):
        refused = cli("deid", *io, "--key", missing)
        assert refused.exit_code == 2 and len(refused.error_lines) == 1 and "--new-key" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and not missing.exists() and not (tmp_path / "out").exists()
    created = cli("deid", *io, "--key", key, "--new-key")
    assert created.exit_code == 0 and key.exists() and "created a new key" in created.stderr
    first_key = key.read_text()
    again = cli("deid", *io, "--key", key, "--new-key")
    assert again.exit_code == 2 and len(again.error_lines) == 1 and "already exists" in again.stderr
    assert key.read_text() == first_key and cli("deid", *io, "--key", key).exit_code == 0


def test_deid_input_and_output_as_options_or_arguments(cli, tmp_path):
    _write_series(tmp_path / "in", generate_uid(), generate_uid())
    key = tmp_path / "k.key"
    assert cli("deid", "-i", tmp_path / "in", "-o", tmp_path / "a", "--key", key, "--new-key").exit_code == 0
    assert cli("deid", tmp_path / "in", tmp_path / "b", "--key", key).exit_code == 0
    assert cli("deid", "--input", tmp_path / "in", "--output", tmp_path / "c", "--key", key).exit_code == 0
    names = [sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*.dcm")) for d in "abc"]
    assert names[0] == names[1] == names[2] and names[0]
    both = cli("deid", tmp_path / "in", tmp_path / "d", "-i", tmp_path / "other", "--key", key)
    assert both.exit_code == 2 and len(both.error_lines) == 1 and "once" in both.stderr
    none = cli("deid", "--key", key)
    assert none.exit_code == 2 and "-i/--input" in none.stderr

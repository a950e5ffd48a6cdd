"""DICOM SEG output: built and validated by highdicom, referencing the source series, read back exactly."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_enhanced, write_series

warnings.simplefilter("ignore")

CONFIG = """\
version: 1
name: seg
stages:
  - use: {loader}
  - use: segment.otsu
  - use: write.nifti
    with: {{keys: [label]}}
  - use: write.dicom_seg
    with: {{identity: {identity}}}
"""


@pytest.fixture(autouse=True)
def deid_key(tmp_path, monkeypatch):
    """The default `identity: deidentified` needs a key: a temporary one, never the user's ~/.config."""
    key = tmp_path / "keys" / "deid.key"
    monkeypatch.setenv("VOXPIPE_DEID_KEY_FILE", str(key))
    return key


@pytest.mark.parametrize("loader", ["load.dicom", "load.auto"])
def test_seg_references_source_and_reads_back(cli, tmp_path, loader):
    """`identity: source`: the SEG carries the source's study, frame of reference and instance UIDs."""
    import highdicom as hd

    volume = ct_like_volume((8, 32, 28), seed=3)
    spec = SeriesSpec(row_dir=(1, 0, 0), col_dir=(0, 0, -1), spacing=(0.8, 0.6, 2.0))  # coronal, non-square
    paths = write_series(tmp_path / "in", volume, spec)
    config = tmp_path / "seg.yaml"
    config.write_text(CONFIG.format(loader=loader, identity="source"))
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    [case] = json.loads((tmp_path / "out" / "manifest.json").read_text())["cases"]
    folder = tmp_path / "out" / case["case_id"]
    seg = hd.seg.segread(folder / "segmentation.dcm")
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == spec.series_uid
    assert seg.FrameOfReferenceUID == spec.frame_uid and seg.StudyInstanceUID == spec.study_uid
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in paths}
    label = np.asanyarray(nib.load(folder / "label.nii.gz").dataobj)  # (i, j, k) in sorted order
    headers = sorted(
        (pydicom.dcmread(p, stop_before_pixels=True) for p in paths),
        key=lambda d: np.dot(np.asarray(d.ImagePositionPatient, float), np.cross(spec.row_dir, spec.col_dir)),
    )
    uids = [d.SOPInstanceUID for d in headers]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True)
    np.testing.assert_array_equal(pixels, label.transpose(2, 1, 0))
    assert label.any() and len(sources) == 8
    assert seg.SegmentSequence[0].SegmentLabel == "foreground"


def test_seg_from_enhanced_multiframe(cli, tmp_path):
    import highdicom as hd

    volume = ct_like_volume((6, 24, 24), seed=4)
    order = [3, 0, 5, 1, 4, 2]
    write_enhanced(tmp_path / "in" / "enhanced.dcm", volume, SeriesSpec(), frame_order=order)
    config = tmp_path / "seg.yaml"
    config.write_text(CONFIG.format(loader="load.dicom", identity="source"))
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    [case] = json.loads((tmp_path / "out" / "manifest.json").read_text())["cases"]
    folder = tmp_path / "out" / case["case_id"]
    seg = hd.seg.segread(folder / "segmentation.dcm")
    label = np.asanyarray(nib.load(folder / "label.nii.gz").dataobj).transpose(2, 1, 0)  # sorted by position
    source_uid = pydicom.dcmread(tmp_path / "in" / "enhanced.dcm", stop_before_pixels=True).SOPInstanceUID
    stored = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=source_uid, source_frame_numbers=[f + 1 for f in range(6)], combine_segments=True, skip_overlap_checks=True
    )
    np.testing.assert_array_equal(stored, label[order])  # stored frame f holds the slice at sorted position order[f]


def test_seg_refuses_non_dicom_and_resampled_grids(cli, tmp_path):
    from tests.conftest import write_nifti

    write_nifti(tmp_path / "in" / "v.nii.gz", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    config = tmp_path / "seg.yaml"
    config.write_text(CONFIG.format(loader="load.auto", identity="source"))
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "needs a case loaded from DICOM" in result.stderr
    write_series(tmp_path / "dcm", ct_like_volume((8, 24, 24)), SeriesSpec())
    resampled = CONFIG.format(loader="load.dicom", identity="source").replace(
        "  - use: segment.otsu", "  - use: monai.Spacingd\n    with: {keys: [image], pixdim: [1.5, 1.5, 3.0]}\n  - use: segment.otsu"
    )
    config.write_text(resampled)
    result = cli("run", config, "-i", tmp_path / "dcm", "-o", tmp_path / "out2")
    assert result.exit_code == 1 and "does not match the source series grid" in result.stderr


DCIODVFY = __import__("shutil").which("dciodvfy")
EMPTY_STUDY_ID = "needed to build DICOMDIR - Study ID"
"""The one warning a de-identified SEG gets: the Basic Profile empties StudyID (action Z), as in its source."""


def dciodvfy_problems(path, allowed: tuple[str, ...] = ()) -> list[str]:
    """Errors and warnings of David Clunie's IOD validator, minus the ``allowed`` ones."""
    import subprocess

    check = subprocess.run([DCIODVFY, str(path)], check=False, capture_output=True, text=True, timeout=60)
    report = (check.stdout + check.stderr).splitlines()
    assert any(line.strip() == "Segmentation" for line in report), report[:5]
    problems = [line for line in report if line.startswith(("Error", "Warning")) and not any(a in line for a in allowed)]
    return problems + ([f"exit status {check.returncode}"] if check.returncode else [])


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
@pytest.mark.parametrize("identity", ["source", "deidentified"])
def test_seg_passes_the_dicom3tools_iod_validator(cli, tmp_path, identity):
    """David Clunie's dciodvfy checks the SEG against the standard's IOD and module tables
    (what viewers such as 3D Slicer rely on): no errors and no warnings, single- and multi-frame sources."""
    write_series(tmp_path / "in" / "axial", ct_like_volume((8, 32, 28), seed=3), SeriesSpec(spacing=(0.8, 0.6, 2.0)))
    write_enhanced(
        tmp_path / "in" / "enhanced" / "mf.dcm", ct_like_volume((6, 24, 24), seed=4), SeriesSpec(), frame_order=[3, 0, 5, 1, 4, 2]
    )
    config = tmp_path / "seg.yaml"
    config.write_text(CONFIG.format(loader="load.dicom", identity=identity))
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    segs = sorted((tmp_path / "out").glob("case-*/segmentation.dcm"))
    assert len(segs) == 2
    for seg in segs:
        problems = dciodvfy_problems(seg, (EMPTY_STUDY_ID,) if identity == "deidentified" else ())
        assert not problems, "\n".join(problems[:10])


# --- identity ------------------------------------------------------------------------------------
def _seg_of(cli, tmp_path, stages: str, source: Path, name: str):
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"version: 1\nname: {name}\nstages:\n  - use: load.dicom\n{stages}")
    result = cli("run", config, "-i", source, "-o", tmp_path / name)
    assert result.exit_code == 0, result.stderr
    [seg] = (tmp_path / name).glob("case-*/segmentation.dcm")
    return pydicom.dcmread(seg)


def _references(seg) -> list[str]:
    return sorted(i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence)


def test_default_seg_is_deidentified_and_keyed_like_deid_dicom(cli, tmp_path, deid_key):
    """Without deid.dicom, the default SEG carries no identity and the same pseudonyms as the deid.dicom route:
    patient ID, shifted study date, study / frame of reference UIDs and referenced instances, under one key."""
    spec = SeriesSpec(
        patient_name="Doe^Jane",
        extra={"PatientID": "MRN-4711", "AccessionNumber": "ACC-99", "InstitutionName": "St Example", "StudyID": "S-17"},
    )
    paths = write_series(tmp_path / "in", ct_like_volume((6, 24, 24), seed=5), spec)
    plain = _seg_of(cli, tmp_path, "  - use: segment.otsu\n  - use: write.dicom_seg\n", tmp_path / "in", "plain")
    routed = _seg_of(cli, tmp_path, "  - use: deid.dicom\n  - use: segment.otsu\n  - use: write.dicom_seg\n", tmp_path / "in", "routed")
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)
    for seg in (plain, routed):
        assert seg.PatientIdentityRemoved == "YES" and "VoxPipe" in str(seg.DeidentificationMethod)
        assert str(seg.PatientName) == "" and seg.PatientID.startswith("ANON") and seg.AccessionNumber == ""
        assert seg.StudyInstanceUID.startswith("2.25.") and seg.StudyInstanceUID != spec.study_uid
        assert seg.FrameOfReferenceUID.startswith("2.25.") and seg.StudyDate != source.StudyDate
        blob = seg.to_json()
        for value in (
            "Doe",
            "MRN-4711",
            "ACC-99",
            "St Example",
            "S-17",
            spec.study_uid,
            spec.frame_uid,
            spec.series_uid,
            source.SOPInstanceUID,
            source.StudyDate,
        ):
            assert value not in blob, value
    for keyword in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "StudyDate", "StudyTime"):
        assert plain.get(keyword) == routed.get(keyword), keyword
    assert _references(plain) == _references(routed) and len(_references(plain)) == 6
    deidentified = sorted(p for p in (tmp_path / "routed").glob("case-*/dicom/*.dcm"))
    assert set(_references(plain)) == {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in deidentified}
    history = json.loads(next((tmp_path / "plain").glob("case-*/case.json")).read_text())["history"]
    [step] = [h for h in history if h["op"] == "write.dicom_seg"]
    assert step["identity"] == "deidentified" and step["deidentified_here"] == 6 and len(step["key"]) == 12


def test_seg_source_identity_keeps_patient_and_study(cli, tmp_path):
    spec = SeriesSpec(patient_name="Doe^Jane", extra={"PatientID": "MRN-4711", "AccessionNumber": "ACC-99", "StudyID": "S-17"})
    write_series(tmp_path / "in", ct_like_volume((6, 24, 24), seed=5), spec)
    seg = _seg_of(cli, tmp_path, "  - use: segment.otsu\n  - use: write.dicom_seg\n    with: {identity: source}\n", tmp_path / "in", "src")
    assert (str(seg.PatientName), seg.PatientID, seg.AccessionNumber, seg.StudyID) == ("Doe^Jane", "MRN-4711", "ACC-99", "S-17")
    assert seg.StudyInstanceUID == spec.study_uid and seg.FrameOfReferenceUID == spec.frame_uid
    assert "PatientIdentityRemoved" not in seg


def test_seg_refuses_a_key_inside_the_output(cli, tmp_path, write_config):
    write_series(tmp_path / "in", ct_like_volume((4, 16, 16)), SeriesSpec())
    config = write_config(
        f"version: 1\nname: k\nstages:\n  - use: load.dicom\n  - use: segment.otsu\n"
        f"  - use: write.dicom_seg\n    with: {{key_file: {tmp_path / 'out' / 'deid.key'}}}\n"
    )
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code != 0 and "inside the output folder" in result.stderr
    assert not list((tmp_path / "out").rglob("*.dcm")) and not (tmp_path / "out" / "deid.key").exists()


# --- sources without optional attributes --------------------------------------------------------
OPTIONAL = (
    "SliceThickness",
    "SpacingBetweenSlices",
    "InstanceNumber",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "SeriesNumber",
    "Manufacturer",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "SeriesDate",
    "ContentDate",
    "ImageType",
    "SeriesDescription",
    "PatientPosition",
    "RescaleType",
    "AcquisitionNumber",
)


def _series_without(root: Path, drop: tuple[str, ...], enhanced: bool = False) -> list[Path]:
    volume = ct_like_volume((5, 20, 18), seed=6)
    spec = SeriesSpec(spacing=(0.8, 0.7, 2.5), extra={"SpacingBetweenSlices": "2.5", "PositionReferenceIndicator": "SN"})
    if enhanced:
        paths = [write_enhanced(root / "mf.dcm", volume, spec, frame_order=[2, 0, 4, 1, 3])]
    else:
        paths = write_series(root, volume, spec)
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword in drop:
            ds.pop(keyword, None)
            if enhanced and keyword == "SliceThickness":
                ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].pop(keyword, None)
        ds.save_as(path)
    return paths


def _write_seg(root: Path, identity: str):
    """load.dicom, a threshold and write.dicom_seg, in process; the case and the SEG path."""
    from voxpipe_plugins.io_dicom.loader import DicomLoader, discover
    from voxpipe_plugins.io_dicom.params import DicomLoadParams
    from voxpipe_plugins.io_dicom.seg_writer import DicomSegWriter

    [source] = discover(root / "in", DicomLoadParams()).cases
    out = root / "out"
    out.mkdir()
    case = DicomLoader()({"case_id": "c", "source": source, "output_dir": out, "history": []})
    image = case["image"]
    case["label"] = (image > float(image.float().mean())).to(__import__("torch").uint8)
    return DicomSegWriter(identity=identity)(case), out / "segmentation.dcm"


@pytest.mark.parametrize("identity", ["source", "deidentified"])
@pytest.mark.parametrize("drop", [(name,) for name in OPTIONAL] + [OPTIONAL], ids=list(OPTIONAL) + ["all"])
def test_seg_from_sources_without_optional_attributes(tmp_path, drop, identity):
    """Real exports lack attributes highdicom reads (SliceThickness above all): what the SEG needs comes from the
    geometry the loader measured, the SEG reads back exactly and (where installed) passes dciodvfy."""
    import highdicom as hd

    _series_without(tmp_path / "in", drop)
    case, path = _write_seg(tmp_path, identity)
    seg = hd.seg.segread(path)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(2.5) and [float(v) for v in measures.PixelSpacing] == [0.8, 0.7]
    assert seg.FrameOfReferenceUID and seg.NumberOfFrames >= 1
    label = np.asarray(case["label"][0]).transpose(2, 1, 0)
    volume = seg.get_volume(combine_segments=True)
    assert int(volume.array.sum()) == int(label.sum()) > 0
    if "FrameOfReferenceUID" in drop or "SliceThickness" in drop:
        assert any(w.startswith("write.dicom_seg: ") and "derived from the loaded series" in w for w in case["warnings"])
    if DCIODVFY:
        emptied = {"StudyID"} if identity == "deidentified" else set()  # the Basic Profile empties StudyID
        allowed = tuple(
            f"needed to build DICOMDIR - {re.sub(r'(?<=[a-z])(?=[A-Z])', ' ', keyword)}" for keyword in set(drop) | emptied
        )  # empty in the SEG because empty in its source
        assert not dciodvfy_problems(path, allowed)


def test_seg_from_enhanced_source_without_slice_thickness(tmp_path):
    import highdicom as hd

    _series_without(tmp_path / "in", ("SliceThickness",), enhanced=True)
    _, path = _write_seg(tmp_path, "source")
    measures = hd.seg.segread(path).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(2.5)
    if DCIODVFY:
        assert not dciodvfy_problems(path)


def test_seg_tolerates_slices_whose_orientation_differs_in_the_last_digits(tmp_path):
    """The loader accepts orientations within 1e-4; highdicom demands equal ones: the SEG uses the first slice's."""
    paths = _series_without(tmp_path / "in", ())
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = ["1", "0.00001", "0", "0", "1", "0"]
    ds.save_as(paths[2])
    _, path = _write_seg(tmp_path, "source")
    assert pydicom.dcmread(path).NumberOfFrames >= 1


@pytest.mark.parametrize("identity", ["source", "deidentified"])
def test_seg_from_sources_with_values_that_fail_their_vr(cli, tmp_path, identity):
    """A malformed PatientBirthDate (and its family: PN parts, DA, TM, DT, CS, DS with markers) made highdicom fail,
    quoting the value. The SEG is written with those attributes left empty, the warning names only keywords, and
    no marker is in any output or message."""
    from tests.test_case_errors import MALFORMED, MARK, write_malformed_series

    write_malformed_series(tmp_path / "in", (4, 16, 16), seed=8)
    config = tmp_path / "seg.yaml"
    config.write_text(CONFIG.format(loader="load.dicom", identity=identity))
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    [seg_path] = (tmp_path / "out").glob("case-*/segmentation.dcm")
    seg = pydicom.dcmread(seg_path)
    assert seg.PatientBirthDate == "" and seg.StudyTime == "" and seg.PatientSex == ""
    # a PACS copy keeps the name, and highdicom records the source's acquisition equipment (institution included)
    kept = {MALFORMED["PatientName"][:10], MALFORMED["InstitutionName"][:10]} if identity == "source" else set()
    blobs = [p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()] + [result.stdout.encode(), result.stderr.encode()]
    markers = [value[:10].encode() for value in MALFORMED.values() if value[:10] not in kept]
    assert not [m for b in blobs for m in markers if m.lower() in b.lower()]
    others = [b for b in blobs if b != seg_path.read_bytes()]
    assert not [b for b in others if MARK.lower().encode() in b.lower()], "messages, manifest and report quote nothing"
    if identity == "source":
        assert str(seg.PatientName) == MALFORMED["PatientName"]  # a name has no grammar: the PACS copy keeps it
        assert "PatientBirthDate" in result.stderr + (tmp_path / "out" / "manifest.json").read_text()

"""The PHI corpus: markers in 30+ places; after `voxpipe deid` and after a full `voxpipe run` with
de-identification in it, no marker is found in any output file (gzip members inflated), output
path, log record, stdout or stderr."""

from __future__ import annotations

import gzip
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pydicom = pytest.importorskip("pydicom")
from voxpipe_plugins.deid.synthetic import PREFIX, write_phi_corpus  # noqa: E402


@pytest.fixture
def corpus(tmp_path):
    markers = write_phi_corpus(tmp_path / "input")
    return tmp_path / "input", markers


def _blobs(root: Path) -> list[tuple[str, bytes]]:
    """Every file's bytes (and, for gzip files, the inflated bytes) plus every path under ``root``."""
    found = []
    for path in sorted(root.rglob("*")):
        found.append((f"path {path.relative_to(root)}", str(path.relative_to(root)).encode()))
        if path.is_file():
            data = path.read_bytes()
            found.append((str(path.relative_to(root)), data))
            if data[:2] == b"\x1f\x8b":
                found.append((f"{path.relative_to(root)} (inflated)", gzip.decompress(data)))
    return found


def _leaks(markers, blobs: list[tuple[str, bytes]]) -> list[str]:
    leaks = []
    for where, data in blobs:
        for marker in markers:
            for form in (marker.encode(), marker.encode("utf-16-le"), marker.lower().encode()):
                if form in data:
                    leaks.append(f"{marker} in {where}")
        if PREFIX.encode() in data and not any(marker.encode() in data for marker in markers):
            leaks.append(f"a truncated marker in {where}")
    return leaks


def test_the_corpus_really_carries_the_markers(corpus):
    """The search must be able to fail: every marker is findable in the input."""
    root, markers = corpus
    assert len(markers.all) >= 30
    blobs = _blobs(root)
    missing = [m for m in markers.all if not any(m.encode() in data for _, data in blobs)]
    assert not missing, missing


def test_no_marker_after_voxpipe_deid(corpus, tmp_path):
    root, markers = corpus
    out = tmp_path / "deid-out"
    proc = subprocess.run(
        [sys.executable, "-m", "voxpipe", "deid", str(root), str(out), "--key", str(tmp_path / "deid.key"), "--new-key"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "de-identified 8 files in 2 series" in proc.stdout and "quarantined: 1" in proc.stdout
    written = list(out.rglob("*.dcm"))
    assert len(written) == 8
    leaks = _leaks(markers.all, _blobs(out) + [("stdout", proc.stdout.encode()), ("stderr", proc.stderr.encode())])
    assert not leaks, leaks
    ds = pydicom.dcmread(written[0])
    assert ds.PatientIdentityRemoved == "YES" and ds.StudyInstanceUID.startswith("2.25.")


PIPELINE_DICOM = """version: 1
name: deid-seg
stages:
  - use: load.dicom
  - use: deid.dicom
    with: {{key_file: {key}}}
  - use: segment.otsu
  - use: write.dicom_seg
  - use: write.nifti
    with: {{keys: [image, label]}}
  - use: write.preview
"""

PIPELINE_NIFTI = """version: 1
name: deid-nifti
stages:
  - use: load.nifti
  - use: deid.dicom
    with: {{key_file: {key}}}
  - use: write.nifti
"""


def _broken_series(root: Path, markers) -> None:
    """A copy of one series, re-identified as a new series whose slices disagree on pixel spacing.

    The loader's error names the file at fault; the file names carry markers, so the message
    must not show them (only scanner-style names such as IM000123.dcm are shown)."""
    series_uid = pydicom.uid.generate_uid()
    folder = root / f"{markers.new()}_broken"
    folder.mkdir()
    for k, path in enumerate(sorted((root).rglob("*_0_*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        if k == 2:
            ds.PixelSpacing = ["0.5", "0.5"]
        ds.save_as(folder / f"{markers.new()}.dcm", enforce_file_format=True)


def test_no_marker_after_voxpipe_run_with_deid(corpus, tmp_path, cli, caplog):
    """`voxpipe run` as a process: its stdout and stderr (workers included) are the logs searched."""
    root, markers = corpus
    _broken_series(root, markers)
    key = tmp_path / "keys" / "deid.key"
    blobs: list[tuple[str, bytes]] = []
    caplog.set_level(logging.DEBUG)
    for name, text in (("dicom", PIPELINE_DICOM), ("nifti", PIPELINE_NIFTI)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(text.format(key=key))
        out = tmp_path / f"run-{name}"
        # a real process (and its case workers): every byte they print is searched
        workers = [] if name == "dicom" else ["--workers", "0"]  # the DICOM run goes through a case worker
        result = subprocess.run(
            [sys.executable, "-m", "voxpipe", "run", str(config), "-i", str(root), "-o", str(out), "--device", "cpu", *workers],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert result.returncode in (0, 1), result.stderr  # the secondary capture is quarantined: that case fails
        assert "Traceback" not in result.stderr
        blobs += _blobs(out) + [(f"{name} stdout", result.stdout.encode()), (f"{name} stderr", result.stderr.encode())]
        if name == "dicom":
            cases = [p for p in out.iterdir() if p.name.startswith("case-")]
            assert len(cases) == 2 and all((c / "segmentation.dcm").is_file() for c in cases)
            assert "pixel spacing differs" in result.stderr and "<input file" in result.stderr
            assert "quarantined" in (result.stdout + result.stderr).lower()
            _check_seg_references_the_deidentified_source(cases[0])
        else:
            assert len(list(out.rglob("image.nii.gz"))) == 1
    info = cli("info", root)
    blobs += [("log records", caplog.text.encode()), ("info stdout", info.stdout.encode()), ("info stderr", info.stderr.encode())]
    leaks = _leaks(markers.all, blobs)
    assert not leaks, leaks


def _check_seg_references_the_deidentified_source(case: Path) -> None:
    seg = pydicom.dcmread(case / "segmentation.dcm")
    sources = [pydicom.dcmread(p) for p in sorted((case / "dicom").glob("*.dcm"))]
    assert len(sources) == 4 and all(s.PatientIdentityRemoved == "YES" for s in sources)
    sops = {s.SOPInstanceUID for s in sources}
    refs = [i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence]
    assert refs and set(refs) <= sops, "the SEG references the de-identified instances"
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID and seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert str(seg.PatientName) == "" and seg.PatientID == sources[0].PatientID


def test_marker_names_never_look_like_scanner_file_names():
    """Messages may show scanner-style names (IM000123.dcm); a marker must never be one, or the corpus tests flake."""
    from voxpipe.redaction import technical_name
    from voxpipe_plugins.deid.synthetic import Markers

    names = [Markers().new() + ".dcm" for _ in range(400)]  # an all-digit salt came up in ~6 % of draws
    assert not [n for n in names if technical_name(n)]


# --- a pipeline without deid.dicom: the demo's kind --------------------------------------------
def _demo_seg_options() -> dict:
    """The demo's write.dicom_seg parameters, so the test follows what configs/demo.yaml really does."""
    import yaml

    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    [stage] = [s for s in demo["stages"] if s["use"] == "write.dicom_seg"]
    return stage.get("with") or {}


DEMO_STYLE = """version: 1
name: demo-style
stages:
  - use: load.dicom
  - use: denoise.nlm
  - use: segment.threshold
    with: {{ranges: [{{name: body, min: -500}}]}}
  - use: label.largest_component
  - use: write.nifti
    with: {{keys: [image, label]}}
  - use: write.dicom_seg
    with: {seg}
  - use: enhance.window
    with: {{preset: lung}}
  - use: write.montage
  - use: write.preview
"""


def _run(config: Path, root: Path, out: Path, env_key: Path) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, VOXPIPE_DEID_KEY_FILE=str(env_key))
    return subprocess.run(
        [sys.executable, "-m", "voxpipe", "run", str(config), "-i", str(root), "-o", str(out), "--device", "cpu"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )


def test_no_marker_after_a_demo_style_run_without_deid(corpus, tmp_path):
    """No deid.dicom in the pipeline (as in configs/demo.yaml): the SEG is de-identified by default, so no output
    (SEG, NIfTI, PNGs, features, case.json, manifest, report), path, stdout or stderr carries a marker."""
    import json

    root, markers = corpus
    options = _demo_seg_options()
    assert options.get("identity", "deidentified") == "deidentified", "the demo shows the safe default"
    config = tmp_path / "demo-style.yaml"
    config.write_text(DEMO_STYLE.format(seg=json.dumps(options)))
    out = tmp_path / "out"
    result = _run(config, root, out, tmp_path / "keys" / "deid.key")
    assert result.returncode == 0, result.stdout + result.stderr  # the secondary capture is written too: no quarantine here
    segs = sorted(out.glob("case-*/segmentation.dcm"))
    assert len(segs) == 3
    for path in segs:
        seg = pydicom.dcmread(path)
        assert seg.PatientIdentityRemoved == "YES" and seg.PatientID.startswith("ANON") and seg.StudyInstanceUID.startswith("2.25.")
    leaks = _leaks(markers.all, _blobs(out) + [("stdout", result.stdout.encode()), ("stderr", result.stderr.encode())])
    assert not leaks, leaks


EQUIPMENT = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber")
"""The source's acquisition equipment, which highdicom records in a derived object's Contributing Equipment Sequence."""
PATIENT_STUDY_MODULE = (
    "PatientName",
    "PatientID",
    "PatientComments",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDescription",
    "AdmittingDiagnosesDescription",
)
"""The corpus attributes in the Patient, General Study and Patient Study modules: what a SEG for the PACS must keep."""


def test_identity_source_keeps_every_patient_and_study_marker(corpus, tmp_path):
    """`identity: source` is for a SEG going back to the PACS: the patient and study modules of the source are intact
    (every marker there), the study and frame of reference UIDs too; beyond those modules only the source's
    acquisition equipment (Contributing Equipment Sequence, as DICOM expects of a derived object) is copied."""
    root, markers = corpus
    config = tmp_path / "source.yaml"
    config.write_text(DEMO_STYLE.format(seg="{identity: source}"))
    out = tmp_path / "out"
    result = _run(config, root, out, tmp_path / "keys" / "deid.key")
    assert result.returncode == 0, result.stdout + result.stderr
    sources = {
        pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID: pydicom.dcmread(p, stop_before_pixels=True)
        for p in sorted(root.rglob("*_0_0.dcm")) + sorted(root.rglob("*_1_0.dcm"))
    }
    segs = [pydicom.dcmread(p) for p in sorted(out.glob("case-*/segmentation.dcm"))]
    volumes = [s for s in segs if s.ReferencedSeriesSequence[0].SeriesInstanceUID in sources]
    assert len(volumes) == 2
    expected = set()
    for seg in volumes:
        source = sources[seg.ReferencedSeriesSequence[0].SeriesInstanceUID]
        for keyword in PATIENT_STUDY_MODULE + (
            "PatientBirthDate",
            "PatientSex",
            "PatientAge",
            "StudyDate",
            "StudyTime",
            "StudyInstanceUID",
            "FrameOfReferenceUID",
        ):
            assert seg.get(keyword) == source.get(keyword), keyword
        in_module = {str(v) for k in PATIENT_STUDY_MODULE for v in str(source.get(k)).split("^")}
        expected |= {m for m in markers.all if m in in_module or m[:16] in in_module}
        equipment = {str(source.get(k)) for k in EQUIPMENT}
        found = {m for m in markers.all if m.encode() in seg.to_json().encode() or m[:16].encode() in seg.to_json().encode()}
        assert found - {m for m in markers.all if m in equipment or m[:16] in equipment} == {
            m for m in markers.all if m in in_module or m[:16] in in_module
        }, sorted(found)
    assert len(expected) == len(PATIENT_STUDY_MODULE) + 1  # the name holds two markers

"""``voxpipe convert`` as dcm2niix users expect it (issue 16, deliverable 3).

-i/-o with the positional INPUT OUTPUT kept as aliases; an existing output is never
overwritten without --force (one line per refused series, exit 1, the others converted);
a name template (-f) whose fields are sanitised and free of PHI unless asked; a BIDS-style
JSON sidecar beside each NIfTI without PHI unless --sidecar-phi, whose fields agree with
dcm2niix's; one summary line per series and a final count; --json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series

REPO = Path(__file__).resolve().parents[1]
DCM2NIIX = REPO / ".venv" / "bin" / "dcm2niix"

PHI = {
    "PatientName": "Doe^Jane PHIMKNAME",
    "PatientID": "PHIMKID77",
    "PatientBirthDate": "19450317",
    "StudyDate": "20240229",
    "SeriesDate": "20240229",
    "AcquisitionDate": "20240229",
    "StudyTime": "101112",
    "AcquisitionTime": "101113",
    "InstitutionName": "PHIMK General Hospital",
    "InstitutionAddress": "1 PHIMK Street",
    "StationName": "PHIMKSTATION",
    "DeviceSerialNumber": "PHIMKSERIAL",
    "ReferringPhysicianName": "Dr^PHIMKDOC",
    "OperatorsName": "PHIMKOPERATOR",
    "ProtocolName": "PHIMK protocol for Doe",
    "StudyDescription": "PHIMK study of Jane Doe",
    "ImageComments": "PHIMK comment: Jane Doe",
    "AccessionNumber": "PHIMKACC",
}
PHI_VALUES = ["PHIMK", "Doe", "19450317", "20240229", "101113", "101112"]


def two_series(root: Path) -> tuple[Path, list[str]]:
    """Two CT series carrying PHI in every identifying attribute; returns the folder and their UIDs."""
    uids = []
    for number, description in ((3, "Doe Jane ../../etc AX PHIMK"), (7, "COR 2mm")):
        spec = SeriesSpec(
            series_description=description,
            patient_name=PHI["PatientName"],
            extra={**PHI, "SeriesNumber": number, "SliceThickness": 2.5, "KVP": 120, "ConvolutionKernel": "B30f"},
        )
        write_series(root / f"s{number}", ct_like_volume(shape=(4, 12, 12)), spec)
        uids.append(spec.series_uid)
    return root, uids


@pytest.fixture
def study(tmp_path):
    return two_series(tmp_path / "in")


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- -i/-o and the positional aliases


@pytest.mark.parametrize(
    "spelling",
    [
        ["{i}", "{o}"],
        ["-i", "{i}", "-o", "{o}"],
        ["--input", "{i}", "--output", "{o}"],
        ["-o", "{o}", "-i", "{i}"],
        ["-i", "{i}", "{o}"],
        ["{i}", "-o", "{o}"],
        ["--input={i}", "--output={o}"],
    ],
)
def test_every_spelling_of_input_and_output_converts_the_same(cli, study, tmp_path, spelling):
    root, _ = study
    out = tmp_path / "out"
    args = [a.format(i=root, o=out) for a in spelling]
    result = cli("convert", *args)
    assert result.exit_code == 0, result.stderr
    names = outputs(out)
    assert len(names) == 4 and sum(n.endswith(".nii.gz") for n in names) == 2 and sum(n.endswith(".json") for n in names) == 2


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["{i}"],
        ["-i", "{i}"],
        ["-o", "{o}"],
        ["-i", "{i}", "{i}", "{o}"],  # input given twice
        ["{i}", "{o}", "{o}"],
        ["-i", "{i}", "-o", "{o}", "{o}"],
    ],
)
def test_missing_or_extra_paths_are_one_line_and_exit_2(cli, study, tmp_path, args):
    root, _ = study
    result = cli("convert", *[a.format(i=root, o=tmp_path / "out") for a in args])
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- no silent overwrite


def test_a_rerun_refuses_every_existing_output_and_force_overwrites(cli, study, tmp_path):
    root, _ = study
    out = tmp_path / "out"
    assert cli("convert", "-i", root, "-o", out).exit_code == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    again = cli("convert", "-i", root, "-o", out)
    assert again.exit_code == 1
    refused = [line for line in again.stderr.splitlines() if "refused:" in line]
    assert len(refused) == 2 and all(line.startswith("case-") and "--force" in line for line in refused)
    assert "converted 0 of 2 series; 2 refused (exists), 0 failed" in again.stderr
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    forced = cli("convert", "-i", root, "-o", out, "--force")
    assert forced.exit_code == 0 and "converted 2 of 2 series" in forced.stderr
    assert outputs(out) == sorted(before)


@pytest.mark.parametrize("existing", ["nifti", "sidecar", "link", "dangling-link"])
def test_one_existing_output_is_refused_and_the_other_series_still_converted(cli, study, tmp_path, existing):
    root, uids = study
    out = tmp_path / "out"
    first = cli("convert", "-i", root, "-o", out, "--json")
    records = json.loads(first.stdout)["series"]
    for path in out.iterdir():
        path.unlink()
    victim = Path(records[0]["file"] if existing != "sidecar" else records[0]["sidecar"])
    if existing in ("nifti", "sidecar"):
        victim.write_bytes(b"the user's own file")
    else:
        other = tmp_path / "elsewhere.txt"
        if existing == "link":
            other.write_bytes(b"not to be replaced")
        victim.symlink_to(other)
    result = cli("convert", "-i", root, "-o", out, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"converted": 1, "exists": 1, "failed": 0}
    assert [line for line in result.stderr.splitlines() if "refused:" in line][0].startswith(records[0]["case_id"])
    assert Path(summary["series"][1]["file"]).is_file()
    if existing in ("nifti", "sidecar"):
        assert victim.read_bytes() == b"the user's own file"
    else:
        assert victim.is_symlink()


def test_a_single_file_output_is_never_overwritten_without_force(cli, study, tmp_path):
    root, uids = study
    target = tmp_path / "ct.nii.gz"
    target.write_bytes(b"keep me")
    result = cli("convert", root, target, "--series", uids[0])
    assert result.exit_code == 1 and "refused:" in result.stderr and target.read_bytes() == b"keep me"
    assert not (tmp_path / "ct.json").exists()
    (tmp_path / "ct.json").write_text("{}")
    target.unlink()
    sidecar_only = cli("convert", root, target, "--series", uids[0])
    assert sidecar_only.exit_code == 1 and not target.exists() and (tmp_path / "ct.json").read_text() == "{}"
    forced = cli("convert", root, target, "--series", uids[0], "--force")
    assert forced.exit_code == 0 and target.stat().st_size > 100
    assert json.loads((tmp_path / "ct.json").read_text())["Modality"] == "CT"
    plain = tmp_path / "plain.nii"
    assert cli("convert", root, plain, "--series", uids[1]).exit_code == 0 and (tmp_path / "plain.json").is_file()


# ----------------------------------------------------------------------------- summary and --json


def test_one_summary_line_per_series_and_a_count(cli, study, tmp_path):
    root, _ = study
    result = cli("convert", "-i", root, "-o", tmp_path / "out")
    lines = [line for line in result.stderr.splitlines() if "  -> " in line]
    assert len(lines) == 2
    for line in lines:
        case, size, spacing, mm, arrow, path, plus, sidecar = line.split()
        assert case.startswith("case-") and size == "12x12x4" and spacing == "0.7x0.7x2.5" and mm == "mm"
        assert Path(path).is_file() and Path(path).name.startswith(case) and (tmp_path / "out" / sidecar).is_file()
    assert result.stderr.strip().endswith("converted 2 of 2 series; 0 refused (exists), 0 failed")


def test_json_summary_is_valid_and_complete(cli, study, tmp_path):
    root, _ = study
    result = cli("convert", "-i", root, "-o", tmp_path / "out", "--json")
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"converted": 2, "exists": 0, "failed": 0}
    for record in summary["series"]:
        assert record["status"] == "converted" and record["size"] == "12x12x4" and record["error"] is None
        assert Path(record["file"]).is_file() and Path(record["sidecar"]).is_file()


# ----------------------------------------------------------------------------- -f name template


def test_template_fields_are_rendered_and_sanitised(cli, study, tmp_path, monkeypatch):
    root, _ = study
    out = tmp_path / "out"
    assert cli("convert", "-i", root, "-o", out, "-f", "%s_%m_%e_%a").exit_code == 0
    assert {n.split(".")[0] for n in outputs(out)} == {"3_CT_NA_NA", "7_CT_NA_NA"}
    described = tmp_path / "described"
    result = cli("--show-phi", "convert", "-i", root, "-o", described, "-f", "%i_%s_%d")
    assert result.exit_code == 0, result.stderr
    names = outputs(described)
    assert any(n.endswith("_3_Doe_Jane_etc_AX_PHIMK.nii.gz") for n in names), names  # ../ and spaces gone
    assert any(n.endswith("_7_COR_2mm.nii.gz") for n in names)
    assert all("/" not in n and ".." not in n and not n.startswith(".") for n in names)
    assert {p.parent for p in described.rglob("*")} == {described}


@pytest.mark.parametrize("template", ["%d", "%i_%d", "x%dx"])
def test_free_text_fields_need_show_phi(cli, study, tmp_path, template):
    root, _ = study
    result = cli("convert", "-i", root, "-o", tmp_path / "out", "-f", template)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "--show-phi" in result.error_lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("template", ["%n", "%p_%i", "a/%i", "..\\%i", "%", "", "%t", "%i%"])
def test_unknown_fields_and_folders_are_refused(cli, study, tmp_path, template):
    root, _ = study
    result = cli("--show-phi", "convert", "-i", root, "-o", tmp_path / "out", "-f", template)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_template_with_a_single_file_output_is_refused(cli, study, tmp_path):
    root, uids = study
    result = cli("convert", "-i", root, "-o", tmp_path / "ct.nii.gz", "--series", uids[0], "-f", "%s_%m")
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "-f" in result.error_lines[0]
    assert list(tmp_path.glob("*.nii*")) == []


def test_a_template_that_gives_two_series_one_name_fails_the_second_only(cli, study, tmp_path):
    root, _ = study
    out = tmp_path / "out"
    result = cli("convert", "-i", root, "-o", out, "-f", "%m")
    assert result.exit_code == 1
    assert outputs(out) == ["CT.json", "CT.nii.gz"]
    failed = [line for line in result.stderr.splitlines() if "failed:" in line]
    assert len(failed) == 1 and "%i" in failed[0]


def test_default_names_are_unchanged(cli, study, tmp_path):
    root, _ = study
    out = tmp_path / "out"
    cli("convert", root, out)
    import re

    assert all(re.fullmatch(r"case-[0-9a-f]{12}_CT\.(nii\.gz|json)", n) for n in outputs(out))


# ----------------------------------------------------------------------------- the sidecar


def test_the_sidecar_holds_acquisition_parameters_and_no_phi(cli, study, tmp_path):
    from voxpipe_plugins.io_dicom.sidecar import ACQUISITION

    root, uids = study
    out = tmp_path / "out"
    assert cli("convert", "-i", root, "-o", out).exit_code == 0
    for sidecar in out.glob("*.json"):
        text = sidecar.read_text()
        assert not [v for v in PHI_VALUES + uids if v.lower() in text.lower()], text
        fields = json.loads(text)
        assert set(fields) <= set(ACQUISITION) | {"ConversionSoftware", "ConversionSoftwareVersion"}
        assert fields["Modality"] == "CT" and fields["SliceThickness"] == 2.5 and fields["KVP"] == 120
        assert fields["ConvolutionKernel"] == "B30f" and fields["ConversionSoftware"] == "voxpipe"
        assert fields["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert oct(sidecar.stat().st_mode & 0o777) == oct((out / sidecar.name.replace(".json", ".nii.gz")).stat().st_mode & 0o777)
        assert sidecar.stat().st_mode & 0o077 == 0


def test_sidecar_phi_adds_identifying_fields_privately_and_no_sidecar_skips_it(cli, study, tmp_path, monkeypatch):
    root, uids = study
    monkeypatch.setenv("VOXPIPE_FILE_MODE", "0640")
    out = tmp_path / "out"
    assert cli("convert", "-i", root, "-o", out, "--sidecar-phi").exit_code == 0
    fields = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert {f["SeriesInstanceUID"] for f in fields} == set(uids)
    assert {f["InstitutionName"] for f in fields} == {PHI["InstitutionName"]}
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in out.glob("*.json"))  # PHI: private whatever the mode asked
    none = tmp_path / "none"
    assert cli("convert", "-i", root, "-o", none, "--no-sidecar").exit_code == 0
    assert all(n.endswith(".nii.gz") for n in outputs(none)) and len(outputs(none)) == 2


@pytest.mark.parametrize(
    ("keyword", "value", "field", "expected"),
    [
        ("EchoTime", "12.5", "EchoTime", 0.0125),
        ("RepetitionTime", "2300", "RepetitionTime", 2.3),
        ("InversionTime", "900", "InversionTime", 0.9),
        ("FlipAngle", "9", "FlipAngle", 9),
        ("MagneticFieldStrength", "3", "MagneticFieldStrength", 3),
        ("ExposureTime", 1601, "ExposureTime", 1.601),
        ("Manufacturer", "SIEMENS", "Manufacturer", "Siemens"),
        ("Manufacturer", "Philips Medical Systems", "Manufacturer", "Philips"),
        ("Manufacturer", "ACME Imaging", "Manufacturer", "ACME Imaging"),
        ("SpacingBetweenSlices", "2.5", "SpacingBetweenSlices", 2.5),
    ],
)
def test_sidecar_units_are_bids(tmp_path, keyword, value, field, expected):
    from voxpipe_plugins.io_dicom.sidecar import sidecar_fields

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    setattr(ds, keyword, value)
    path = tmp_path / "x.dcm"
    ds.save_as(path)
    assert (
        sidecar_fields(path)[field] == pytest.approx(expected) if isinstance(expected, float) else sidecar_fields(path)[field] == expected
    )


@pytest.mark.skipif(not DCM2NIIX.exists() and not shutil.which("dcm2niix"), reason="dcm2niix not installed")
@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm", "MR_small_bigendian.dcm", "synthetic-mr"])
def test_sidecar_fields_agree_with_dcm2niix(cli, tmp_path, name):
    source = tmp_path / "in"
    source.mkdir()
    if name == "synthetic-mr":  # a multi-slice MR with every time, in ms, that BIDS wants in seconds
        mr = {"EchoTime": "4.6", "RepetitionTime": "2300", "InversionTime": "900", "FlipAngle": "9", "MagneticFieldStrength": "3"}
        mr |= {"Manufacturer": "SIEMENS", "ManufacturerModelName": "Prisma", "SpacingBetweenSlices": "2.5", "SliceThickness": "2.5"}
        mr |= {"ScanningSequence": "GR\\IR", "SequenceVariant": "SK\\SP\\MP", "MRAcquisitionType": "3D", "SeriesNumber": 5}
        write_series(source, ct_like_volume(shape=(5, 12, 12)), SeriesSpec(modality="MR", intercept=0.0, extra=mr))
    else:
        shutil.copy(get_testdata_file(name), source / "a.dcm")
    theirs_dir = tmp_path / "dcm2niix"
    theirs_dir.mkdir()
    binary = str(DCM2NIIX) if DCM2NIIX.exists() else shutil.which("dcm2niix")
    subprocess.run([binary, "-b", "y", "-f", "x", "-o", str(theirs_dir), str(source)], check=True, capture_output=True)
    theirs = json.loads(next(theirs_dir.glob("*.json")).read_text())
    result = cli("convert", "-i", source, "-o", tmp_path / "ours", "--sidecar-phi")
    assert result.exit_code == 0, result.stderr
    ours = json.loads(next((tmp_path / "ours").glob("*.json")).read_text())
    shared = (set(ours) & set(theirs)) - {"ConversionSoftware", "ConversionSoftwareVersion", "AcquisitionTime"}
    assert {"Modality", "Manufacturer", "ImageType", "ImageOrientationPatientDICOM"} <= shared
    for key in sorted(shared):
        if isinstance(theirs[key], (int, float)) and not isinstance(theirs[key], bool):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4), key
        else:
            assert ours[key] == theirs[key], key
    if name == "synthetic-mr":  # the times, in seconds, are the point of a sidecar
        timing = {"EchoTime", "RepetitionTime", "InversionTime", "FlipAngle", "MagneticFieldStrength", "SpacingBetweenSlices"}
        assert timing | {"SliceThickness", "ScanningSequence", "SequenceVariant", "SeriesNumber"} <= shared

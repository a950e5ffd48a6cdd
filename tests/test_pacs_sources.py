"""PACS inputs against a real Orthanc: DICOMweb and DIMSE fetches equal local files; every failure is one line, nothing kept.

Only 127.0.0.1 is ever addressed (the Orthanc of tests/orthanc_server.py, a dropping proxy in
front of it, and a closed port).
"""

# ruff: noqa: F811  (the `orthanc` fixture is imported, then named as a parameter)
from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.orthanc_server import free_port, orthanc  # noqa: F401  (the session fixture)
from tests.pacs_sources_data import DroppingProxy, local_series, make_tls_files, write_study
from voxpipe.input_sources import TEMP_PREFIX, open_input

CONFIG = """\
version: 1
name: pacs-input
device: cpu
stages:
  - use: load.dicom
  - use: write.nifti
"""


@pytest.fixture(scope="module")
def study(orthanc, tmp_path_factory):
    """The six-series study, uploaded once (tests that need Orthanc empty do not exist: queries select by UID)."""
    made = write_study(tmp_path_factory.mktemp("study"))
    orthanc.upload(made.files)
    return made


@pytest.fixture
def credentials(orthanc, monkeypatch):
    monkeypatch.setenv("VOXPIPE_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("VOXPIPE_DICOMWEB_PASSWORD", orthanc.password)
    for name in ("VOXPIPE_DICOMWEB_TOKEN", "VOXPIPE_DICOMWEB_CA_BUNDLE", "VOXPIPE_AE_TITLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def spool(tmp_path, monkeypatch) -> Path:
    """Where URL inputs are fetched to in this test (to prove nothing is left there)."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def fetched_left(spool: Path) -> list[Path]:
    """Folders of URL inputs still in the spool (multiprocessing's own pymp-* folders are not ours)."""
    return [p for p in spool.iterdir() if p.name.startswith(TEMP_PREFIX)]


def web_url(orthanc, **query) -> str:
    return f"dicomweb+http://127.0.0.1:{orthanc.http_port}/dicom-web?" + "&".join(f"{k}={quote(v)}" for k, v in query.items())


def dimse_url(orthanc, **query) -> str:
    return f"dimse://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}?" + "&".join(f"{k}={v}" for k, v in query.items())


def assert_same_series(fetched: Path, local: Path) -> None:
    got, want = local_series(fetched), local_series(local)
    assert sorted(got) == sorted(want)  # the same case ids: a DICOM case id hashes the series, not where its files were
    for cid, (array, affine) in want.items():
        assert got[cid][0].dtype == array.dtype
        np.testing.assert_array_equal(got[cid][0], array)
        np.testing.assert_array_equal(got[cid][1], affine)


def test_a_search_by_study_attributes_ends_on_a_server_that_ignores_offset(orthanc, study, credentials, spool, monkeypatch):
    """Orthanc's DICOMweb 1.7 ignores `offset` with ModalitiesInStudy: paging must stop when a page brings nothing new."""
    from voxpipe_plugins.pacs import dicomweb_source

    modality = str(pydicom.dcmread(study.files[0], stop_before_pixels=True).Modality)
    assert len(orthanc.get("/dicom-web/studies?ModalitiesInStudy=" + modality + "&offset=1000")) > 0  # the server really ignores it
    monkeypatch.setattr(dicomweb_source, "QIDO_MAX_PAGES", 5)  # a loop would end in the "still brings new matches" error
    with open_input(web_url(orthanc, ModalitiesInStudy=modality, StudyDate="19000101-21001231")) as folder:
        fetched = local_series(folder)
    assert set(local_series(study.folder)) <= set(fetched)  # every series of the study, each once (case ids are per series)


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_a_fetched_study_loads_exactly_as_its_local_files(orthanc, study, credentials, spool, protocol):
    url = (web_url if protocol == "dicomweb" else dimse_url)(orthanc, StudyInstanceUID=study.study_uid)
    with open_input(url) as folder:
        assert folder.parent == spool and (folder.stat().st_mode & 0o777) == 0o700
        assert_same_series(folder, study.folder)
        syntaxes = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in folder.rglob("*.dcm")}
        stored = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in study.files}
        assert syntaxes == stored  # retrieved as stored: JPEG 2000, JPEG-LS and RLE were not transcoded
        if protocol == "dicomweb":  # WADO-RS hands back the stored files themselves, written unparsed
            assert sorted(p.read_bytes() for p in folder.rglob("*.dcm")) == sorted(p.read_bytes() for p in study.files)
    assert fetched_left(spool) == []


def test_one_series_of_the_study_by_both_keys(orthanc, study, credentials, spool):
    wanted = study.series_uids[1]
    for url in (
        web_url(orthanc, StudyInstanceUID=study.study_uid, SeriesInstanceUID=wanted),
        web_url(orthanc, SeriesInstanceUID=wanted),
        dimse_url(orthanc, StudyInstanceUID=study.study_uid, SeriesInstanceUID=wanted),
    ):
        with open_input(url) as folder:
            files = list(folder.rglob("*.dcm"))
            assert {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in files} == {wanted}
            assert len(files) == 5


def test_info_and_convert_take_urls_and_match_local_files(cli, orthanc, study, credentials, spool, tmp_path):
    local = cli("info", "--json", "-i", study.folder)
    assert local.exit_code == 0, local.stderr
    for url in (web_url(orthanc, StudyInstanceUID=study.study_uid), dimse_url(orthanc, StudyInstanceUID=study.study_uid)):
        remote = cli("info", "--json", url, "--ae-title", "VOXPIPE")
        assert remote.exit_code == 0, remote.stderr
        assert json.loads(remote.stdout)["series"] == json.loads(local.stdout)["series"]
    one = web_url(orthanc, StudyInstanceUID=study.study_uid, SeriesInstanceUID=study.series_uids[2])
    fetched = cli("convert", "-i", one, "-o", tmp_path / "remote")
    assert fetched.exit_code == 0, fetched.stderr
    converted = cli("convert", "-i", study.folder / "enhanced", "-o", tmp_path / "local")
    assert converted.exit_code == 0, converted.stderr
    names = sorted(p.name for p in (tmp_path / "remote").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "local").iterdir()) and any(n.endswith(".nii.gz") for n in names)
    for name in names:
        if name.endswith(".nii.gz"):
            a, b = nib.load(tmp_path / "remote" / name), nib.load(tmp_path / "local" / name)
            np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
            np.testing.assert_array_equal(a.affine, b.affine)
    assert fetched_left(spool) == []


MARK_PID, MARK_ACC = "PHIMARKPID7Q", "PHIMARKACC3Z"


def phi_forms(*values: str) -> set[str]:
    """Each value as typed, URL-encoded and in base64 (alone and as a basic-auth pair's tail)."""
    forms = set()
    for value in values:
        forms |= {value, quote(value), quote(value, safe=""), base64.b64encode(value.encode()).decode().rstrip("=")}
    return {f for f in forms if len(f) >= 6}


def test_a_run_from_dicomweb_leaves_no_phi_and_no_credential(cli, orthanc, credentials, spool, tmp_path, write_config, caplog):
    marked = write_study(tmp_path / "marked", patient_id=MARK_PID, accession=MARK_ACC)
    orthanc.upload(marked.files)
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    url = web_url(orthanc, PatientID=MARK_PID, AccessionNumber=MARK_ACC)
    result = cli("run", write_config(CONFIG), "-i", url, "-o", out, "--workers", "0")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["ok"] == 6
    assert manifest["input"]["source"] == f"dicomweb+http://127.0.0.1:{orthanc.http_port}/dicom-web?PatientID=…&AccessionNumber=…"
    ids = {case["case_id"] for case in manifest["cases"]}
    assert ids == set(local_series(marked.folder))  # the same case ids as the local files
    auth = base64.b64encode(f"{orthanc.user}:{orthanc.password}".encode()).decode()
    secrets = phi_forms(MARK_PID, MARK_ACC, orthanc.password) | {auth}
    texts = {"stdout": result.stdout, "stderr": result.stderr, "logs": "\n".join(r.getMessage() for r in caplog.records)}
    for path in out.rglob("*"):
        if path.is_file():
            texts[str(path.relative_to(out))] = path.read_bytes().decode("latin-1")
        texts["name " + str(path.relative_to(out))] = str(path.relative_to(out))
    leaks = sorted((where, secret) for where, text in texts.items() for secret in secrets if secret in text)
    assert leaks == []
    assert fetched_left(spool) == []


def one_error_line(result, *secrets: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert len(result.error_lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for secret in secrets:
        for form in phi_forms(secret):
            assert form not in result.stderr + result.stdout
    return result.error_lines[0]


def nothing_written(out: Path, spool: Path) -> None:
    assert not out.exists()
    assert fetched_left(spool) == []


def test_a_wrong_password_is_one_line_and_nothing_is_written(cli, orthanc, study, spool, tmp_path, write_config, monkeypatch):
    monkeypatch.setenv("VOXPIPE_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("VOXPIPE_DICOMWEB_PASSWORD", "WRONGPASSWORD42")
    out = tmp_path / "out"
    result = cli("run", write_config(CONFIG), "-i", web_url(orthanc, StudyInstanceUID=study.study_uid), "-o", out, "--workers", "0")
    line = one_error_line(result, "WRONGPASSWORD42")
    assert "refused the credentials" in line and "VOXPIPE_DICOMWEB_PASSWORD" in line
    nothing_written(out, spool)
    monkeypatch.delenv("VOXPIPE_DICOMWEB_USER")
    monkeypatch.delenv("VOXPIPE_DICOMWEB_PASSWORD")
    line = one_error_line(cli("convert", "-i", web_url(orthanc, StudyInstanceUID=study.study_uid), "-o", out))
    assert "refused the credentials" in line  # no credential at all: the server's 401, said the same way
    nothing_written(out, spool)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("dicomweb+http://127.0.0.1:{closed}/dicom-web?StudyInstanceUID=1.2.3", "cannot reach the DICOMweb server 127.0.0.1:{closed}"),
        ("dimse://ORTHANC@127.0.0.1:{closed}?StudyInstanceUID=1.2.3", "cannot reach the DICOM peer 127.0.0.1:{closed}"),
        ("dicomweb+http://127.0.0.1:{http}/dicom-web?StudyInstanceUID=1.2.999.4", "no series on the DICOMweb server"),
        ("dicomweb+http://127.0.0.1:{http}/dicom-web?PatientID=NOSUCHPATIENT9", "no series on the DICOMweb server"),
        ("dimse://{aet}@127.0.0.1:{dicom}?StudyInstanceUID=1.2.999.4", "no series on the DICOM peer"),
        ("dimse://NOT-ORTHANC@127.0.0.1:{dicom}?StudyInstanceUID=1.2.999.4", "the association; check the called AE title"),
        ("dicomweb+http://127.0.0.1:{http}/no-such-root?StudyInstanceUID=1.2.3", "answered 404"),
        ("nosuch://127.0.0.1/?StudyInstanceUID=1.2.3", "known URL schemes: dicomweb+http://, dicomweb+https://, dimse://"),
        ("dicomweb+http://127.0.0.1:{http}/dicom-web?PatientName=NOSUCHPATIENT9", "query key `PatientName` is not supported"),
        ("dicomweb+http://127.0.0.1:{http}/dicom-web?StudyDate=NOSUCHPATIENT9", "StudyDate must be YYYYMMDD"),
        ("dicomweb+http://127.0.0.1:{http}/dicom-web", "say what to fetch"),
        ("dimse://{aet}@127.0.0.1:{dicom}?SeriesInstanceUID=1.2.3", "needs ?StudyInstanceUID"),
    ],
)
def test_each_failure_is_one_line_and_leaves_nothing(cli, orthanc, credentials, spool, tmp_path, url, expected):
    values = {"closed": free_port(), "http": orthanc.http_port, "dicom": orthanc.dicom_port, "aet": orthanc.aet}
    out = tmp_path / "out"
    line = one_error_line(cli("convert", "-i", url.format(**values), "-o", out), "NOSUCHPATIENT9")
    assert expected.format(**values) in line
    nothing_written(out, spool)


@pytest.mark.parametrize(
    "url",
    [
        "dicomweb+http://admin:SECRETPW77@127.0.0.1:{http}/dicom-web?StudyInstanceUID=1.2.3",
        "dicomweb+https://admin:SECRETPW77@127.0.0.1:{http}/dicom-web?StudyInstanceUID=1.2.3",
        "dicomweb+http://SECRETPW77@127.0.0.1:{http}/dicom-web?StudyInstanceUID=1.2.3",
        "dicomweb+http://admin:SECRETPW77%40x@127.0.0.1:{http}/dicom-web?StudyInstanceUID=1.2.3",
        "dicomweb+http://admin:SECRETPW77@[::1]:{http}/dicom-web?StudyInstanceUID=1.2.3",
        "dimse://admin:SECRETPW77@127.0.0.1:{dicom}?StudyInstanceUID=1.2.3",
    ],
)
def test_credentials_in_the_url_are_refused_without_echo(cli, orthanc, spool, tmp_path, url):
    out = tmp_path / "out"
    full = url.format(http=orthanc.http_port, dicom=orthanc.dicom_port)
    for command in (("convert", "-i", full, "-o", out), ("info", full)):
        line = one_error_line(cli(*command), "SECRETPW77", "admin:SECRETPW77")
        assert "VOXPIPE_DICOMWEB_USER" in line or "DIMSE has no passwords" in line
    nothing_written(out, spool)


def test_a_transfer_cut_mid_series_is_one_line_and_nothing_is_kept(cli, orthanc, study, credentials, spool, tmp_path):
    proxy = DroppingProxy(orthanc.http_port, cut=6000)
    try:
        url = f"dicomweb+http://127.0.0.1:{proxy.port}/dicom-web?StudyInstanceUID={study.study_uid}"
        out = tmp_path / "out"
        line = one_error_line(cli("convert", "-i", url, "-o", out))
        assert proxy.cuts >= 1
        assert f"DICOMweb server 127.0.0.1:{proxy.port}" in line and ("closed the connection" in line or "sent" in line)
        nothing_written(out, spool)
    finally:
        proxy.close()


def test_a_dimse_peer_that_does_not_know_our_ae_title_is_one_line(cli, orthanc, study, spool, tmp_path, write_config):
    out = tmp_path / "out"
    line = one_error_line(cli("convert", "-i", dimse_url(orthanc, StudyInstanceUID=study.study_uid), "-o", out, "--ae-title", "STRANGER"))
    assert "STRANGER" in line and "--ae-title" in line
    nothing_written(out, spool)
    url = dimse_url(orthanc, StudyInstanceUID=study.study_uid, SeriesInstanceUID=study.series_uids[4])
    line = one_error_line(cli("run", write_config(CONFIG), "-i", url, "-o", out, "--workers", "0", "--ae-title", "STRANGER"))
    assert "STRANGER" in line and "--ae-title" in line
    nothing_written(out, spool)
    result = cli("run", write_config(CONFIG), "-i", url, "-o", out, "--workers", "0", "--ae-title", "VOXPIPE")  # `run` takes it too
    assert result.exit_code == 0, result.stderr
    [case] = json.loads((out / "manifest.json").read_text())["cases"]
    assert case["status"] == "ok" and case["case_id"] in local_series(study.folder)


def test_sigterm_and_errors_inside_the_input_remove_its_folder(orthanc, study, credentials, spool):
    with pytest.raises(KeyboardInterrupt):
        with open_input(web_url(orthanc, StudyInstanceUID=study.study_uid)) as folder:
            assert any(folder.rglob("*.dcm"))
            raise KeyboardInterrupt
    with pytest.raises(SystemExit):
        with open_input(web_url(orthanc, StudyInstanceUID=study.study_uid)):
            os.kill(os.getpid(), 15)
    assert fetched_left(spool) == []


def test_https_is_verified_with_the_ca_bundle_given(cli, orthanc, study, credentials, spool, tmp_path, monkeypatch):
    files = make_tls_files(tmp_path / "tls")
    if files is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    ca, cert, key = files
    proxy = DroppingProxy(orthanc.http_port, cut=None, tls=(cert, key))
    try:
        url = (
            f"dicomweb+https://127.0.0.1:{proxy.port}/dicom-web?StudyInstanceUID={study.study_uid}&SeriesInstanceUID={study.series_uids[0]}"
        )
        out = tmp_path / "out"
        line = one_error_line(cli("convert", "-i", url, "-o", out))  # our test CA is in no trust store
        assert "TLS verification" in line and "--ca-bundle" in line
        nothing_written(out, spool)
        assert cli("convert", "-i", url, "-o", out, "--ca-bundle", ca).exit_code == 0
        assert len(list(out.glob("*.nii.gz"))) == 1
        monkeypatch.setenv("VOXPIPE_DICOMWEB_CA_BUNDLE", str(ca))
        assert cli("info", "--json", url).exit_code == 0
        line = one_error_line(cli("info", "--json", url, "--ca-bundle", tmp_path / "missing.pem"))
        assert "is not a file" in line
    finally:
        proxy.close()


def test_a_run_with_worker_processes_reads_the_fetched_series(cli, orthanc, study, credentials, spool, tmp_path, write_config):
    url = web_url(orthanc, StudyInstanceUID=study.study_uid, SeriesInstanceUID=study.series_uids[3])
    out = tmp_path / "out"
    links = tmp_path / "private" / "sources.tsv"
    result = cli("run", write_config(CONFIG), "-i", url, "-o", out, "--workers", "1", "--source-map", links)
    assert result.exit_code == 0, result.stderr
    (case,) = json.loads((out / "manifest.json").read_text())["cases"]
    assert case["status"] == "ok" and case["case_id"] in local_series(study.folder)
    # the private source map links the case to the URL and series it came from (the fetched folder is gone)
    assert links.read_text().splitlines()[1] == f"{case['case_id']}\t{url} {study.series_uids[3]}"
    assert links.stat().st_mode & 0o777 == 0o600
    assert fetched_left(spool) == []
    line = one_error_line(cli("run", write_config(CONFIG), "-i", url, "-o", tmp_path / "o2", "--executor", "tcp://127.0.0.1:1"))
    assert "cannot read" in line and "--executor local" in line


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_a_series_over_the_memory_cap_is_refused_and_nothing_is_kept(
    cli, orthanc, study, credentials, spool, tmp_path, monkeypatch, protocol
):
    monkeypatch.setenv("VOXPIPE_MAX_GIB", "0.00001")  # about 10 KiB: every test series is larger
    url = (web_url if protocol == "dicomweb" else dimse_url)(
        orthanc, StudyInstanceUID=study.study_uid, SeriesInstanceUID=study.series_uids[0]
    )
    out = tmp_path / "out"
    line = one_error_line(cli("convert", "-i", url, "-o", out))
    assert "more than the memory cap" in line and "VOXPIPE_MAX_GIB" in line
    nothing_written(out, spool)


def test_instances_of_another_series_than_asked_for_are_refused(cli, orthanc, study, credentials, spool, tmp_path):
    asked, sent = study.series_uids[0], study.series_uids[1]
    proxy = DroppingProxy(orthanc.http_port, cut=None, swap=(asked, sent))
    try:
        url = f"dicomweb+http://127.0.0.1:{proxy.port}/dicom-web?StudyInstanceUID={study.study_uid}&SeriesInstanceUID={asked}"
        out = tmp_path / "out"
        assert "another series than asked for" in one_error_line(cli("convert", "-i", url, "-o", out))
        nothing_written(out, spool)
    finally:
        proxy.close()


def test_debug_tracebacks_hide_the_query_values_and_credentials_too(cli, orthanc, study, spool, tmp_path, monkeypatch):
    monkeypatch.setenv("VOXPIPE_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("VOXPIPE_DICOMWEB_PASSWORD", "WRONGPASSWORD42")
    url = web_url(orthanc, PatientID=MARK_PID + " x/y", AccessionNumber=MARK_ACC)
    result = cli("--debug", "convert", "-i", url, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "Traceback" in result.stderr  # the library's error, which quotes the request URL
    assert "<input value>" in result.stderr
    for form in phi_forms(MARK_PID, MARK_ACC, "WRONGPASSWORD42"):
        assert form not in result.stderr + result.stdout
    credential = f"dicomweb+http://admin:SECRETPW77@127.0.0.1:{orthanc.http_port}/dicom-web?StudyInstanceUID=1.2.3"
    result = cli("--debug", "info", credential)
    assert result.exit_code == 2 and "SECRETPW77" not in result.stderr + result.stdout
    nothing_written(tmp_path / "out", spool)


def test_a_peer_that_refuses_image_level_queries_is_asked_by_series(orthanc, study, spool, monkeypatch):
    from voxpipe_plugins.pacs import dimse_source

    real = dimse_source._find
    levels = []

    def series_level_only(target, calling, level):
        levels.append(level)
        return ({}, 0xA900) if level == "IMAGE" else real(target, calling, level)

    monkeypatch.setattr(dimse_source, "_find", series_level_only)
    with open_input(dimse_url(orthanc, StudyInstanceUID=study.study_uid)) as folder:
        assert_same_series(folder, study.folder)  # the common image SOP classes were proposed: CT and enhanced CT came
    assert levels == ["IMAGE", "SERIES"]


def test_the_python_api_takes_urls_and_the_source_options(orthanc, study, spool, tmp_path, write_config):
    import voxpipe
    from voxpipe.errors import UsageError

    url = dimse_url(orthanc, StudyInstanceUID=study.study_uid, SeriesInstanceUID=study.series_uids[4])
    with pytest.raises(UsageError, match="STRANGER"):
        voxpipe.run(write_config(CONFIG), url, tmp_path / "refused", workers=0, ae_title="STRANGER")
    summary = voxpipe.run(write_config(CONFIG), url, tmp_path / "out", workers=0, ae_title="VOXPIPE")
    assert [o.status for o in summary.outcomes] == ["ok"] and summary.outcomes[0].case_id in local_series(study.folder)
    assert not (tmp_path / "refused").exists() and fetched_left(spool) == []

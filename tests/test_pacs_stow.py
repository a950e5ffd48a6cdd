"""``write.stow``: the SEG goes into its source's study on a real Orthanc; credentials only from the environment;
transient errors retried (a local fake server), anything else one line for the case, the run going on."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.orthanc_server import orthanc  # noqa: F401  (the session fixture)
from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series

STOW_CONFIG = """version: 1
name: stow
device: cpu
stages:
  - use: load.dicom
  - use: segment.threshold
    with:
      ranges: [{{name: body, min: -500}}]
  - use: write.dicom_seg
    with: {{identity: {identity}}}
  - use: write.stow
    with: {{url: "{url}", retries: 1, backoff_s: 0.05}}
"""


def _config(folder: Path, url: str, identity: str = "source") -> Path:
    path = folder / "stow.yaml"
    path.write_text(STOW_CONFIG.format(url=url, identity=identity))
    return path


def _two_series(folder: Path) -> tuple[SeriesSpec, list[Path]]:
    study = SeriesSpec().study_uid
    specs = [SeriesSpec(study_uid=study, seed=i) for i in range(2)]
    paths = []
    for i, spec in enumerate(specs):
        paths += write_series(folder / f"s{i}", ct_like_volume((6, 24, 24), seed=i), spec)
    return specs[0], paths


def _seg_instances(server) -> list[dict]:
    found = []
    for series in server.get("/series"):
        info = server.get(f"/series/{series}")
        if info["MainDicomTags"].get("Modality") == "SEG":
            found += [server.get(f"/instances/{i}/simplified-tags") for i in info["Instances"]]
    return found


def _everything_written(out: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".html"))


def test_the_whole_loop_the_seg_read_from_orthanc_goes_back_into_its_study_referencing_its_series(orthanc, cli, tmp_path, monkeypatch):  # noqa: F811
    orthanc.delete_all()
    spec, paths = _two_series(tmp_path / "in")
    orthanc.upload(paths)
    monkeypatch.setenv("VOXPIPE_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("VOXPIPE_DICOMWEB_PASSWORD", orthanc.password)
    source = f"dicomweb+{orthanc.dicomweb_url}?StudyInstanceUID={spec.study_uid}"  # read from the PACS, not from disk
    result = cli("run", _config(tmp_path, orthanc.dicomweb_url), "-i", source, "-o", tmp_path / "out", "--workers", "0")
    assert result.exit_code == 0, result.stderr
    segs = _seg_instances(orthanc)
    assert len(segs) == 2
    sources = {str(pydicom.dcmread(p).SeriesInstanceUID) for p in paths}
    assert {seg["StudyInstanceUID"] for seg in segs} == {spec.study_uid}  # filed in the source's study, not a new patient
    assert len(orthanc.get("/patients")) == 1 and len(orthanc.get("/studies")) == 1
    referenced = {seg["ReferencedSeriesSequence"][0]["SeriesInstanceUID"] for seg in segs}
    assert referenced == sources
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stow = [
        h
        for case in manifest["cases"]
        for h in json.loads((tmp_path / "out" / case["case_id"] / "case.json").read_text())["history"]
        if h["op"] == "write.stow"
    ]
    assert [h["instances"] for h in stow] == [1, 1]
    written = _everything_written(tmp_path / "out") + result.stdout + result.stderr
    assert orthanc.password not in written
    assert spec.study_uid not in written and not any(uid in written for uid in sources)  # the query value and UIDs stay out


def test_wrong_credentials_fail_each_case_in_one_line_and_the_run_goes_on(orthanc, cli, tmp_path, monkeypatch):  # noqa: F811
    orthanc.delete_all()
    _, paths = _two_series(tmp_path / "in")
    orthanc.upload(paths)
    monkeypatch.setenv("VOXPIPE_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("VOXPIPE_DICOMWEB_PASSWORD", "wrong-Pa55word")
    result = cli("run", _config(tmp_path, orthanc.dicomweb_url), "-i", tmp_path / "in", "-o", tmp_path / "out", "--workers", "0")
    assert result.exit_code == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [c["status"] for c in manifest["cases"]] == ["failed", "failed"]  # the second case was still tried
    for case in manifest["cases"]:
        assert "\n" not in case["error"] and "refused the credentials (HTTP 401)" in case["error"]
        assert "VOXPIPE_DICOMWEB_PASSWORD" in case["error"]
    assert _seg_instances(orthanc) == []
    assert not any((tmp_path / "out").glob("case-*"))  # nothing partial published
    written = _everything_written(tmp_path / "out") + result.stdout + result.stderr
    assert "wrong-Pa55word" not in written and "Traceback" not in written


def test_a_pseudonymous_seg_is_refused_before_anything_is_sent(orthanc, cli, tmp_path, monkeypatch):  # noqa: F811
    orthanc.delete_all()
    _, paths = _two_series(tmp_path / "in")
    orthanc.upload(paths)
    monkeypatch.setenv("VOXPIPE_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("VOXPIPE_DICOMWEB_PASSWORD", orthanc.password)
    config = _config(tmp_path, orthanc.dicomweb_url, identity="deidentified")
    for command in (("validate", config), ("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out", "--workers", "0")):
        result = cli(*command)  # validate knows write.dicom_seg's choice: every case would fail, so none runs
        assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
        assert "stage 3 (write.dicom_seg) writes a pseudonymous SEG" in result.error_lines[0] and "identity: any" in result.error_lines[0]
    assert not (tmp_path / "out").exists()
    assert _seg_instances(orthanc) == [] and len(orthanc.get("/patients")) == 1
    deid = config.read_text().replace(
        "  - use: write.dicom_seg", "  - use: deid.dicom\n    with: {key_file: k.key}\n  - use: write.dicom_seg"
    )
    config.write_text(deid.replace("identity: deidentified", "identity: source"))
    assert "(deid.dicom) de-identifies the series" in cli("validate", config).stderr


def test_a_file_outside_the_source_study_fails_the_case_before_anything_is_sent(fake_stow, tmp_path):
    """What validate cannot see (a plugin stage writing foreign DICOM) is still refused per case."""
    from voxpipe_plugins.pacs.stow import StowWriter

    case = _case(tmp_path)
    foreign = write_series(tmp_path / "foreign", np.zeros((1, 16, 16)), SeriesSpec())  # another study
    (case["output_dir"] / "foreign.dcm").write_bytes(foreign[0].read_bytes())
    with pytest.raises(Exception) as caught:
        StowWriter(url=fake_stow)(case)
    assert "Nothing was sent" in str(caught.value) and _FakeStow.seen == []


# -- credentials never in a config ------------------------------------------------------------------

CREDENTIAL_FIELDS = [
    "user", "username", "User", "login", "password", "Password", "passwd", "pass", "pw", "passphrase", "token", "access_token",
    "api_key", "apiKey", "api-key", "private_key", "auth", "Authorization", "bearer", "cookie", "jwt", "session_id", "credentials",
]  # fmt: skip


def _refusal(registry, stow_with: str, overrides: tuple[str, ...] = ()) -> list[str]:
    """The config problems `voxpipe validate` would print (the same checker, without the CLI around it)."""
    from voxpipe.config import validate_text
    from voxpipe.errors import ConfigError

    text = f"version: 1\nname: t\nstages:\n  - use: load.dicom\n  - use: write.stow\n    with: {stow_with}\n"
    with pytest.raises(ConfigError) as caught:
        validate_text(text, registry, source="c.yaml", overrides=overrides)
    return str(caught.value).splitlines()


@pytest.mark.parametrize("name", CREDENTIAL_FIELDS)
def test_a_credential_field_in_the_config_is_refused_in_one_line(registry, name):
    lines = _refusal(registry, f'{{url: "http://127.0.0.1:1/dicom-web", {name}: S3cretValue}}')
    assert len(lines) == 1 and "never read from a config" in lines[0] and "VOXPIPE_DICOMWEB" in lines[0]
    assert "S3cretValue" not in lines[0]


@pytest.mark.parametrize(
    "url",
    [
        "http://bob:S3cretValue@127.0.0.1:8042/dicom-web",
        "https://bob@127.0.0.1/dicom-web",
        "http://S3cretValue@127.0.0.1/",
        "http://127.0.0.1:8042/dicom-web?access_token=S3cretValue",
        "http://127.0.0.1:8042/dicom-web#S3cretValue",
        "ftp://127.0.0.1/S3cretValue",
        "file:///S3cretValue",
    ],
)
def test_credentials_or_anything_but_a_plain_http_root_in_the_url_are_refused_without_echoing_it(registry, url):
    in_file = _refusal(registry, f'{{url: "{url}"}}')
    by_set = _refusal(registry, '{url: "http://127.0.0.1:1/dicom-web"}', ("write.stow.url=" + url,))
    for lines in (in_file, by_set):
        assert len(lines) == 1 and "`url`" in lines[0] and "S3cretValue" not in lines[0]


def test_the_cli_refuses_a_credential_in_one_line_with_exit_2(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        'version: 1\nname: t\nstages:\n  - use: load.dicom\n  - use: write.stow\n    with: {url: "http://u:S3cretValue@127.0.0.1:1/dicom-web"}\n'
    )
    result = cli("validate", config)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "S3cretValue" not in result.stderr + result.stdout


def test_a_credential_set_from_the_command_line_is_refused_too(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        'version: 1\nname: t\nstages:\n  - use: load.dicom\n  - use: write.stow\n    with: {url: "http://127.0.0.1:1/dicom-web"}\n'
    )
    result = cli("validate", config, "--set", "write.stow.password=S3cretValue")
    assert result.exit_code == 2 and "never read from a config" in result.stderr and "S3cretValue" not in result.stderr


def test_half_set_credentials_stop_the_run_before_any_case(cli, tmp_path, monkeypatch):
    _, _ = _two_series(tmp_path / "in")
    monkeypatch.setenv("VOXPIPE_DICOMWEB_USER", "someone")
    monkeypatch.delenv("VOXPIPE_DICOMWEB_PASSWORD", raising=False)
    monkeypatch.delenv("VOXPIPE_DICOMWEB_TOKEN", raising=False)
    result = cli("run", _config(tmp_path, "http://127.0.0.1:9/dicom-web"), "-i", tmp_path / "in", "-o", tmp_path / "out", "--workers", "0")
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "VOXPIPE_DICOMWEB_PASSWORD is not set" in result.error_lines[0]


# -- transient errors: a local fake STOW-RS server ----------------------------------------------------


class _FakeStow(http.server.BaseHTTPRequestHandler):
    plan: list = []  # what to answer, request by request: an HTTP status, or "reset"
    seen: list = []

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        parts = max(1, self.rfile.read(length).count(b"Content-Type: application/dicom"))
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        action = type(self).plan.pop(0) if type(self).plan else 200
        if action == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            return
        if action == "short":  # confirms one instance whatever was sent
            action, parts = 200, 1
        if action == "failed":  # 202: some instances refused, listed with their reason
            body = json.dumps({"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [0xA700]}}]}}).encode()
            action = 202
        else:
            body = json.dumps({"00081199": {"vr": "SQ", "Value": [{}] * parts}}).encode() if action == 200 else b""
        self.send_response(action)
        if action == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_stow():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeStow)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    _FakeStow.plan, _FakeStow.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    server.shutdown()
    server.server_close()


def _case(tmp_path: Path) -> dict:
    from voxpipe.cases import CaseSource

    folder = tmp_path / "case"
    folder.mkdir(parents=True)
    source = write_series(tmp_path / "src", np.zeros((1, 8, 8)), SeriesSpec())[0]
    (folder / "segmentation.dcm").write_bytes(source.read_bytes())
    (folder / "notes.txt").write_text("not DICOM")
    return {"output_dir": folder, "source": CaseSource("x", (source,), "dicom"), "history": []}


@pytest.mark.parametrize("plan", [[503], [500, 502], ["reset"], [429, "reset"], [504]])
def test_transient_errors_are_retried(fake_stow, tmp_path, monkeypatch, plan):
    from voxpipe_plugins.pacs.stow import StowWriter

    monkeypatch.setenv("VOXPIPE_DICOMWEB_TOKEN", "tok-S3cret")
    _FakeStow.plan = list(plan)
    case = StowWriter(url=fake_stow, retries=2, backoff_s=0.01)(_case(tmp_path))
    assert case["history"][-1] == {"op": "write.stow", "instances": 1, "requests": len(plan) + 1}
    assert len(_FakeStow.seen) == len(plan) + 1
    assert all(path == "/dicom-web/studies" and auth == "Bearer tok-S3cret" for path, auth in _FakeStow.seen)


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        ([503, 503, 503], "still failing after 3 attempts (HTTP 503)"),
        (["reset"] * 3, "still failing after 3 attempts (connection"),
        ([401], "refused the credentials (HTTP 401)"),
        ([403], "refused the credentials (HTTP 403)"),
        ([400], "rejected the instances (HTTP 400)"),
        ([409], "rejected the instances (HTTP 409)"),
    ],
)
def test_other_errors_fail_the_case_in_one_line_without_retrying_forever(fake_stow, tmp_path, monkeypatch, plan, expected):
    from voxpipe_plugins.pacs.stow import StowWriter

    monkeypatch.setenv("VOXPIPE_DICOMWEB_TOKEN", "tok-S3cret")
    _FakeStow.plan = list(plan)
    with pytest.raises(Exception) as caught:
        StowWriter(url=fake_stow, retries=2, backoff_s=0.01)(_case(tmp_path))
    message = str(caught.value)
    assert expected in message and "\n" not in message and "tok-S3cret" not in message
    assert len(_FakeStow.seen) == len(plan)  # auth and client errors are not retried; transient ones retries+1 times


def test_an_unreachable_server_is_one_line(tmp_path, monkeypatch):
    from voxpipe_plugins.pacs.stow import StowWriter

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Exception) as caught:
        StowWriter(url=f"http://127.0.0.1:{port}/dicom-web", retries=1, backoff_s=0.01)(_case(tmp_path))
    assert "still failing after 2 attempts (connection refused)" in str(caught.value)


def test_https_certificates_are_verified_and_ca_bundle_names_the_authority(tmp_path, monkeypatch):
    import shutil
    import ssl
    import subprocess

    from voxpipe_plugins.pacs.stow import StowWriter

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeStow)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    _FakeStow.plan, _FakeStow.seen = [], []
    monkeypatch.delenv("VOXPIPE_DICOMWEB_CA_BUNDLE", raising=False)
    url = f"https://127.0.0.1:{server.server_address[1]}/dicom-web"
    try:
        with pytest.raises(Exception) as caught:  # a certificate nobody vouches for: refused, not retried
            StowWriter(url=url, retries=3, backoff_s=0.01)(_case(tmp_path))
        assert "TLS certificate" in str(caught.value) and "ca_bundle" in str(caught.value)
        assert _FakeStow.seen == []
        case = StowWriter(url=url, ca_bundle=str(cert))(_case(tmp_path / "again"))
        assert case["history"][-1]["instances"] == 1
        monkeypatch.setenv("VOXPIPE_DICOMWEB_CA_BUNDLE", str(cert))  # the environment's bundle, as for the input
        assert StowWriter(url=url)(_case(tmp_path / "third"))["history"][-1]["instances"] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_validate_says_when_the_ca_bundle_is_missing(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        'version: 1\nname: t\nstages:\n  - use: load.dicom\n  - use: write.stow\n    with: {url: "https://127.0.0.1:1/dicom-web", ca_bundle: nowhere.pem}\n'
    )
    result = cli("validate", config)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "`ca_bundle`: nowhere.pem is not a file" in result.error_lines[0]
    (tmp_path / "nowhere.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert cli("validate", config).exit_code == 0


def test_instances_the_server_lists_as_failed_fail_the_case_with_their_reason(fake_stow, tmp_path):
    from voxpipe_plugins.pacs.stow import StowWriter

    _FakeStow.plan = ["failed"]
    with pytest.raises(Exception) as caught:
        StowWriter(url=fake_stow, retries=2, backoff_s=0.01)(_case(tmp_path))
    assert "refused 1 of 1 instances (failure reasons 0xA700)" in str(caught.value)
    assert len(_FakeStow.seen) == 1


def test_large_outputs_go_in_several_requests(fake_stow, tmp_path):
    from voxpipe_plugins.pacs.stow import StowWriter

    case = _case(tmp_path)
    big = write_series(tmp_path / "big", np.zeros((3, 600, 600)), SeriesSpec())  # ~0.7 MiB each
    for i, path in enumerate(big):
        (case["output_dir"] / f"extra{i}.dcm").write_bytes(path.read_bytes())
    result = StowWriter(url=fake_stow, identity="any", batch_mib=1)(case)
    assert result["history"][-1] == {"op": "write.stow", "instances": 4, "requests": 3}  # the small SEG rides with one of them
    assert len(_FakeStow.seen) == 3


def test_a_server_that_confirms_fewer_instances_than_sent_fails_the_case(fake_stow, tmp_path):
    from voxpipe_plugins.pacs.stow import StowWriter

    case = _case(tmp_path)
    (case["output_dir"] / "second.dcm").write_bytes((case["output_dir"] / "segmentation.dcm").read_bytes())
    _FakeStow.plan = ["short"]
    with pytest.raises(Exception) as caught:
        StowWriter(url=fake_stow, identity="any")(case)
    assert "confirmed 1 of 2 instances" in str(caught.value)

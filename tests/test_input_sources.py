"""The core seam for URL inputs (voxpipe.input_sources) and the pacs URL checks, without a server."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import tempfile
import types
from importlib.metadata import EntryPoint
from pathlib import Path
from urllib.parse import quote

import pytest

from voxpipe import input_sources
from voxpipe.errors import UsageError
from voxpipe.input_sources import (
    InputSources,
    InputSourceSpec,
    checked_input_source,
    load_input_sources,
    open_input,
    redacted_source,
    source_text,
)
from voxpipe.plugin import hookimpl
from voxpipe_plugins.pacs.urls import parse_dicomweb, parse_dimse

MARK = "SECRETMARK91"


def forms(value: str) -> set[str]:
    return {value, quote(value), quote(value, safe=""), base64.b64encode(value.encode()).decode().rstrip("=")}


def test_urls_survive_click_paths_and_local_paths_stay_paths(tmp_path, monkeypatch):
    url = "dicomweb+http://127.0.0.1:8042/dicom-web?StudyInstanceUID=1.2.3"
    assert source_text(url) == url
    assert source_text(Path(url)) == url  # pathlib collapsed '//' to '/': put back
    assert source_text(Path("dimse://AE@127.0.0.1:104?StudyInstanceUID=1.2")) == "dimse://AE@127.0.0.1:104?StudyInstanceUID=1.2"
    assert source_text(tmp_path) is None and source_text("study/") is None and source_text(None) is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c:" / "data").mkdir(parents=True)  # a real local folder that merely looks like a URL stays local
    assert source_text(Path("c:/data")) is None


@pytest.mark.parametrize(
    "url",
    [
        f"dicomweb+http://127.0.0.1:8042/dicom-web?PatientID={MARK}&AccessionNumber={MARK}&StudyDate=20200101-20201231",
        f"dicomweb+https://user:{MARK}@pacs.example.org/dicom-web?StudyInstanceUID=1.2.3",
        f"dicomweb+https://{MARK}@pacs.example.org/dicom-web?StudyInstanceUID=1.2.3",
        f"dicomweb+https://user:{quote(MARK + '@x', safe='')}@pacs.example.org/dicom-web?StudyInstanceUID=1.2.3",
        f"dicomweb+http://[::1]:8042/dicom-web?PatientID={quote(MARK + ' &=#')}#{MARK}",
        f"dimse://{MARK}@127.0.0.1:104?StudyInstanceUID=1.2.3&SeriesInstanceUID=4.5.6",
        f"dimse://user:{MARK}@127.0.0.1:104?StudyInstanceUID=1.2.3",
        f"dicomweb+http://127.0.0.1:notaport/?PatientID={MARK}",
    ],
)
def test_the_recorded_source_holds_no_value_and_no_credential(url):
    shown = redacted_source(url)
    assert all(form not in shown for form in forms(MARK)), shown
    assert shown.split("://")[0] in ("dicomweb+http", "dicomweb+https", "dimse")
    assert "1.2.3" not in shown and "20200101" not in shown  # UIDs and dates are values too


def test_the_recorded_source_keeps_what_identifies_the_server_and_the_query_shape():
    url = "dicomweb+https://pacs.example.org:8443/dicom-web?StudyInstanceUID=1.2.3&PatientID=X"
    assert redacted_source(url) == "dicomweb+https://pacs.example.org:8443/dicom-web?StudyInstanceUID=…&PatientID=…"
    assert redacted_source("dimse://ORTHANC@10.0.0.5:4242?StudyInstanceUID=1.2") == "dimse://<AE>@10.0.0.5:4242?StudyInstanceUID=…"


@pytest.fixture
def fake_sources(monkeypatch, tmp_path):
    """A registry of URL sources with one test scheme whose opener writes one file (or fails when asked)."""
    calls = []

    def opener(url, folder, options):
        calls.append((url, folder, dict(options)))
        (folder / "a.dcm").write_bytes(b"x")
        if "fail" in url:
            raise input_sources.InputSourceError("the test source failed")

    sources = InputSources(specs={"test+x": InputSourceSpec("test+x", "a test source", opener)})
    monkeypatch.setattr(input_sources, "_loaded", sources)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return calls


def test_an_input_url_becomes_a_private_folder_that_is_removed_afterwards(fake_sources, tmp_path):
    with open_input("test+x://host/?a=1", {"ae_title": "ME"}) as folder:
        assert folder.parent == tmp_path and (folder.stat().st_mode & 0o777) == 0o700
        assert (folder / "a.dcm").read_bytes() == b"x"
    assert not folder.exists()
    assert fake_sources[0][0] == "test+x://host/?a=1" and fake_sources[0][2] == {"ae_title": "ME"}
    with open_input(tmp_path / "local") as same:
        assert same == tmp_path / "local"  # a local path passes through untouched


@pytest.mark.parametrize("failure", ["opener", "body", "interrupt"])
def test_the_folder_goes_whatever_ends_the_command(fake_sources, tmp_path, failure):
    url = "test+x://host/fail" if failure == "opener" else "test+x://host/"
    error = KeyboardInterrupt if failure == "interrupt" else (UsageError if failure == "opener" else RuntimeError)
    with pytest.raises(error):
        with open_input(url):
            raise error("stop") if error is not UsageError else AssertionError("unreachable")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_scheme_lists_the_known_ones(fake_sources):
    with pytest.raises(UsageError, match=r"no plugin reads `ftp://` inputs; known URL schemes: test\+x://"):
        with open_input("ftp://host/x"):
            pass


@pytest.mark.parametrize(
    "spec, message",
    [
        ("not a spec", "expected voxpipe.plugin.InputSourceSpec"),
        (InputSourceSpec("File", "s", "m:f"), "lower-case URL scheme"),
        (InputSourceSpec("file", "s", "m:f"), "lower-case URL scheme"),
        (InputSourceSpec("my scheme", "s", "m:f"), "lower-case URL scheme"),
        (InputSourceSpec("ok", " ", "m:f"), "summary"),
        (InputSourceSpec("ok", "two\nlines", "m:f"), "summary"),
        (InputSourceSpec("ok", "s", "no-colon"), "opener"),
    ],
)
def test_malformed_registrations_are_refused_with_a_reason(spec, message):
    with pytest.raises((TypeError, ValueError), match=message):
        checked_input_source(spec)


def test_two_plugins_claiming_a_scheme_leave_it_out_and_name_both(monkeypatch):
    def plugin(name: str) -> types.ModuleType:
        module = types.ModuleType(name)

        @hookimpl
        def voxpipe_register_input_sources(register):
            register(InputSourceSpec("same", "contested", "m:f"))
            register(InputSourceSpec(f"only-{name.split('_')[-1]}", "one owner", "m:f"))

        module.voxpipe_register_input_sources = voxpipe_register_input_sources
        monkeypatch.setitem(sys.modules, name, module)
        return module

    monkeypatch.setattr(input_sources, "_loaded", None)  # undone last: the real sources come back after the test
    plugin("fake_plugin_a"), plugin("fake_plugin_b")
    points = [EntryPoint(n, f"fake_plugin_{n}", "voxpipe") for n in ("a", "b")]
    monkeypatch.setattr("voxpipe.registry.entry_points", lambda group: points)
    found = load_input_sources(reload=True)
    assert sorted(found.specs) == ["only-a", "only-b"]
    assert "`a`" in found.conflicts["same"] and "`b`" in found.conflicts["same"]
    with pytest.raises(UsageError, match="registered by both"):
        with open_input("same://x"):
            pass


def test_the_pacs_family_registers_its_schemes_without_importing_network_libraries():
    code = (
        "import sys; from voxpipe.input_sources import load_input_sources; s = load_input_sources();"
        "print(sorted(s.specs)); print(sorted(m for m in ('requests', 'dicomweb_client', 'pynetdicom', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["['dicomweb+http', 'dicomweb+https', 'dimse']", "[]"]


@pytest.mark.parametrize(
    "url, message",
    [
        ("dicomweb+http://h/dicom-web?PatientName=X", "query key `PatientName` is not supported"),
        ("dicomweb+http://h/dicom-web?StudyInstanceUID=1.2&StudyInstanceUID=1.3", "given twice"),
        ("dicomweb+http://h/dicom-web?StudyInstanceUID=abc", "not a DICOM UID"),
        ("dicomweb+http://h/dicom-web?StudyInstanceUID=", "has no value"),
        ("dicomweb+http://h/dicom-web?StudyDate=2020", "StudyDate must be"),
        ("dicomweb+http://h/dicom-web?PatientID=*", "wildcard"),
        ("dicomweb+http://h/dicom-web?AccessionNumber=A%3F1", "wildcard"),
        ("dicomweb+http://h/dicom-web?ModalitiesInStudy=C%20T", "ModalitiesInStudy"),
        ("dicomweb+http://h/dicom-web/studies/1.2.3", "service root"),
        ("dicomweb+ftp://h/dicom-web?StudyInstanceUID=1.2", "dicomweb+http:// or dicomweb+https://"),
        ("dicomweb+http://h:99999/dicom-web?StudyInstanceUID=1.2", "host or port"),
        ("dicomweb+http://u:p@h/dicom-web?StudyInstanceUID=1.2", "credentials in the URL are refused"),
        ("dimse://127.0.0.1:104?StudyInstanceUID=1.2", "AE title"),
        ("dimse://AE@127.0.0.1?StudyInstanceUID=1.2", "host and port"),
        ("dimse://A\\E@127.0.0.1:104?StudyInstanceUID=1.2", "1 to 16 printable"),
        ("dimse://AE@127.0.0.1:104?PatientID=X", "query key `PatientID` is not supported"),
        ("dimse://AE@127.0.0.1:104?SeriesInstanceUID=1.2", "needs ?StudyInstanceUID"),
    ],
)
def test_bad_pacs_urls_are_one_line_naming_the_part_at_fault(url, message):
    parse = parse_dimse if url.startswith("dimse") else parse_dicomweb
    with pytest.raises(UsageError, match=re.escape(message)) as caught:
        parse(url)
    assert "\n" not in str(caught.value)
    assert "u:p" not in str(caught.value) and "abc" not in str(caught.value)


def test_good_pacs_urls_parse_to_the_service_and_query():
    target = parse_dicomweb("dicomweb+https://pacs.example.org:8443/dicom-web/?StudyDate=20200101-20201231&ModalitiesInStudy=CT")
    assert target.service_url == "https://pacs.example.org:8443/dicom-web" and target.https
    assert target.query == {"StudyDate": "20200101-20201231", "ModalitiesInStudy": "CT"}
    peer = parse_dimse("dimse://ORTHANC@127.0.0.1:4242?StudyInstanceUID=1.2.3&SeriesInstanceUID=4.5")
    assert (peer.called_ae, peer.host, peer.port, peer.query) == (
        "ORTHANC",
        "127.0.0.1",
        4242,
        {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "4.5"},
    )


def test_a_blocked_plugin_contributes_no_input_scheme(monkeypatch):
    monkeypatch.setattr(input_sources, "_loaded", None)
    monkeypatch.setenv("VOXPIPE_PLUGINS_BLOCK", "pacs")
    assert "dimse" not in load_input_sources().specs
    with pytest.raises(UsageError, match="no plugin reads `dimse://` inputs"):
        with open_input("dimse://AE@127.0.0.1:104?StudyInstanceUID=1.2"):
            pass
    monkeypatch.delenv("VOXPIPE_PLUGINS_BLOCK")
    assert "dimse" in load_input_sources().specs


def test_dicomweb_credentials_come_from_the_environment_only(monkeypatch, tmp_path):
    from voxpipe_plugins.pacs import credentials

    for name in ("VOXPIPE_DICOMWEB_USER", "VOXPIPE_DICOMWEB_PASSWORD", "VOXPIPE_DICOMWEB_TOKEN", "VOXPIPE_DICOMWEB_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    http = credentials.session()
    assert http.auth is None and "Authorization" not in http.headers and http.trust_env is False and http.verify is True
    monkeypatch.setenv("VOXPIPE_DICOMWEB_TOKEN", MARK)
    assert credentials.session().headers["Authorization"] == f"Bearer {MARK}"
    monkeypatch.setenv("VOXPIPE_DICOMWEB_USER", "someone")
    with pytest.raises(UsageError, match="set one kind of credential") as caught:
        credentials.session()
    assert MARK not in str(caught.value)
    monkeypatch.delenv("VOXPIPE_DICOMWEB_TOKEN")
    with pytest.raises(UsageError, match="VOXPIPE_DICOMWEB_PASSWORD is not set"):
        credentials.session()
    monkeypatch.setenv("VOXPIPE_DICOMWEB_PASSWORD", MARK)
    assert credentials.session().auth == ("someone", MARK)
    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    monkeypatch.setenv("VOXPIPE_DICOMWEB_CA_BUNDLE", str(pem))
    assert credentials.ca_bundle() == pem
    with pytest.raises(UsageError, match="--ca-bundle: the CA bundle .* is not a file"):
        credentials.ca_bundle(tmp_path / "missing.pem")
    assert credentials.session(pem).verify == str(pem)


def test_the_command_lines_plugin_selection_reaches_url_inputs(cli, monkeypatch, tmp_path):
    """`--block-plugin pacs` on the command line (not only the environment) removes its URL schemes, and `plugins` lists them."""
    monkeypatch.setattr(input_sources, "_loaded", None)
    listed = cli("plugins", "--json")
    schemes = {(s["scheme"], s["plugin"]) for s in json.loads(listed.stdout)["input_sources"]}
    assert {("dicomweb+http", "pacs"), ("dicomweb+https", "pacs"), ("dimse", "pacs")} <= schemes
    assert "Input sources (-i SCHEME://...):" in cli("plugins").stdout
    blocked = cli("info", "-i", "dimse://AE@127.0.0.1:104?StudyInstanceUID=1.2", "--block-plugin", "pacs")
    assert blocked.exit_code == 2 and "no plugin reads `dimse://` inputs" in blocked.error_lines[0]

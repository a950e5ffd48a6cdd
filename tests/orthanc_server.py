"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) for PACS tests, started once per session.

Use it from a test module with ``from tests.orthanc_server import orthanc  # noqa: F401`` (or
``pytest_plugins = ["tests.orthanc_server"]``). The server is a plain child process with its own JSON
config, database and storage in a temporary folder; HTTP answers 127.0.0.1 only (RemoteAccessAllowed
false), basic auth is on with a random password, and it is terminated at the end of the session (also
when a test fails). Tests skip with a reason when the binary or the DICOMweb plugin is missing.
Orthanc 1.10 has no HTTP/DICOM bind-address option, so the ports are free ports picked at start,
HTTP refuses other hosts (RemoteAccessAllowed false) and the DICOM port serves only the declared
AE titles, each on 127.0.0.1 (DicomCheckModalityHost); nothing but 127.0.0.1 is ever addressed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ORTHANC_BIN = Path(os.environ.get("VOXPIPE_TEST_ORTHANC", "/usr/sbin/Orthanc"))
DICOMWEB_PLUGIN = Path(os.environ.get("VOXPIPE_TEST_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"))
HOST = "127.0.0.1"
TEST_AET = "VOXPIPE"  # the calling AE title VoxPipe uses by default; allowed to C-FIND/C-GET/C-STORE
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the tiny race with other processes is acceptable in tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def missing_reason() -> str | None:
    """Why an Orthanc cannot be started here, or None when it can."""
    if not ORTHANC_BIN.is_file():
        return f"Orthanc is not installed ({ORTHANC_BIN} missing; apt-get install orthanc orthanc-dicomweb)"
    if not DICOMWEB_PLUGIN.exists():
        return f"the Orthanc DICOMweb plugin is not installed ({DICOMWEB_PLUGIN} missing; apt-get install orthanc-dicomweb)"
    return None


@dataclass
class OrthancServer:
    """A running Orthanc: URLs, credentials and a few REST helpers for tests."""

    folder: Path
    http_port: int
    dicom_port: int
    aet: str = "ORTHANC"
    user: str = "voxpipe"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    @property
    def host(self) -> str:
        return HOST

    @property
    def log_path(self) -> Path:
        return self.folder / "orthanc.log"

    # -- life cycle ---------------------------------------------------------------------------------
    def config(self) -> dict:
        storage = self.folder / "storage"
        return {
            "Name": "voxpipe-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "SslEnabled": False,
            "HttpDescribeErrors": True,
            "DicomServerEnabled": True,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": False,  # Orthanc 1.10 cannot bind 127.0.0.1 only: DICOM peers must be declared,
            "DicomAlwaysAllowStore": False,  # and on 127.0.0.1 (DicomCheckModalityHost)
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomCheckModalityHost": True,
            "DicomModalitiesInDatabase": False,
            "DicomModalities": {"voxpipe": self.modality(TEST_AET, HOST, free_port())},
            "DicomScpTimeout": 30,
            "OverwriteInstances": True,
            "StableAge": 1,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        }

    @staticmethod
    def modality(aet: str, host: str, port: int) -> dict:
        return {
            "AET": aet,
            "Host": host,
            "Port": int(port),
            "AllowEcho": True,
            "AllowFind": True,
            "AllowGet": True,
            "AllowMove": True,
            "AllowStore": True,
        }

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        config_path = self.folder / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        log = self.log_path.open("wb")
        self.process = subprocess.Popen([str(ORTHANC_BIN), str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start (code {self.process.returncode}); log:\n{self.log_tail()}")
            try:
                self.get("/system")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer /system within {START_TIMEOUT_S:.0f} s; log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=1)  # Orthanc takes ~3.5 s to stop cleanly; a test server's data goes with its folder
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- REST helpers -------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(self.http_url + path, data=body, method=method)
        request.add_header("Authorization", f"Basic {token}")
        if body is not None:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def get(self, path: str):
        return self._request("GET", path)

    def post(self, path: str, payload) -> object:
        return self._request("POST", path, json.dumps(payload).encode())

    def put(self, path: str, payload) -> object:
        return self._request("PUT", path, json.dumps(payload).encode())

    def delete(self, path: str) -> object:
        return self._request("DELETE", path)

    def upload(self, paths: Iterable[Path | str]) -> list[dict]:
        """POST each DICOM file to /instances; returns Orthanc's answers (ID, ParentSeries, ...)."""
        answers = []
        for path in paths:
            answers.append(self._request("POST", "/instances", Path(path).read_bytes(), "application/dicom"))
        return answers

    def instances(self) -> list[str]:
        return list(self.get("/instances"))

    def delete_all(self) -> None:
        """Remove every patient (and so every study, series and instance)."""
        for patient in self.get("/patients"):
            self.delete(f"/patients/{patient}")

    def add_modality(self, name: str, aet: str, host: str = HOST, port: int = 104) -> None:
        """Declare a DICOM peer Orthanc may talk to (C-STORE to it, and accept its C-FIND/C-GET/C-MOVE)."""
        self.put(f"/modalities/{name}", self.modality(aet, host, port))


def start_orthanc(folder: Path) -> OrthancServer:
    """Start an Orthanc in ``folder`` (which must be private to the caller) and return it once it answers."""
    for attempt in range(3):  # a port picked free may be taken before Orthanc binds it: pick again
        server = OrthancServer(folder=folder / f"try{attempt}", http_port=free_port(), dicom_port=free_port())
        try:
            server.start()
            return server
        except RuntimeError:
            server.stop()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> Iterator[OrthancServer]:
    """One real Orthanc for the whole session (tests call ``orthanc.delete_all()`` when they need it empty)."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("orthanc")
    server = start_orthanc(folder)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)

"""Test data and tools for PACS input tests: one study of varied series, and an HTTP proxy that drops transfers.

The study holds a plain axial CT, an oblique CT, an enhanced (multi-frame) CT and JPEG 2000,
JPEG-LS and RLE series, all sharing one StudyInstanceUID so one query fetches them all. The proxy
forwards to a server on 127.0.0.1 and cuts responses to WADO-RS series retrievals after a few
kilobytes, as a network or a server that dies mid-transfer would.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from tests.dicom_codecs import write_coded_series
from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_enhanced, write_series

CODED = ("j2k", "jpeg-ls", "rle")


@dataclass
class Study:
    folder: Path
    study_uid: str
    files: list[Path]
    series_uids: list[str]


def _restudy(paths: list[Path], study_uid: str, **values) -> None:
    """Put already-written files (compressed ones included: pixel data is kept as stored) into ``study_uid``."""
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study_uid
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)


def write_study(folder: Path, patient_id: str = "PID-TEST", accession: str = "ACC-TEST") -> Study:
    """The test study (six series, about 40 small files) under ``folder``."""
    study_uid = generate_uid()
    identity = {"PatientID": patient_id, "AccessionNumber": accession}
    files: list[Path] = []
    series: list[str] = []
    plain = SeriesSpec(study_uid=study_uid, series_description="plain", seed=1)
    files += write_series(folder / "plain", ct_like_volume((6, 40, 32), seed=1), plain)
    oblique = SeriesSpec(
        study_uid=study_uid,
        series_description="oblique",
        row_dir=(0.9659258, 0.2588190, 0.0),
        col_dir=(-0.2241439, 0.8365163, -0.5),  # orthogonal to row_dir, tilted 30 degrees
        seed=2,
    )
    files += write_series(folder / "oblique", ct_like_volume((5, 32, 36), seed=2), oblique)
    enhanced = SeriesSpec(study_uid=study_uid, series_description="enhanced", seed=3)
    (folder / "enhanced").mkdir(parents=True)
    files.append(
        write_enhanced(
            folder / "enhanced" / "enhanced.dcm", ct_like_volume((7, 24, 28), seed=3), enhanced, frame_order=[3, 0, 6, 1, 5, 2, 4]
        )
    )
    series += [plain.series_uid, oblique.series_uid, enhanced.series_uid]
    for index, codec in enumerate(CODED):
        coded, _volume = write_coded_series(folder / codec, codec, slices=4, size=32, seed=10 + index)
        files += coded
        series.append(str(pydicom.dcmread(coded[0]).SeriesInstanceUID))
    _restudy(files, study_uid, **identity)
    return Study(folder, study_uid, files, series)


def local_series(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """case id -> (array, affine) of every series under ``root``, by the io_dicom loader itself."""
    from voxpipe.cases import case_id, id_key
    from voxpipe_plugins.io_dicom.loader import DicomOptions, case_source, discover_series, load_volume

    key = id_key()
    result = {}
    for series in discover_series(root, DicomOptions().selection):
        volume = load_volume([h.path for h in series.headers], DicomOptions(), series.frames, series.headers)
        result[case_id(case_source(series), key)] = (np.asarray(volume.array), np.asarray(volume.affine))
    return result


def make_tls_files(folder: Path) -> tuple[Path, Path, Path] | None:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (openssl CLI); None without openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    steps = [
        ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=VoxPipe test CA"],
        ["req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2"]
        + ["-extfile", "ext.cnf"],
    ]
    for step in steps:
        subprocess.run([openssl, *step], cwd=folder, check=True, capture_output=True)
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


class DroppingProxy:
    """A one-request-per-connection HTTP proxy on 127.0.0.1 that cuts WADO-RS series responses after ``cut`` bytes.

    ``cut=None`` passes everything; ``tls=(cert, key)`` makes it an https front for the plain-http upstream.
    """

    def __init__(
        self, upstream_port: int, cut: int | None = 6000, tls: tuple[Path, Path] | None = None, swap: tuple[str, str] | None = None
    ) -> None:
        self.upstream_port = upstream_port
        self.cut = cut
        self.swap = (swap[0].encode(), swap[1].encode()) if swap else None  # WADO-RS of series A answered with series B
        self._tls = None
        if tls is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(str(tls[0]), str(tls[1]))
        self.cuts = 0
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        if self._tls is not None:
            try:
                client = self._tls.wrap_socket(client, server_side=True)
            except (OSError, ssl.SSLError):  # the client refused our certificate
                client.close()
                return
        with client:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(65536)
                if not chunk:
                    return
                request += chunk
            head, _, body = request.partition(b"\r\n\r\n")
            lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
            path = lines[0].split(b" ")[1] if len(lines[0].split(b" ")) > 1 else b""
            wado = b"/series/" in path and not path.rstrip(b"/").endswith(b"/metadata") and b"?" not in path.split(b"/series/")[-1]
            if wado and self.swap:
                lines[0] = lines[0].replace(self.swap[0], self.swap[1])
            with socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
                upstream.sendall(b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n" + body)
                sent = 0
                while True:
                    chunk = upstream.recv(65536)
                    if not chunk:
                        return
                    if wado and self.cut is not None and sent + len(chunk) > self.cut:
                        client.sendall(chunk[: self.cut - sent])
                        self.cuts += 1
                        return  # both sockets close: the client sees the transfer end early
                    client.sendall(chunk)
                    sent += len(chunk)

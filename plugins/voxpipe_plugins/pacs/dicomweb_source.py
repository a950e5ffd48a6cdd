"""``dicomweb+http(s)://`` inputs: QIDO-RS finds the series, WADO-RS brings their instances into a private folder.

Instances are asked for in their STORED transfer syntax (``transfer-syntax=*``): a server asked
for the default (explicit VR little endian) must transcode, and may fail on JPEG 2000; decoding
is then the local loader's job, exactly as for files on disk. Series are fetched in parallel
(a few at a time), each streamed part by part (dicomweb-client's multipart decoder) and written
file by file, so memory holds one instance per thread. Each series must arrive whole: a count
short of what QIDO announced, a dropped connection or a series larger than the memory cap
(``VOXPIPE_MAX_GIB``) fails the input, and the caller removes everything fetched.

Messages name the server (host and port) and the query KEYS only; library exceptions, whose
text quotes URLs with query values, are never shown (``--debug`` shows them, redacted).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from voxpipe.input_sources import InputSourceError
from voxpipe_plugins.pacs.credentials import CA_BUNDLE_ENV, PASSWORD_ENV, TOKEN_ENV, USER_ENV, ca_bundle, session
from voxpipe_plugins.pacs.urls import UID, DicomwebTarget, parse_dicomweb

ACCEPT_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'  # as stored: no transcoding
PARALLEL_SERIES = 4
TIMEOUT_S = (10.0, 120.0)  # connect, read
QUIET_LOGGERS = ("dicomweb_client", "urllib3", "requests", "pydicom")
STUDY_KEYS = ("StudyInstanceUID", "PatientID", "ModalitiesInStudy", "StudyDate", "AccessionNumber")
SERIES_COUNT_TAG = "00201209"  # NumberOfSeriesRelatedInstances


def open_dicomweb(url: str, folder: Path, options: Mapping[str, Any]) -> None:
    """The input source's opener: every series the query selects, one sub-folder each, under ``folder``."""
    target = parse_dicomweb(url)
    bundle = ca_bundle(options.get("ca_bundle"))
    if bundle and not target.https:
        raise InputSourceError(f"-i/--input {target.shown}: a CA bundle is for dicomweb+https:// inputs; use https or drop it")
    with quiet_libraries():
        try:
            series = find_series(target, bundle)
            if not series:
                keys = ", ".join(target.query)
                raise InputSourceError(f"no series on the DICOMweb server {server(target)} match the query ({keys}); check the values")
            fetch_all(target, bundle, series, folder)
        except InputSourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - library errors quote URLs with query values: say what happened, not their text
            raise InputSourceError(describe_failure(exc, target)) from exc


def server(target: DicomwebTarget) -> str:
    parts = urlsplit(target.service_url)
    return f"{parts.hostname}:{parts.port or (443 if target.https else 80)}"


@contextlib.contextmanager
def client(target: DicomwebTarget, bundle: Path | None) -> Iterator:
    """A DICOMweb client and its requests session, closed afterwards (a server waits for idle keep-alive connections)."""
    from dicomweb_client.api import DICOMwebClient

    http = session(bundle)
    web = DICOMwebClient(target.service_url, session=http, timeout=TIMEOUT_S)
    web.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=200)
    try:
        yield web, http
    finally:
        http.close()


def find_series(target: DicomwebTarget, bundle: Path | None) -> list[tuple[str, str, int | None]]:
    """(study UID, series UID, instances announced) of every series the query selects, by QIDO-RS."""
    with client(target, bundle) as (web, _http):
        return _search(web, target.query)


QIDO_MAX_PAGES = 200  # pages of the server's own size: far more than a query meant for one run


def _all_pages(search, **kwargs) -> list[dict]:
    """Every match of a QIDO-RS search, page by page at the server's own page size, until a page brings nothing new.

    Not dicomweb-client's ``get_remaining``, which pages until an empty answer: a server that
    ignores ``offset`` (Orthanc's DICOMweb plugin 1.7 does, with ModalitiesInStudy) keeps it
    asking forever. No ``limit`` is sent either: that plugin applies it before the offset, so
    the second page of a limited search comes back empty and matches would be lost.
    """
    import json

    found: dict[str, dict] = {}
    offset = 0
    for _ in range(QIDO_MAX_PAGES):
        page = search(offset=offset, **kwargs) if offset else search(**kwargs)
        fresh = {key: item for key, item in ((json.dumps(item, sort_keys=True), item) for item in page or []) if key not in found}
        if not fresh:
            return list(found.values())
        found.update(fresh)
        offset += len(page)
    raise InputSourceError(
        f"the DICOMweb query still brings new matches after {QIDO_MAX_PAGES} pages; narrow it (StudyInstanceUID, StudyDate)"
    )


def _search(web, query: dict[str, str]) -> list[tuple[str, str, int | None]]:
    series_filter = {"SeriesInstanceUID": query["SeriesInstanceUID"]} if "SeriesInstanceUID" in query else {}
    study_filters = {key: query[key] for key in STUDY_KEYS if key in query and key != "StudyInstanceUID"}
    if "StudyInstanceUID" in query and not study_filters:
        studies = [query["StudyInstanceUID"]]
    elif not study_filters and "StudyInstanceUID" not in query:
        found = _all_pages(web.search_for_series, search_filters=series_filter, fields=[SERIES_COUNT_TAG])
        return _checked_uids(sorted({(_value(s, "0020000D"), _value(s, "0020000E"), _count(s)) for s in found if _value(s, "0020000E")}))
    else:
        if "StudyInstanceUID" in query:
            study_filters["StudyInstanceUID"] = query["StudyInstanceUID"]
        studies = sorted({_value(s, "0020000D") for s in _all_pages(web.search_for_studies, search_filters=study_filters)} - {""})
    result = []
    for study in studies:
        found = _all_pages(web.search_for_series, study_instance_uid=study, search_filters=series_filter, fields=[SERIES_COUNT_TAG])
        result.extend((study, _value(s, "0020000E"), _count(s)) for s in found if _value(s, "0020000E"))
    return _checked_uids(sorted(set(result)))


def _checked_uids(series: list[tuple[str, str, int | None]]) -> list[tuple[str, str, int | None]]:
    """The server's UIDs go into request paths: digits and dots only, or the answer is refused."""
    for study, uid, _count in series:
        if not (UID.match(study) and UID.match(uid)):
            raise InputSourceError("the DICOMweb server listed a series with an invalid UID; check the server")
    return series


def _value(item: dict, tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def _count(item: dict) -> int | None:
    text = _value(item, SERIES_COUNT_TAG)
    return int(text) if text.isdigit() else None


def fetch_all(target: DicomwebTarget, bundle: Path | None, series: list[tuple[str, str, int | None]], folder: Path) -> None:
    """Each series into ``folder/series-NNNN/`` (in parallel); the first failure stops the rest."""
    from voxpipe.limits import max_bytes

    cap = max_bytes()
    stop = threading.Event()  # set on the first failure or Ctrl-C: the other series stop after their current instance
    jobs = [(index, study, uid, count) for index, (study, uid, count) in enumerate(series, 1)]
    with ThreadPoolExecutor(max_workers=min(PARALLEL_SERIES, len(jobs))) as pool:
        futures = [
            pool.submit(fetch_series, target, bundle, study, uid, count, folder / f"series-{index:04d}", cap, stop)
            for index, study, uid, count in jobs
        ]
        try:
            for future in futures:
                future.result()
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise


def instances(target: DicomwebTarget, bundle: Path | None, study: str, uid: str, cap: int) -> Iterator[bytes]:
    """The series' instances as the server stores them, one DICOM file's bytes at a time (WADO-RS, streamed).

    The bytes are written as they come rather than parsed and re-encoded (``iter_series`` hands
    out pydicom data sets: re-writing them took three quarters of the fetch time, and a file that
    is not re-encoded is the stored file). The multipart body is split by dicomweb-client's own
    decoder; the UIDs in the path were checked as digits and dots.
    """
    url = f"{target.service_url}/studies/{study}/series/{uid}"
    with client(target, bundle) as (web, http):
        response = http.get(url, headers={"Accept": ACCEPT_STORED}, stream=True, timeout=TIMEOUT_S)
        response.raise_for_status()
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "multipart/related":
            response.close()
            raise InputSourceError(
                f"the DICOMweb server {server(target)} did not answer with DICOM instances ({kind or 'no type'}); check the service path"
            )
        response.iter_content = _bounded(response.iter_content, cap, target)  # a part without an end must not fill memory
        yield from web._decode_multipart_message(response, stream=True)


def _bounded(iter_content, cap: int, target: DicomwebTarget):
    def chunks(*args, **kwargs):
        seen = 0
        for chunk in iter_content(*args, **kwargs):
            seen += len(chunk)
            if seen > cap:
                raise InputSourceError(_too_big(cap, target))
            yield chunk

    return chunks


def _too_big(cap: int, target: DicomwebTarget) -> str:
    from voxpipe.limits import size_text

    return f"a series on the DICOMweb server {server(target)} holds more than the memory cap ({size_text(cap)}); raise VOXPIPE_MAX_GIB or select fewer series"


def fetch_series(
    target: DicomwebTarget, bundle: Path | None, study: str, uid: str, expected: int | None, into: Path, cap: int, stop: threading.Event
) -> None:
    """One series by WADO-RS, streamed; each instance written under a hidden name and renamed when whole."""
    into.mkdir(mode=0o700)
    received = total = 0
    for part in instances(target, bundle, study, uid, cap):
        if stop.is_set():
            return
        if series_of(part) != uid:
            raise InputSourceError(
                f"the DICOMweb server {server(target)} sent an instance of another series than asked for (or not a DICOM file); check the server"
            )
        received += 1
        total += len(part)
        final = into / f"{received:06d}.dcm"
        partial = into / f".{received:06d}.dcm.part"
        with open(partial, "xb") as handle:
            handle.write(part)
        os.replace(partial, final)
        if total > cap:
            raise InputSourceError(_too_big(cap, target))
    if expected is not None and received != expected:
        raise InputSourceError(
            f"the DICOMweb server {server(target)} sent {received} of the {expected} instances of a series "
            "(the connection dropped or the series changed); nothing was kept; try again"
        )


def series_of(part: bytes) -> str:
    """The SeriesInstanceUID in a DICOM file's bytes ("" when there is none or the bytes are not DICOM)."""
    import io
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        return str(header.get("SeriesInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - any unreadable part is "not this series"
        return ""


def describe_failure(exc: BaseException, target: DicomwebTarget) -> str:
    """One PHI-free line for a failure of the server or the network."""
    import requests

    where = server(target)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        how = f"{USER_ENV}/{PASSWORD_ENV} or {TOKEN_ENV}"
        return f"the DICOMweb server {where} refused the credentials (HTTP {status}); check {how}"
    if status == 404:
        return f"the DICOMweb server {where} answered 404 (not found) at {target.shown.split('?')[0]}; check the service path (e.g. /dicom-web) and the query"
    if status is not None:
        return f"the DICOMweb server {where} answered HTTP {status}; check the server's log"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS verification of the DICOMweb server {where} failed; give its CA certificate with --ca-bundle or {CA_BUNDLE_ENV}"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)) or _dropped(exc):
        return f"the DICOMweb server {where} closed the connection during the transfer; nothing was kept; try again"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"the DICOMweb server {where} did not answer in time; check that it runs and is reachable"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"cannot reach the DICOMweb server {where} (connection failed); check the host, the port and that the server runs"
    if isinstance(exc, ValueError) and "multipart" in str(exc).lower():
        return f"the DICOMweb server {where} did not answer with DICOM instances; check the service path"
    return f"reading from the DICOMweb server {where} failed ({type(exc).__name__}); rerun with --debug for details"


def _dropped(exc: BaseException) -> bool:
    """A truncated transfer, however deep the library wrapped it (urllib3 ProtocolError / IncompleteRead)."""
    seen = exc
    for _ in range(6):
        if seen is None:
            return False
        if type(seen).__name__ in ("ProtocolError", "IncompleteRead", "InvalidChunkLength", "RemoteDisconnected"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """The HTTP libraries log request lines (with query values) and server warnings: not while we fetch."""
    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)

"""Parse and check PACS input URLs before any connection: ``dicomweb+http(s)://`` and ``dimse://``.

Every message names the key or part at fault and never repeats a value: query values may be
patient identifiers, and a URL's user-info part may be a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from voxpipe.input_sources import InputSourceError, redacted_source

DICOMWEB_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "PatientID", "ModalitiesInStudy", "StudyDate", "AccessionNumber")
DIMSE_KEYS = ("StudyInstanceUID", "SeriesInstanceUID")
CREDENTIAL_HINT = "set VOXPIPE_DICOMWEB_USER and VOXPIPE_DICOMWEB_PASSWORD (or VOXPIPE_DICOMWEB_TOKEN) instead"

UID = re.compile(r"^[0-9]{1,64}(\.[0-9]{1,64}){0,63}$")
_DATE_RANGE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}(,[A-Z0-9_]{1,16})*$")
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire, no backslash


@dataclass(frozen=True)
class DicomwebTarget:
    """A DICOMweb service root (http or https, no credentials) and the query to run on it."""

    service_url: str
    query: dict[str, str]
    shown: str  # the redacted form, for messages

    @property
    def https(self) -> bool:
        return self.service_url.startswith("https://")


@dataclass(frozen=True)
class DimseTarget:
    """A DICOM peer (called AE title, host, port) and the study (and series) to fetch from it."""

    called_ae: str
    host: str
    port: int
    query: dict[str, str]
    shown: str


def _query(url: str, allowed: tuple[str, ...], shown: str) -> dict[str, str]:
    parts = urlsplit(url)
    if parts.fragment:
        raise InputSourceError(f"-i/--input {shown}: a '#' part is not allowed in an input URL; remove it")
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        name = key if re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,40}", key) else "(a key with unusual characters)"
        if key not in allowed:
            raise InputSourceError(f"-i/--input {shown}: query key `{name}` is not supported; use {', '.join(allowed)}")
        if key in query:
            raise InputSourceError(f"-i/--input {shown}: query key `{key}` is given twice; give it once")
        if not value.strip():
            raise InputSourceError(f"-i/--input {shown}: query key `{key}` has no value; give one or leave the key out")
        query[key] = value.strip()
    for key, value in query.items():
        if key.endswith("InstanceUID") and not (len(value) <= 64 and UID.match(value)):
            raise InputSourceError(f"-i/--input {shown}: the {key} value is not a DICOM UID (digits and dots, at most 64 characters)")
        if key == "StudyDate" and not (_DATE_RANGE.match(value) and value != "-"):
            raise InputSourceError(f"-i/--input {shown}: StudyDate must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
        if key == "ModalitiesInStudy" and not _MODALITY.match(value):
            raise InputSourceError(f"-i/--input {shown}: ModalitiesInStudy must be modality codes such as CT or CT,MR")
        if key in ("PatientID", "AccessionNumber") and any(c in value for c in "*?"):
            raise InputSourceError(f"-i/--input {shown}: the {key} value holds a wildcard (* or ?); give the exact value")
        if key in ("PatientID", "AccessionNumber") and (len(value) > 64 or "\\" in value or any(ord(c) < 32 for c in value)):
            raise InputSourceError(f"-i/--input {shown}: the {key} value is not a valid DICOM {key} (at most 64 characters, no '\\')")
    if not query:
        raise InputSourceError(
            f"-i/--input {shown}: say what to fetch with a query such as ?StudyInstanceUID=...; keys: {', '.join(allowed)}"
        )
    return query


def parse_dicomweb(url: str) -> DicomwebTarget:
    """``dicomweb+https://HOST[:PORT]/PATH?KEY=VALUE&...`` -> the service root and the query."""
    shown = redacted_source(url)
    scheme, _, rest = url.partition("://")
    transport = scheme.lower().removeprefix("dicomweb+")
    if transport not in ("http", "https"):
        raise InputSourceError(f"-i/--input {shown}: use dicomweb+http:// or dicomweb+https://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    if "@" in netloc:
        raise InputSourceError(
            f"-i/--input {shown}: credentials in the URL are refused (they would end up in shell history and logs); {CREDENTIAL_HINT}"
        )
    try:
        parts = urlsplit(f"{transport}://{rest}")
        host, port = parts.hostname, parts.port
    except ValueError:
        raise InputSourceError(f"-i/--input {shown}: the host or port is not valid; write dicomweb+http://HOST:PORT/PATH?...") from None
    if not host:
        raise InputSourceError(f"-i/--input {shown}: no host; write dicomweb+http://HOST:PORT/PATH?...")
    path = parts.path.rstrip("/")
    if re.search(r"/(studies|series|instances)(/|$)", path):
        raise InputSourceError(
            f"-i/--input {shown}: give the DICOMweb service root (e.g. /dicom-web) and select with ?StudyInstanceUID=..."
        )
    query = _query(url, DICOMWEB_KEYS, shown)
    bracketed = f"[{host}]" if ":" in host else host
    service = f"{transport}://{bracketed}" + (f":{port}" if port else "") + path
    return DicomwebTarget(service, query, shown)


def parse_dimse(url: str) -> DimseTarget:
    """``dimse://CALLED_AE@HOST:PORT?StudyInstanceUID=X[&SeriesInstanceUID=Y]`` -> the peer and the query."""
    shown = redacted_source(url)
    rest = url.partition("://")[2]
    netloc, _, tail = rest.partition("?")
    netloc = netloc.rstrip("/")
    called, at, hostport = netloc.rpartition("@")
    if not at or not called:
        raise InputSourceError(f"-i/--input {shown}: name the PACS's AE title: dimse://CALLED_AE@HOST:PORT?StudyInstanceUID=...")
    if ":" in called:
        raise InputSourceError(
            f"-i/--input {shown}: the part before '@' is the PACS's AE title, not a user:password; DIMSE has no passwords"
        )
    if not _AE_TITLE.match(called) or not called.strip():
        raise InputSourceError(f"-i/--input {shown}: the called AE title must be 1 to 16 printable characters without '\\'")
    try:
        parts = urlsplit(f"dimse://{hostport}")
        host, port = parts.hostname, parts.port
    except ValueError:
        raise InputSourceError(f"-i/--input {shown}: the host or port is not valid; write dimse://CALLED_AE@HOST:PORT?...") from None
    if not host or not port or "/" in hostport:
        raise InputSourceError(f"-i/--input {shown}: give the PACS's host and port: dimse://CALLED_AE@HOST:PORT?StudyInstanceUID=...")
    query = _query(url, DIMSE_KEYS, shown)
    if "StudyInstanceUID" not in query:
        raise InputSourceError(f"-i/--input {shown}: a DIMSE input needs ?StudyInstanceUID=... (and may add &SeriesInstanceUID=...)")
    return DimseTarget(called.strip(), host, port, query, shown)


def check_ae_title(value: str, option: str = "--ae-title") -> str:
    """VoxPipe's own (calling) AE title: 1-16 printable characters, no backslash."""
    if not (_AE_TITLE.match(value or "") and value.strip()):
        raise InputSourceError(f"{option}: an AE title is 1 to 16 printable characters without '\\'")
    return value.strip()

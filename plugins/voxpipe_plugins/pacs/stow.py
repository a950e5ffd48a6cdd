"""``write.stow``: send the case's DICOM outputs to a DICOMweb server (STOW-RS, dicomweb-client).

Why its own retry loop: dicomweb-client retries a few HTTP statuses only, not a reset
connection or a timeout, which are what a busy PACS or a proxy restart produce. Every
error here becomes one line that names no file, UID or credential (the URL's host is
configuration, not a patient's); a refused login is not retried (it would lock accounts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from voxpipe.image_checks import StageInputError
from voxpipe.stage import StageContext, record
from voxpipe_plugins.pacs import credentials
from voxpipe_plugins.pacs.stow_spec import CREDENTIAL_ENV

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)  # its info/debug lines name study UIDs and URLs


class StowError(RuntimeError):
    """The server did not take the case's instances; the message is the case's one line."""


class StowWriter:
    """Built once per run: checks the CA bundle; each call sends one case's DICOM files."""

    def __init__(
        self,
        url: str,
        ca_bundle: str | None = None,
        identity: str = "source",
        retries: int = 3,
        backoff_s: float = 1.0,
        timeout_s: float = 60.0,
        batch_mib: int = 64,
        context: StageContext | None = None,
    ) -> None:
        context = context or StageContext()
        self.url = url.strip().rstrip("/")
        self.where = urlsplit(self.url).netloc
        self.ca_bundle: Path | None = None
        if ca_bundle:
            bundle = context.resolve_path(ca_bundle)
            if not bundle.is_file():
                raise ValueError(f"ca_bundle {ca_bundle} is not a file; give a PEM file of certificate authorities")
            self.ca_bundle = bundle
        else:
            self.ca_bundle = credentials.ca_bundle()  # $VOXPIPE_DICOMWEB_CA_BUNDLE, checked like the input's
        self.identity, self.retries, self.backoff_s, self.timeout_s = identity, retries, backoff_s, timeout_s
        self.batch_bytes = batch_mib * 1024 * 1024
        credentials.credentials()  # incomplete credentials stop the run before any case (one line, exit 2)

    def __call__(self, case: dict) -> dict:
        files = dicom_files(Path(case["output_dir"]))
        if not files:
            raise StageInputError(
                "the case folder holds no DICOM file to send; put write.dicom_seg (or another DICOM writer) before write.stow"
            )
        if self.identity == "source":
            check_source_study(case, files)
        session = credentials.session(self.ca_bundle)
        sent, attempts = 0, 0
        try:
            for batch in batches(files, self.batch_bytes):
                sent_now, tries = self._send(session, batch)
                sent, attempts = sent + sent_now, attempts + tries
        finally:
            session.close()
        record(case, "write.stow", instances=sent, requests=attempts)
        return case

    def _send(self, session, batch: list[Path]) -> tuple[int, int]:
        """One STOW-RS request for ``batch``, retried on transient errors; returns (instances stored, attempts)."""
        import pydicom
        import requests
        from dicomweb_client import DICOMwebClient

        datasets = [pydicom.dcmread(path) for path in batch]
        client = DICOMwebClient(self.url, session=session, timeout=self.timeout_s)
        client.set_http_retry_params(retry=False)
        delay = self.backoff_s
        for attempt in range(1, self.retries + 2):
            wait, reason = None, ""
            try:
                answer = client.store_instances(datasets)
            except requests.exceptions.SSLError:
                raise StowError(f"TLS certificate of {self.where} not trusted; give its authority's PEM file as ca_bundle") from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                reason = _connection_reason(exc)
            except requests.exceptions.HTTPError as exc:
                response = exc.response
                status = response.status_code if response is not None else 0
                if status in (401, 403):
                    raise StowError(
                        f"{self.where} refused the credentials (HTTP {status}); set {CREDENTIAL_ENV} to an account allowed to store"
                    ) from None
                if status not in TRANSIENT_STATUS:
                    raise StowError(
                        f"{self.where} rejected the instances (HTTP {status}); check url: (the DICOMweb root) and the server's log"
                    ) from None
                reason, wait = f"HTTP {status}", _retry_after(response)
            except ValueError:  # a 2xx answer whose body is not the JSON/XML STOW-RS promises
                raise StowError(f"{self.where} answered with something that is not a STOW-RS response; check url:") from None
            else:
                return _stored(answer, len(datasets), self.where), attempt
            if attempt > self.retries:
                raise StowError(
                    f"{self.where} still failing after {attempt} attempts ({reason}); the instances were not all stored, "
                    "rerun the case when the server is back (more with retries:)"
                )
            time.sleep(min(MAX_RETRY_AFTER_S, wait if wait is not None else delay))
            delay *= 2
        raise AssertionError("unreachable")


def dicom_files(folder: Path) -> list[Path]:
    """Regular files under ``folder`` that carry the DICOM Part 10 signature, in a stable order; links are never followed."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        with path.open("rb") as handle:
            head = handle.read(132)
        if len(head) == 132 and head[128:] == b"DICM":
            found.append(path)
    return found


def _study_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).get("StudyInstanceUID", ""))


def check_source_study(case: dict, files: list[Path]) -> None:
    """Refuse, before anything is sent, a file the PACS would file under a patient or study other than the source's."""
    source = case.get("source")
    paths = list(getattr(source, "paths", ()) or ()) if getattr(source, "kind", "") == "dicom" else []
    if not paths:
        raise StageInputError(
            "write.stow with identity: source needs a case loaded from DICOM (its SEG joins the source's study); "
            "use identity: any to send other DICOM"
        )
    study = _study_uid(Path(paths[0]))
    foreign = sum(1 for path in files if _study_uid(path) != study)
    if foreign:
        raise StageInputError(
            f"{foreign} of {len(files)} DICOM files do not belong to the source's study (a pseudonymous SEG or "
            "de-identified copies), so the PACS would file them under a new patient; set `identity: source` on write.dicom_seg "
            "to send a SEG back to its PACS, or `identity: any` on write.stow for a de-identified archive. Nothing was sent"
        )


def batches(files: list[Path], limit: int) -> Iterator[list[Path]]:
    """Files grouped into requests of at most ``limit`` bytes (a larger file goes alone)."""
    batch: list[Path] = []
    size = 0
    for path in files:
        length = path.stat().st_size
        if batch and size + length > limit:
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += length
    if batch:
        yield batch


def _stored(answer, sent: int, where: str) -> int:
    """Instances the server says it stored; a FailedSOPSequence fails the case (its reason codes are numbers, no PHI)."""
    failed = list(getattr(answer, "FailedSOPSequence", []) or [])
    if failed:
        codes = sorted({f"0x{int(item.get('FailureReason', 0)):04X}" for item in failed})
        raise StowError(f"{where} refused {len(failed)} of {sent} instances (failure reasons {', '.join(codes)})")
    referenced = getattr(answer, "ReferencedSOPSequence", None)
    if referenced is None:  # a bare 200 (older servers): the status is the answer
        return sent
    if len(referenced) < sent:
        raise StowError(f"{where} confirmed {len(referenced)} of {sent} instances; check the server's log")
    return len(referenced)


def _retry_after(response) -> float | None:
    try:
        value = float(response.headers.get("Retry-After", ""))
    except (TypeError, ValueError, AttributeError):
        return None
    return max(0.0, value)


def _connection_reason(exc: Exception) -> str:
    import requests

    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped mid-answer"
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "reset" in text or "aborted" in text or "remote end closed" in text:
        return "connection reset"
    return "cannot connect"

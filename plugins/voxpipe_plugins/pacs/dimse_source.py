"""``dimse://CALLED_AE@HOST:PORT?StudyInstanceUID=X[&SeriesInstanceUID=Y]`` inputs: C-FIND, then C-GET.

C-GET brings the instances back on the association VoxPipe opened, so no inbound port or firewall
rule is needed (C-MOVE would need both). The peer picks one transfer syntax per presentation
context, so each storage SOP class is proposed once PER transfer syntax (the stored one is then
always among them and nothing is transcoded, JPEG 2000, JPEG-LS and RLE included); a C-FIND at
IMAGE level first tells which SOP classes the series hold, which keeps the proposal under the
128-context limit. Each instance is written as received (file meta + the data set's bytes) under a
hidden name and renamed when whole. Failures are one line naming the peer (host and port) only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from voxpipe.input_sources import InputSourceError
from voxpipe_plugins.pacs.dicomweb_source import quiet_libraries
from voxpipe_plugins.pacs.urls import DimseTarget, check_ae_title, parse_dimse

DEFAULT_AE_TITLE = "VOXPIPE"
AE_TITLE_ENV = "VOXPIPE_AE_TITLE"
TIMEOUT_S = 30.0
MAX_CONTEXTS = 128
QUIET = ("pynetdicom", "pydicom")

TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian (retired, still stored)
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
)

COMMON_IMAGE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.2.1",  # enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.1",  # enhanced MR
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.7",  # secondary capture
    "1.2.840.10008.5.1.4.1.1.66.4",  # segmentation
)


def open_dimse(url: str, folder: Path, options: Mapping[str, Any]) -> None:
    """The input source's opener: C-FIND the study's series (and SOP classes), C-GET each series into ``folder``."""
    target = parse_dimse(url)
    calling = check_ae_title(options.get("ae_title") or os.environ.get(AE_TITLE_ENV) or DEFAULT_AE_TITLE)
    with quiet_libraries(), _quiet():
        series = find(target, calling)
        if not series:
            raise InputSourceError(
                f"no series on the DICOM peer {peer(target)} match the query ({', '.join(target.query)}); check the values"
            )
        for index, (uid, sop_classes) in enumerate(sorted(series.items()), 1):
            get_series(target, calling, uid, sop_classes, folder / f"series-{index:04d}")


def peer(target: DimseTarget) -> str:
    return f"{target.host}:{target.port}"


def _quiet():
    import contextlib
    import logging

    @contextlib.contextmanager
    def manager():
        saved = {name: logging.getLogger(name).level for name in QUIET}
        for name in QUIET:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)

    return manager()


def _associate(target: DimseTarget, calling: str, contexts: list, roles: list | None = None, handlers: list | None = None):
    import socket

    from pynetdicom import AE

    try:  # pynetdicom reports a refused connection as an aborted association: tell the two apart first
        socket.create_connection((target.host, target.port), timeout=10.0).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__).lower()
        raise InputSourceError(
            f"cannot reach the DICOM peer {peer(target)} ({reason}); check the host, the port and that it runs"
        ) from None
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    ae.connection_timeout = 10.0
    try:
        assoc = ae.associate(target.host, target.port, contexts=contexts, ae_title=target.called_ae, ext_neg=roles, evt_handlers=handlers)
    except Exception as exc:  # noqa: BLE001 - a bad address: one line
        raise InputSourceError(f"cannot reach the DICOM peer {peer(target)} ({type(exc).__name__}); check the host and port") from exc
    if assoc.is_established:
        return assoc
    if assoc.is_rejected or assoc.is_aborted:
        how = "rejected" if assoc.is_rejected else "aborted"
        raise InputSourceError(
            f"the DICOM peer {peer(target)} {how} the association; check the called AE title and that it knows "
            f"VoxPipe's AE title ({calling}, set with --ae-title or {AE_TITLE_ENV}) and allows C-FIND/C-GET from it"
        )
    raise InputSourceError(
        f"cannot reach the DICOM peer {peer(target)} (no association; refused or timed out); check the host, the port and that it runs"
    )


def find(target: DimseTarget, calling: str) -> dict[str, set[str]]:
    """SeriesInstanceUID -> the SOP classes of its instances (C-FIND, study root, IMAGE level).

    A peer that refuses IMAGE-level queries is asked at SERIES level; the SOP classes are then
    unknown and the common image classes are proposed for the C-GET.
    """
    found, refused = _find(target, calling, "IMAGE")
    if refused is not None:
        found, refused = _find(target, calling, "SERIES")
    if refused is not None:
        raise InputSourceError(
            f"the DICOM peer {peer(target)} refused the C-FIND (status 0x{refused:04X}); check that it allows C-FIND from {calling}"
        )
    return {uid: {c for c in classes if c} for uid, classes in found.items()}


def _find(target: DimseTarget, calling: str, level: str) -> tuple[dict[str, set[str]], int | None]:
    from pydicom.dataset import Dataset
    from pynetdicom.presentation import build_context
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    identifier.StudyInstanceUID = target.query["StudyInstanceUID"]
    identifier.SeriesInstanceUID = target.query.get("SeriesInstanceUID", "")
    if level == "IMAGE":
        identifier.SOPInstanceUID = ""
        identifier.SOPClassUID = ""
    assoc = _associate(target, calling, [build_context(StudyRootQueryRetrieveInformationModelFind)])
    found: dict[str, set[str]] = {}
    try:
        for status, answer in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            code = getattr(status, "Status", None)
            if code is None:
                raise InputSourceError(
                    f"the DICOM peer {peer(target)} ended the association during the C-FIND; check that it allows C-FIND from "
                    f"VoxPipe's AE title ({calling}, set with --ae-title or {AE_TITLE_ENV})"
                )
            if code in (0xFF00, 0xFF01) and answer is not None:
                series = str(getattr(answer, "SeriesInstanceUID", "") or "")
                if series:
                    found.setdefault(series, set()).add(str(getattr(answer, "SOPClassUID", "") or ""))
            elif code != 0x0000:
                return {}, int(code)
    finally:
        if assoc.is_established:
            assoc.release()
    return found, None


def get_series(target: DimseTarget, calling: str, series_uid: str, sop_classes: set[str], into: Path) -> None:
    """C-GET one series; every instance it sends is written into ``into`` as it arrives."""
    from pydicom.dataset import Dataset
    from pynetdicom import evt
    from pynetdicom.presentation import build_context, build_role
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    from voxpipe.limits import max_bytes, size_text

    classes = sorted(sop_classes) or list(COMMON_IMAGE_SOP_CLASSES)
    per_class = (MAX_CONTEXTS - 1) // len(TRANSFER_SYNTAXES)
    if len(classes) > per_class:
        raise InputSourceError(
            f"a series on the DICOM peer {peer(target)} mixes {len(classes)} SOP classes; VoxPipe fetches at most {per_class}"
        )
    contexts = [build_context(StudyRootQueryRetrieveInformationModelGet)]
    contexts += [build_context(sop, syntax) for sop in classes for syntax in TRANSFER_SYNTAXES]
    roles = [build_role(sop, scp_role=True) for sop in classes]
    into.mkdir(mode=0o700)
    state = {"count": 0, "bytes": 0, "error": None}
    lock = threading.Lock()
    cap = max_bytes()

    def on_store(event) -> int:
        from pydicom.filewriter import write_file_meta_info

        with lock:
            state["count"] += 1
            number = state["count"]
        partial, final = into / f".{number:06d}.dcm.part", into / f"{number:06d}.dcm"
        try:
            if str(event.dataset.get("SeriesInstanceUID", "") or "") != series_uid:
                state["error"] = f"the DICOM peer {peer(target)} sent an instance of another series than asked for; check the peer"
                return 0xA900
            data = event.request.DataSet.getvalue()
            with lock:
                state["bytes"] += len(data)
                if state["bytes"] > cap:
                    state["error"] = (
                        f"a series on the DICOM peer {peer(target)} holds more than the memory cap ({size_text(cap)}); raise VOXPIPE_MAX_GIB"
                    )
                    return 0xA700
            with open(partial, "xb") as handle:
                handle.write(b"\x00" * 128 + b"DICM")
                write_file_meta_info(handle, event.file_meta, enforce_standard=True)
                handle.write(data)
            os.replace(partial, final)
        except OSError as exc:  # (a data set that does not decode is refused above as "another series")
            state["error"] = (
                f"cannot write an instance received from {peer(target)} ({exc.strerror or type(exc).__name__}); check the temporary folder's disk"
            )
            return 0xA700
        return 0x0000

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = target.query["StudyInstanceUID"]
    identifier.SeriesInstanceUID = series_uid
    assoc = _associate(target, calling, contexts, roles, [(evt.EVT_C_STORE, on_store)])
    final_status = None
    try:
        for status, _answer in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            if getattr(status, "Status", None) is None:
                raise InputSourceError(
                    f"the DICOM peer {peer(target)} stopped answering during the C-GET (connection lost or timed out); nothing was kept; try again"
                )
            final_status = status
    except BaseException:
        assoc.abort()  # Ctrl-C or a failure: stop the peer sending more
        raise
    else:
        if assoc.is_established:
            assoc.release()
    if state["error"]:
        raise InputSourceError(state["error"])
    code = int(final_status.Status)
    failed = int(getattr(final_status, "NumberOfFailedSuboperations", 0) or 0)
    if code != 0x0000 or failed:
        raise InputSourceError(
            f"the DICOM peer {peer(target)} could not send every instance of a series by C-GET (status 0x{code:04X}, {failed} failed); "
            f"check that it allows C-GET from {calling} and can send the stored transfer syntax"
        )
    completed = int(getattr(final_status, "NumberOfCompletedSuboperations", 0) or 0)
    if completed and completed != state["count"]:
        raise InputSourceError(
            f"the DICOM peer {peer(target)} reported {completed} instances sent but {state['count']} arrived; nothing was kept; try again"
        )
    if state["count"] == 0:
        raise InputSourceError(f"the DICOM peer {peer(target)} sent no instance of a series it listed; check its log")

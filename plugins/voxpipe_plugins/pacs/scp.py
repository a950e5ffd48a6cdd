"""The C-STORE SCP behind ``voxpipe listen`` (pynetdicom): accepts instances into a :class:`Spool`.

pynetdicom hands the handler an instance only once it has arrived whole, so an association
aborted mid-transfer leaves nothing in the spool. The instance is kept in the transfer syntax
it was sent in (its encoded bytes, never decoded here), so compressed series go through as they
are. pynetdicom's log is kept at WARNING: its INFO/DEBUG lines describe requests and datasets.
"""

from __future__ import annotations

import errno
import logging
import threading
from pathlib import Path

from voxpipe.errors import UsageError
from voxpipe_plugins.pacs.spool import Spool

SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
LOOPBACK = ("127.0.0.1", "::1", "localhost")

logging.getLogger("pynetdicom").setLevel(logging.WARNING)
log = logging.getLogger("voxpipe.listen")


class StoreSCP:
    """A running SCP; :meth:`stop` ends it (open associations are aborted, their partial instances dropped)."""

    def __init__(self, spool: Spool, ae_title: str, host: str, port: int, allowed_calling: tuple[str, ...] = ()) -> None:
        self.spool = spool
        self.errors = 0
        self._lock = threading.Lock()
        self._server = None
        self.ae_title, self.host, self.port, self.allowed_calling = ae_title, host, port, allowed_calling

    def start(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True  # calls must be addressed to this AE title
        if self.allowed_calling:
            ae.require_calling_aet = list(self.allowed_calling)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
        try:
            self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"--port {self.port}: already in use on {self.host}; choose another port or stop the other listener"
                ) from None
            if exc.errno == errno.EACCES:
                raise UsageError(
                    f"--port {self.port}: not allowed for this user (ports below 1024 need privileges); choose a port >= 1024"
                ) from None
            raise UsageError(
                f"cannot listen on {self.host}:{self.port} ({exc.strerror or type(exc).__name__}); check --host and --port"
            ) from None
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_store(self, event) -> int:
        try:
            sop_uid = str(event.request.AffectedSOPInstanceUID or "")
            dataset = event.dataset
            series_uid = str(dataset.get("SeriesInstanceUID", "") or "")
            if not sop_uid or not series_uid:
                return CANNOT_UNDERSTAND
            encoded = event.encoded_dataset()
            self.spool.store(series_uid, sop_uid, encoded)
            return SUCCESS
        except OSError as exc:  # a full disk: the sender keeps the instance and can retry
            self._count_error(f"instance not spooled ({exc.strerror or type(exc).__name__})")
            return OUT_OF_RESOURCES
        except Exception as exc:  # noqa: BLE001 - one bad instance never stops the listener
            self._count_error(f"instance not spooled ({type(exc).__name__})")
            return CANNOT_UNDERSTAND

    def _count_error(self, text: str) -> None:
        with self._lock:
            self.errors += 1
        log.warning(text)


def check_exposure(host: str, allowed_calling: tuple[str, ...]) -> None:
    """Listening beyond this machine needs an allow-list: otherwise anyone on the network could push data into a pipeline."""
    if host not in LOOPBACK and not allowed_calling:
        raise UsageError(
            f"--host {host} accepts associations from other machines; name the senders with --allow-calling-ae AET (repeatable)"
        )


def spool_folder(output: Path) -> Path:
    return Path(output) / "spool"

"""The listener's spool and SCP, in-process with pynetdicom's SCU: atomic instances, duplicates, aborted
associations, AE titles, restarts; and the listen command's one-line refusals."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, write_series
from voxpipe_plugins.pacs.scp import StoreSCP
from voxpipe_plugins.pacs.spool import INCOMING, Spool

KEY = b"k" * 32


def _series(folder: Path, n: int = 4, seed: int = 0, study_uid: str | None = None, size: int = 16) -> list[Path]:
    volume = np.random.default_rng(seed).integers(-1000, 1000, (n, size, size)).astype(float)
    spec = SeriesSpec(seed=seed) if study_uid is None else SeriesSpec(seed=seed, study_uid=study_uid)
    return write_series(folder, volume, spec)


@pytest.fixture
def scp(tmp_path):
    spool = Spool(tmp_path / "out" / "spool", KEY)
    server = StoreSCP(spool, "VOXPIPE", "127.0.0.1", 0, ("SENDER",))
    server.start()
    yield server
    server.stop()


def _send(server: StoreSCP, paths, calling: str = "SENDER", called: str = "VOXPIPE", cut_after: int | None = None) -> list[int]:
    """C-STORE ``paths``; with ``cut_after``, the connection is closed halfway through the next instance's bytes."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=called)
    if not assoc.is_established:
        return []
    statuses = []
    try:
        for i, path in enumerate(paths):
            if cut_after is not None and i == cut_after:
                sock = assoc.dul.socket
                real_send = sock.send

                def half(data: bytes, real_send=real_send, sock=sock) -> None:
                    if data[:1] == b"\x04":  # P-DATA-TF: the instance; send half of it and drop the connection
                        sock.socket.sendall(data[: len(data) // 2])
                        sock.socket.shutdown(socket.SHUT_RDWR)
                        sock.socket.close()
                        sock.event_queue.put("Evt17")  # what pynetdicom's own send does when the transport closes
                        return
                    real_send(data)

                sock.send = half
            status = assoc.send_c_store(pydicom.dcmread(path))
            statuses.append(int(getattr(status, "Status", -1)))
            if cut_after is not None and i == cut_after:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def _spooled(spool: Spool) -> list[Path]:
    return sorted((spool.folder / INCOMING).rglob("*.dcm"))


def test_instances_are_spooled_whole_private_and_without_uids_in_paths(scp, tmp_path):
    paths = _series(tmp_path / "in")
    assert _send(scp, paths) == [0] * len(paths)
    files = _spooled(scp.spool)
    assert len(files) == len(paths)
    uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in paths}
    assert {str(pydicom.dcmread(f).SOPInstanceUID) for f in files} == uids
    series_uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
    sent = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p).PixelData for p in paths}
    for f in files:
        relative = str(f.relative_to(scp.spool.folder))
        assert series_uid not in relative and not any(uid in relative for uid in uids)
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        received = pydicom.dcmread(f)
        assert received.PixelData == sent[str(received.SOPInstanceUID)]
    assert stat.S_IMODE(scp.spool.folder.stat().st_mode) == 0o700
    assert len({f.parent for f in files}) == 1  # one folder per series


def test_a_repeated_instance_is_stored_once(scp, tmp_path):
    paths = _series(tmp_path / "in")
    _send(scp, paths)
    assert _send(scp, paths + paths[:2]) == [0] * (len(paths) + 2)  # the sender is told it worked
    assert len(_spooled(scp.spool)) == len(paths)
    assert scp.spool.counts == {"stored": len(paths), "duplicate": len(paths) + 2, "late": 0}


def test_an_instance_cut_off_mid_transfer_never_enters_the_spool(scp, tmp_path):
    paths = _series(tmp_path / "in", n=3, size=256)  # 128 KiB of pixels per instance
    _send(scp, paths, cut_after=2)
    files = _spooled(scp.spool)
    assert len(files) == 2  # the two whole ones
    for f in files:
        assert pydicom.dcmread(f).pixel_array.shape == (256, 256)  # each complete and decodable
    leftovers = [p for p in scp.spool.folder.rglob("*") if p.is_file() and p.suffix != ".dcm" and p.name != "state.json"]
    assert leftovers == []


@pytest.mark.parametrize(("calling", "called"), [("INTRUDER", "VOXPIPE"), ("SENDER", "OTHER"), ("sender", "VOXPIPE")])
def test_associations_from_other_calling_or_to_other_called_ae_titles_are_refused(scp, tmp_path, calling, called):
    assert _send(scp, _series(tmp_path / "in"), calling=calling, called=called) == []
    assert _spooled(scp.spool) == []


def test_spooled_series_survive_a_restart_and_a_processed_series_is_never_taken_again(tmp_path):
    folder = tmp_path / "out" / "spool"
    spool = Spool(folder, KEY)
    first = _series(tmp_path / "a", seed=1)
    second = _series(tmp_path / "b", seed=2)
    for path in first + second:
        ds = pydicom.dcmread(path)
        spool.store(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), path.read_bytes())
    # "crash": a new Spool on the same folder sees both series, runs them after --idle
    spool = Spool(folder, KEY)
    assert spool.pending() == 2
    batch = spool.take_ready(idle_s=0.0)
    assert batch is not None and len(list(batch.iterdir())) == 2
    # crash during the run: the batch is found again, nothing is lost, nothing is new
    spool = Spool(folder, KEY)
    assert spool.leftover_batch() == batch and spool.pending() == 0
    spool.finish_batch(batch, [{"case_id": "case-1", "status": "ok"}])
    assert not batch.exists()
    spool = Spool(folder, KEY)
    assert spool.leftover_batch() is None and spool.take_ready(0.0) is None
    ds = pydicom.dcmread(first[0])  # the same series sent again after it ran
    assert spool.store(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), first[0].read_bytes()).status == "late"
    assert spool.pending() == 0 and list((folder / INCOMING).iterdir()) == []
    assert spool.state.cases == [{"case_id": "case-1", "status": "ok"}]


def test_a_series_still_receiving_is_not_taken(tmp_path):
    spool = Spool(tmp_path / "spool", KEY)
    path = _series(tmp_path / "a", n=1)[0]
    ds = pydicom.dcmread(path)
    spool.store(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), path.read_bytes())
    assert spool.take_ready(idle_s=60.0) is None
    assert spool.take_ready(idle_s=60.0, now=spool._seen[spool.key_of(str(ds.SeriesInstanceUID))] + 61) is not None


# -- the command's refusals: one line, exit 2 ---------------------------------------------------------


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\nname: t\nstages:\n  - use: load.dicom\n  - use: write.nifti\n")
    return config


def test_listen_refuses_a_port_in_use_in_one_line(cli, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = cli("listen", _config(tmp_path), "--port", taken.getsockname()[1], "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert len(result.error_lines) == 1 and "already in use" in result.error_lines[0]
    assert "Traceback" not in result.stderr


def test_listen_refuses_a_bad_config_and_an_exposed_host_without_allow_list(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: t\nstages:\n  - use: load.dicom\n  - use: write.nifty\n")
    result = cli("listen", bad, "--port", "0", "-o", tmp_path / "out")
    assert result.exit_code == 2 and result.error_lines and "write.nifty" in result.stderr
    result = cli("listen", _config(tmp_path), "--port", "0", "--host", "0.0.0.0", "-o", tmp_path / "out2")
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "--allow-calling-ae" in result.error_lines[0]
    assert not (tmp_path / "out2").exists()
    result = cli("listen", _config(tmp_path), "--port", "0", "--ae-title", "A" * 17, "-o", tmp_path / "out3")
    assert result.exit_code == 2 and "AE title" in result.stderr


def test_spool_paths_are_keyed_not_plain_hashes(tmp_path):
    import hashlib

    spool = Spool(tmp_path / "spool", KEY)
    uid = "1.2.3.4"
    assert spool.key_of(uid) != hashlib.sha256(uid.encode()).hexdigest()[: len(spool.key_of(uid))]
    assert Spool(tmp_path / "other", b"x" * 32).key_of(uid) != spool.key_of(uid)
    assert os.path.isdir(tmp_path / "spool" / INCOMING)


def test_a_series_is_not_taken_while_one_of_its_instances_is_being_written(tmp_path, monkeypatch):
    import threading

    import voxpipe_plugins.pacs.spool as spool_module

    spool = Spool(tmp_path / "spool", KEY)
    first, second = _series(tmp_path / "a", n=2)
    ds = pydicom.dcmread(first)
    spool.store(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), first.read_bytes())
    writing, release = threading.Event(), threading.Event()
    real_atomic = spool_module.atomic_path

    class SlowWrite:
        def __init__(self, target, mode=None):
            self.inner = real_atomic(target, mode)

        def __enter__(self):
            writing.set()
            release.wait(10)
            return self.inner.__enter__()

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    monkeypatch.setattr(spool_module, "atomic_path", SlowWrite)
    ds2 = pydicom.dcmread(second)
    thread = threading.Thread(target=spool.store, args=(str(ds2.SeriesInstanceUID), str(ds2.SOPInstanceUID), second.read_bytes()))
    thread.start()
    assert writing.wait(10)
    assert spool.take_ready(idle_s=0.0, now=1e12) is None  # idle by the clock, but an instance is half written
    release.set()
    thread.join(10)
    batch = spool.take_ready(idle_s=0.0, now=1e12)
    assert batch is not None and len(list(batch.rglob("*.dcm"))) == 2


def test_listen_refuses_results_of_another_config_before_listening(cli, tmp_path):
    results = tmp_path / "out" / "results"
    results.mkdir(parents=True)
    (results / "manifest.json").write_text('{"config_hash": "0123456789abcdef", "pipeline": "other"}')
    result = cli("listen", _config(tmp_path), "--port", "0", "-o", tmp_path / "out")
    assert result.exit_code == 2 and len(result.error_lines) == 1
    assert "different config" in result.error_lines[0] and "--force" in result.error_lines[0]
    assert "listening" not in result.stderr and not (tmp_path / "out" / "spool").exists()


def test_an_output_error_stops_the_listener_in_one_line_and_keeps_the_series_for_a_restart(cli, tmp_path):
    import json

    from voxpipe.cases import id_key

    out = tmp_path / "out"
    spool = Spool(out / "spool", id_key())  # the listener's own key: as if received before a restart
    for path in _series(tmp_path / "in", n=3):
        ds = pydicom.dcmread(path)
        spool.store(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), path.read_bytes())
    (out / "results").write_text("not a folder")  # the results cannot be written
    result = cli("listen", _config(tmp_path), "--port", "0", "-o", out, "--idle", "0.1", "--workers", "0")
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
    assert "the series stay in the spool" in result.error_lines[0] and "Traceback" not in result.stderr
    state = json.loads((out / "spool" / "state.json").read_text())
    assert state["processed"] == {} and len(state["running"]["series"]) == 1
    assert len(list((out / "spool" / f"batch-{state['running']['batch']}").rglob("*.dcm"))) == 3


def test_a_second_listener_on_the_same_spool_is_refused_in_one_line(cli, tmp_path):
    from voxpipe.atomic import folder_lock

    spool = tmp_path / "out" / "spool"
    spool.mkdir(parents=True)
    with folder_lock(spool, "voxpipe listen"):  # as a running listener holds it
        result = cli("listen", _config(tmp_path), "--port", "0", "-o", tmp_path / "out")
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "in use by another voxpipe listen" in result.error_lines[0]
    assert "listening" not in result.stderr


def test_a_series_with_nothing_the_loader_reads_is_passed_over_not_failed(cli, tmp_path):
    from pydicom.data import get_testdata_file

    from voxpipe.cases import id_key

    out = tmp_path / "out"
    spool = Spool(out / "spool", id_key())
    plan = Path(get_testdata_file("rtplan.dcm", download=False))  # an RT plan: no image
    ds = pydicom.dcmread(plan)
    spool.store(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), plan.read_bytes())
    result = cli("listen", _config(tmp_path), "--port", "0", "-o", out, "--idle", "0.1", "--workers", "0", "--exit-after", "1")
    assert result.exit_code == 0, result.stderr
    assert "no case the loader `load.dicom` can read" in result.stderr and "1 series with nothing the loader reads" in result.stderr
    assert spool.key_of(str(ds.SeriesInstanceUID)) in json.loads((out / "spool" / "state.json").read_text())["processed"]

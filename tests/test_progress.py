"""Progress of long commands: count, rate and ETA, live on a terminal, plain lines in logs, no input names."""

from __future__ import annotations

import io

from tests.conftest import key_args
from tests.test_convert_cli import two_series
from voxpipe.progress import ItemProgress, counted


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_log_mode_prints_count_rate_and_eta_at_most_every_interval_and_a_last_line(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("voxpipe.progress.time.monotonic", clock)
    stream = io.StringIO()
    progress = ItemProgress("files", stream=stream, live=False, every=10.0)
    progress.start(100)
    for _ in range(40):  # 40 files in 20 s: 2/s, 60 left -> 30 s
        clock.now += 0.5
        progress.step()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 + 1  # at 10 s and 20 s, then the last line
    assert lines[0].startswith("files: 20/100  2.0/s") and lines[0].endswith("ETA 40s")
    assert lines[-1] == "files: 40/100  2.0/s  20s  ETA 30s"
    assert "\r" not in stream.getvalue()


def test_live_mode_rewrites_one_line_and_ends_with_a_plain_one():
    stream = io.StringIO()
    progress = ItemProgress("series", stream=stream, live=True)
    progress.start(3)
    for _ in counted(range(3), progress.step):
        pass
    progress.close()
    text = stream.getvalue()
    assert text.count("\r\x1b[2K") == 4 and text.endswith("\n") and "series: 3/3" in text.splitlines()[-1]


def test_counted_steps_after_each_body_even_on_continue():
    seen: list[str] = []
    for item in counted("abc", lambda: seen.append("done")):
        seen.append(item)
        if item == "b":
            continue
    assert seen == ["a", "done", "b", "done", "c", "done"]


def test_convert_and_deid_report_progress_without_input_names(cli, tmp_path):
    two_series(tmp_path / "Doe_Jane_study")
    converted = cli("convert", "-i", tmp_path / "Doe_Jane_study", "-o", tmp_path / "nifti")
    assert converted.exit_code == 0, converted.stderr
    assert "series: 2/2" in converted.stderr and "Doe_Jane" not in converted.stderr
    files = len(list((tmp_path / "Doe_Jane_study").rglob("*.dcm")))
    deid = cli("deid", "-i", tmp_path / "Doe_Jane_study", "-o", tmp_path / "deid", *key_args(tmp_path / "k.key"))
    assert deid.exit_code == 0, deid.stderr
    assert f"files: {files}/{files}" in deid.stderr and "Doe_Jane" not in deid.stderr


def test_training_logs_give_an_eta_from_the_epochs_run_so_far():
    from voxpipe.progress import epochs_eta

    history = [{"epoch": 1, "epoch_seconds": 10.0}, {"epoch": 2, "epoch_seconds": 20.0}]
    assert epochs_eta(history, 6) == "  ETA 1m00s"  # 15 s a epoch, 4 to go
    assert epochs_eta(history, 2) == "" and epochs_eta([], 5) == ""

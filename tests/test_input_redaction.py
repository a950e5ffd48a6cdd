"""One redaction for every command that reports a per-file problem, ``--debug`` included.

Issue 14 §4: ``convert`` printed patient-named file names where ``run`` printed
``<input file N>``. The family: a marker (``PHIMK``) in file names, folder names, nested
folders, unicode names and names that look scanner-made but for the marker; a truncated
slice makes the series fail and its error name the file. Through ``convert`` (folder and
single file), ``run`` (in process and in a worker), ``info`` and ``deid``, with and without
``--debug``: no marker in stdout, stderr or anything written. ``--show-phi`` is the one
explicit way to see them (and proves the search would find them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DEMO_CONFIG, key_args

MARK = "PHIMK"

LAYOUTS = {
    "file name": ("series", "PHIMK01AX_Doe_Jane_{k}.dcm"),
    "folder name": ("Doe^Jane PHIMK02BX/series", "IM{k:05d}.dcm"),
    "nested folders": ("site/PHIMK03CX/2019/ct", "IM{k:05d}.dcm"),
    "unicode names": ("患者_Müller_PHIMK04DX", "Jané_PHIMK05EX_{k}.dcm"),
    "technical but for a marker": ("1.2.840.PHIMK06FX", "IM{k:05d}_PHIMK07GX.dcm"),
    "uid-like with marker": ("series", "1.2.840.113619.PHIMK08HX.{k}.dcm"),
}


def broken_series(root: Path, folder: str, pattern: str) -> Path:
    """A 6-slice CT series named by ``pattern`` whose 4th file is cut inside its pixel data."""
    from voxpipe_plugins.io_dicom.synthetic import (
        SeriesSpec,
        ct_like_volume,
        write_series,
    )

    target = root / folder
    paths = write_series(target, ct_like_volume(shape=(6, 16, 16)), SeriesSpec())
    renamed = []
    for k, path in enumerate(paths):
        new = target / pattern.format(k=k)
        path.rename(new)
        renamed.append(new)
    data = renamed[3].read_bytes()
    renamed[3].write_bytes(data[: len(data) - 200])
    return root


def everything_written(folder: Path) -> str:
    if not folder.exists():
        return ""
    parts = [str(p) for p in folder.rglob("*")]
    parts += [p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    return "\n".join(parts)


@pytest.fixture(params=sorted(LAYOUTS))
def corpus(request, tmp_path):
    folder, pattern = LAYOUTS[request.param]
    return broken_series(tmp_path / "in", folder, pattern)


@pytest.mark.parametrize("debug", [False, True])
def test_convert_names_no_input_file_or_folder(cli, corpus, tmp_path, debug):
    flags = ["--debug"] if debug else []
    result = cli(*flags, "convert", corpus, tmp_path / "out")
    assert result.exit_code == 1, result.stderr
    assert "<input file" in result.stderr or "IM00003.dcm:" in result.stderr  # the failing slice is still pointed at
    assert MARK not in result.stdout + result.stderr, result.stderr
    assert ("Traceback" in result.stderr) == debug
    single = cli(*flags, "convert", corpus, tmp_path / "one.nii.gz")
    assert MARK not in single.stdout + single.stderr
    assert MARK not in everything_written(tmp_path / "out")


def test_show_phi_is_the_explicit_way_to_see_names(cli, tmp_path):
    corpus = broken_series(tmp_path / "in", "series", "PHIMK01AX_Doe_{k}.dcm")
    shown = cli("--debug", "--show-phi", "convert", corpus, tmp_path / "out")
    assert MARK in shown.stderr and "Traceback" in shown.stderr  # the search above would have found a leak
    anywhere = cli("convert", corpus, tmp_path / "out2", "--debug", "--show-phi")
    assert MARK in anywhere.stderr


@pytest.mark.parametrize("debug", [False, True])
def test_run_names_no_input_file_or_folder(cli, corpus, tmp_path, debug):
    flags = ["--debug"] if debug else []
    result = cli(*flags, "run", DEMO_CONFIG, "-i", corpus, "-o", tmp_path / "out", "-w", "0", "--set", "device=cpu")
    assert result.exit_code == 1, result.stderr
    assert MARK not in result.stdout + result.stderr, result.stderr
    assert MARK not in everything_written(tmp_path / "out")


def test_run_in_a_worker_with_debug_names_no_input(tmp_path):
    """A worker process writes to the terminal itself: run the real command and read its file descriptors."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    corpus = broken_series(tmp_path / "in", "Doe^Jane PHIMK02BX", "PHIMK01AX_{k}.dcm")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "platform"), str(repo / "plugins")])}
    command = [
        sys.executable,
        "-c",
        "from voxpipe.entry import run; run()",
        "--debug",
        "run",
        str(DEMO_CONFIG),
        "-i",
        str(corpus),
        "-o",
        str(tmp_path / "out"),
        "-w",
        "1",
        "--set",
        "device=cpu",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1, result.stderr
    assert MARK not in result.stdout + result.stderr + everything_written(tmp_path / "out"), result.stderr


@pytest.mark.parametrize("debug", [False, True])
def test_info_and_deid_name_no_input(cli, corpus, tmp_path, debug):
    flags = ["--debug"] if debug else []
    info = cli(*flags, "info", corpus)
    assert info.exit_code == 0, info.stderr
    assert MARK not in info.stdout + info.stderr
    deid = cli(*flags, "deid", corpus, tmp_path / "deid", *key_args(tmp_path / "k.key"))
    assert MARK not in deid.stdout + deid.stderr + everything_written(tmp_path / "deid")


def test_an_internal_error_line_and_its_traceback_name_no_input(cli, tmp_path, monkeypatch):
    """A bug whose exception quotes an input path: one redacted line, and a redacted --debug traceback."""
    corpus = broken_series(tmp_path / "in", "Doe^Jane PHIMK02BX", "PHIMK01AX_{k}.dcm")
    victim = next(corpus.rglob("*.dcm"))

    def explode(*args, **kwargs):
        raise OSError(f"[Errno 5] I/O error: '{victim}' (while reading {victim.name} in {victim.parent.name})")

    monkeypatch.setattr("voxpipe_plugins.io_dicom.commands._convert_each", explode)
    plain = cli("convert", corpus, tmp_path / "out")
    assert plain.exit_code == 3 and len(plain.error_lines) == 1 and "internal error" in plain.error_lines[0]
    assert MARK not in plain.stderr and "<input" in plain.stderr
    debug = cli("--debug", "convert", corpus, tmp_path / "out")
    assert debug.exit_code == 3 and "Traceback" in debug.stderr and MARK not in debug.stderr
    assert "add --show-phi" in debug.stderr


def test_redact_inputs_covers_every_spelling(tmp_path, monkeypatch):
    from voxpipe.input_redaction import redact_inputs

    corpus = broken_series(tmp_path / "in", "Doe Jane PHIMK02BX/sub_PHIMK03CX", "Jané_PHIMK05EX_{k}.dcm")
    monkeypatch.chdir(tmp_path)
    files = sorted(corpus.rglob("*.dcm"))
    relative = Path("in") / files[0].relative_to(corpus)
    texts = [
        f"No such file: '{files[0]}'",  # absolute, with spaces and unicode
        f"cannot read {relative} now",  # relative to the working folder
        f"{files[1].name}: truncated; in {files[1].parent.name}",  # bare names
        f"{tmp_path / 'in' / 'Doe Jane PHIMK02BX' / 'gone_PHIMK09.dcm'}",  # a path no longer on disk
        f"{(tmp_path / 'in').resolve()}/../in/Doe Jane PHIMK02BX",
    ]
    for root in (corpus, Path("in")):
        for text in texts:
            assert MARK not in redact_inputs(text, [root]), (root, text, redact_inputs(text, [root]))
    kept = tmp_path / "in2" / "IM00001.dcm"
    kept.parent.mkdir()
    kept.write_bytes(b"")
    assert redact_inputs(f"{kept}: bad", [kept.parent]) == "<input>/IM00001.dcm: bad"  # scanner names stay, as in run

"""The output tree: never overlapping the input, private modes, files naming inputs kept out, stale temporaries cleared.

Issue 14 §4/§6. Every spelling of an overlap (equal, nested, ``..``, relative, a link either
way) is refused for run, convert and deid with one line and exit 2, before anything is
written. Every folder and file that run, convert, deid, train and test create is walked
for its mode under a permissive umask (0o000) and the usual one (0o022). ``--source-map``
and ``deid --list`` share one rule. A killed convert's temporary files go on a rerun; a
user's look-alikes stay.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_CONFIG, key_args, write_nifti

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- inputs


def dicom_series(folder: Path, slices: int = 6, size: int = 16) -> Path:
    from voxpipe_plugins.io_dicom.synthetic import (
        SeriesSpec,
        ct_like_volume,
        write_series,
    )

    write_series(folder, ct_like_volume(shape=(slices, size, size)), SeriesSpec())
    return folder


def nifti_input(folder: Path) -> Path:
    write_nifti(folder / "vol.nii.gz", np.random.default_rng(0).normal(100, 20, (12, 12, 8)).astype(np.float32))
    return folder


def tree_listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def umask():
    """Set a umask for one test and restore it."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


# ----------------------------------------------------------------------------- -o and -i never overlap


def _layouts(tmp_path: Path):
    """(name, input, output): every spelling of an overlap, input built before."""
    data = tmp_path / "data"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data-link").symlink_to(data, target_is_directory=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "in-link").symlink_to(data, target_is_directory=True)
    return [
        ("equal", data, data),
        ("inside", data, data / "out"),
        ("nested inside", data, data / "series" / "deeper" / "out"),
        ("dot-dot into input", data, tmp_path / "elsewhere" / ".." / "data" / "out"),
        ("through a link to the input", data, tmp_path / "data-link" / "out"),
        ("input named through a link", tmp_path / "data-link", data / "out"),
        ("link to the input as output", data, tmp_path / "outside" / "in-link"),
        ("input inside output", data / "series", data),
        ("input inside output via link", tmp_path / "data-link" / "series", tmp_path / "data"),
        ("relative", Path("data"), Path("data") / "out"),
    ]


@pytest.mark.parametrize("command", ["run", "convert", "deid"])
def test_overlapping_input_and_output_are_refused_in_every_spelling(cli, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    dicom_series(tmp_path / "data" / "series")
    for name, source, output in _layouts(tmp_path):
        before = tree_listing(tmp_path / "data")
        if command == "run":
            result = cli("run", DEMO_CONFIG, "-i", source, "-o", output, "-w", "0", "--no-report", "--set", "device=cpu")
        elif command == "convert":
            result = cli("convert", source, output)
        else:
            result = cli("deid", source, output, *key_args(tmp_path / "keys" / "k.key"))
        assert result.exit_code == 2, (name, result.stderr)
        assert len(result.error_lines) == 1 and "Traceback" not in result.stderr, (name, result.stderr)
        assert "outside" in result.error_lines[0] and ("inside" in result.error_lines[0] or " is the input" in result.error_lines[0]), name
        assert tree_listing(tmp_path / "data") == before, f"{name}: something was written"


def test_rerun_with_output_beside_the_input_finds_the_same_cases(cli, tmp_path):
    """The legitimate layout still works, and reruns do not grow (the issue's 1 -> 4 -> 13)."""
    nifti_input(tmp_path / "data")
    for _ in range(2):
        result = cli("run", DEMO_CONFIG, "-i", tmp_path / "data", "-o", tmp_path / "out", "-w", "0", "--no-report", "--set", "device=cpu")
        assert result.exit_code == 0, result.stderr
        assert "1 cases" in result.stderr


# ----------------------------------------------------------------------------- --source-map and deid --list


def _map_spellings(tmp_path: Path, out: Path):
    (tmp_path / "to-out").symlink_to(out, target_is_directory=True)
    return [
        ("directly inside", out / "map.tsv"),
        ("nested inside", out / "private" / "map.tsv"),
        ("dot-dot", tmp_path / "private" / ".." / "out" / "map.tsv"),
        ("relative", Path("out") / "map.tsv"),
        ("through a linked folder", tmp_path / "to-out" / "map.tsv"),
    ]


@pytest.mark.parametrize("command", ["run", "deid"])
def test_input_listing_inside_the_output_is_refused_in_every_spelling(cli, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    source = dicom_series(tmp_path / "data" / "series")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "private").mkdir()
    option = "--source-map" if command == "run" else "--list"
    for name, target in _map_spellings(tmp_path, out):
        if command == "run":
            result = cli("run", DEMO_CONFIG, "-i", source, "-o", out, "-w", "0", "--no-report", "--set", "device=cpu", option, target)
        else:
            result = cli("deid", source, out, *key_args(tmp_path / "keys" / "k.key"), option, target)
        assert result.exit_code == 2 and len(result.error_lines) == 1, (name, result.stderr)
        assert option in result.error_lines[0] and "inside the output" in result.error_lines[0], name
        assert not any(out.rglob("map.tsv")) and list(out.iterdir()) == [], name  # nothing ran


@pytest.mark.parametrize("command", ["run", "deid"])
def test_input_listing_is_never_written_through_a_link(cli, tmp_path, command):
    source = dicom_series(tmp_path / "data" / "series")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    link = tmp_path / "map.tsv"
    link.symlink_to(victim)
    if command == "run":
        result = cli(
            "run", DEMO_CONFIG, "-i", source, "-o", tmp_path / "out", "-w", "0", "--no-report", "--set", "device=cpu", "--source-map", link
        )
    else:
        result = cli("deid", source, tmp_path / "out", *key_args(tmp_path / "k.key"), "--list", link)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "symbolic link" in result.error_lines[0], result.stderr
    assert victim.read_text() == "keep me\n" and link.is_symlink()


@pytest.mark.parametrize("command", ["run", "deid"])
@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_input_listing_replaces_an_existing_wider_file_with_a_private_one(cli, tmp_path, umask, command, mask):
    source = dicom_series(tmp_path / "data" / "series")
    target = tmp_path / "private" / "map.tsv"
    target.parent.mkdir()
    target.write_text("old\n")
    os.chmod(target, 0o644)
    umask(mask)
    if command == "run":
        result = cli(
            "run",
            DEMO_CONFIG,
            "-i",
            source,
            "-o",
            tmp_path / "out",
            "-w",
            "0",
            "--no-report",
            "--set",
            "device=cpu",
            "--source-map",
            target,
        )
    else:
        result = cli("deid", source, tmp_path / "out", *key_args(tmp_path / "k.key"), "--list", target)
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and not target.is_symlink()
    assert "old" not in target.read_text() and str(source) in target.read_text()
    assert [p.name for p in target.parent.iterdir()] == ["map.tsv"]  # no temporary left beside it


def test_input_listing_in_a_new_folder_gets_private_folders(cli, tmp_path, umask):
    source = dicom_series(tmp_path / "data" / "series")
    umask(0o000)
    target = tmp_path / "a" / "b" / "map.tsv"
    result = cli(
        "run", DEMO_CONFIG, "-i", source, "-o", tmp_path / "out", "-w", "0", "--no-report", "--set", "device=cpu", "--source-map", target
    )
    assert result.exit_code == 0, result.stderr
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


# ----------------------------------------------------------------------------- modes of everything created


def _modes(root: Path) -> dict[str, str]:
    """Every folder and file under ``root`` (itself included) -> its octal mode; links are a failure of their own."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for path in root.rglob("*"):
        assert not path.is_symlink(), f"a link was created: {path}"
        found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def _assert_private(root: Path, file_mode: int = 0o600, dir_mode: int = 0o700) -> int:
    wrong = {}
    for name, mode in _modes(root).items():
        path = root / name
        expected = dir_mode if path.is_dir() else file_mode
        if int(mode, 8) != expected:
            wrong[name] = mode
    assert not wrong, f"not {oct(file_mode)}/{oct(dir_mode)}: {wrong}"
    return len(_modes(root))


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_run_convert_and_deid_create_only_private_folders_and_files(cli, tmp_path, umask, mask):
    dicom_series(tmp_path / "in" / "dicom" / "s1")
    nifti_input(tmp_path / "in" / "nifti")
    umask(mask)
    base = tmp_path / "new"  # every level below it is created by VoxPipe
    run = cli("run", DEMO_CONFIG, "-i", tmp_path / "in", "-o", base / "a" / "run", "-w", "0", "--set", "device=cpu")
    assert run.exit_code == 0, run.stderr
    convert = cli("convert", tmp_path / "in" / "dicom", base / "b" / "nifti")
    assert convert.exit_code == 0, convert.stderr
    single = cli("convert", tmp_path / "in" / "dicom", base / "b" / "one.nii.gz")
    assert single.exit_code == 0, single.stderr
    deid = cli(
        "deid", tmp_path / "in" / "dicom", base / "c" / "deid", *key_args(tmp_path / "keys" / "k.key"), "--list", base / "d" / "list.tsv"
    )
    assert deid.exit_code == 0, deid.stderr
    count = _assert_private(base)
    assert count > 12  # run: case folders, NIfTI, previews, manifest, report; convert; deid's study/series tree


def test_run_with_a_worker_process_creates_only_private_outputs(cli, tmp_path, umask):
    nifti_input(tmp_path / "in")
    umask(0o000)
    result = cli("run", DEMO_CONFIG, "-i", tmp_path / "in", "-o", tmp_path / "new" / "out", "-w", "1", "--set", "device=cpu")
    assert result.exit_code == 0, result.stderr
    _assert_private(tmp_path / "new")


def test_group_modes_widen_only_as_asked(cli, tmp_path, umask, monkeypatch):
    dicom_series(tmp_path / "in")
    umask(0o000)
    monkeypatch.setenv("VOXPIPE_FILE_MODE", "0640")
    monkeypatch.setenv("VOXPIPE_DIR_MODE", "0750")
    assert cli("convert", tmp_path / "in", tmp_path / "new" / "nifti").exit_code == 0
    assert cli("deid", tmp_path / "in", tmp_path / "new" / "deid", *key_args(tmp_path / "k.key")).exit_code == 0
    _assert_private(tmp_path / "new", 0o640, 0o750)


def test_run_lock_and_staging_are_private(tmp_path, umask):
    from voxpipe.atomic import private_umask
    from voxpipe.runner import LOCK, STAGING, RunLock, prepare_output

    umask(0o000)
    previous = os.umask(private_umask())
    try:
        prepare_output(tmp_path / "x" / "out")
        with RunLock(tmp_path / "x" / "out"):
            assert stat.S_IMODE((tmp_path / "x" / "out" / STAGING / LOCK).stat().st_mode) == 0o600
            _assert_private(tmp_path / "x")
    finally:
        os.umask(previous)
    os.umask(0o000)  # and without the CLI's umask: the modes are explicit
    prepare_output(tmp_path / "y" / "out")
    with RunLock(tmp_path / "y" / "out"):
        _assert_private(tmp_path / "y")


def test_a_planted_link_at_the_run_lock_is_refused(tmp_path):
    from voxpipe.errors import UsageError
    from voxpipe.runner import LOCK, STAGING, RunLock, prepare_output

    prepare_output(tmp_path / "out")
    victim = tmp_path / "victim"
    victim.write_text("x")
    (tmp_path / "out" / STAGING / LOCK).symlink_to(victim)
    with pytest.raises(UsageError, match="run lock"):
        RunLock(tmp_path / "out").__enter__()
    assert victim.read_text() == "x"


HEADS_CONFIG = """\
version: 1
name: heads-modes
device: cpu
stages:
  - use: load.image2d
    with: {mode: gray}
  - use: head.vgg
    with: {arch: vgg11, width: 0.125, in_channels: 1, weights: run/best.safetensors}
  - use: write.predictions
training:
  task: heads
  data: data/data.csv
  epochs: 1
  batch_size: 8
  lr: 0.002
  threads: 2
"""


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_train_and_test_create_only_private_outputs(cli, tmp_path, umask, mask):
    """The trainers write with torch.save and open(): the command's umask keeps them private too."""
    import torch

    from voxpipe_plugins.heads.synthetic import write_dataset

    write_dataset(tmp_path / "data", count=24, size=32, seed=0)
    config = tmp_path / "c.yaml"
    config.write_text(HEADS_CONFIG)
    umask(mask)
    threads = torch.get_num_threads()
    try:
        trained = cli("train", config, "-o", tmp_path / "run")
        assert trained.exit_code == 0, trained.stderr
        tested = cli("test", config, "--checkpoint", tmp_path / "run" / "best.safetensors", "-o", tmp_path / "m" / "n" / "metrics.json")
        assert tested.exit_code == 0, tested.stderr
    finally:
        torch.set_num_threads(threads)
    _assert_private(tmp_path / "run")
    _assert_private(tmp_path / "m")


# ----------------------------------------------------------------------------- stale temporaries


def _plant_decoys(folder: Path) -> list[Path]:
    """Things that look like VoxPipe temporaries but are not its own shape: a rerun must keep them."""
    decoys = []
    (folder / ".notes.tmp").write_text("user")  # a file, not a folder
    decoys.append(folder / ".notes.tmp")
    mine = folder / ".case-0123456789ab_CT.nii.gz.abcdefgh.tmp"  # right name, but holds a user's extra file
    mine.mkdir()
    (mine / "case-0123456789ab_CT.nii.gz").write_text("x")
    (mine / "thesis.docx").write_text("y")
    decoys.append(mine / "thesis.docx")
    other = folder / ".report.pdf.abcdefgh.tmp"  # the shape, but not a name convert writes
    other.mkdir()
    (other / "report.pdf").write_text("z")
    decoys.append(other / "report.pdf")
    target = folder.parent / "linked-target"
    target.mkdir(exist_ok=True)
    (target / "case-ffffffffffff_CT.nii.gz").write_text("w")
    (folder / ".case-ffffffffffff_CT.nii.gz.abcdefgh.tmp").symlink_to(target, target_is_directory=True)  # a link: never followed
    decoys.append(target / "case-ffffffffffff_CT.nii.gz")
    wrong_inner = folder / ".case-aaaaaaaaaaaa_MR.nii.gz.zzzzzzzz.tmp"  # inner entry a folder, not a file
    (wrong_inner / "case-aaaaaaaaaaaa_MR.nii.gz").mkdir(parents=True)
    (wrong_inner / "case-aaaaaaaaaaaa_MR.nii.gz" / "keep").write_text("v")
    decoys.append(wrong_inner / "case-aaaaaaaaaaaa_MR.nii.gz" / "keep")
    return decoys


def _plant_stale(folder: Path, name: str, suffix: str = "k3j_x9q2") -> Path:
    stale = folder / f".{name}.{suffix}.tmp"
    stale.mkdir()
    (stale / name).write_bytes(b"\x1f\x8b partial")
    return stale


def test_convert_rerun_clears_its_own_stale_temporaries_and_nothing_else(cli, tmp_path):
    dicom_series(tmp_path / "in")
    out = tmp_path / "out"
    assert cli("convert", tmp_path / "in", out).exit_code == 0
    stale = [
        _plant_stale(out, "case-0123456789ab_CT.nii.gz"),
        _plant_stale(out, "case-00000000beef_MR.nii.gz", "abcdefgh"),
        out / ".case-00000000cafe_CT.nii.gz.q1w2e3r4.tmp",
    ]
    stale[2].mkdir()  # killed before the writer created its file
    decoys = _plant_decoys(out)
    result = cli("convert", tmp_path / "in", out, "--force")  # the first run's outputs are there
    assert result.exit_code == 0, result.stderr
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in decoys)
    # a single-file output clears only temporaries of that file's name, in the user's folder
    single = tmp_path / "mine"
    single.mkdir()
    own, foreign = _plant_stale(single, "ct.nii.gz"), _plant_stale(single, "other.nii.gz")
    assert cli("convert", tmp_path / "in", single / "ct.nii.gz").exit_code == 0
    assert not own.exists() and foreign.exists()


def test_run_rerun_keeps_a_users_dot_files(cli, tmp_path):
    nifti_input(tmp_path / "in")
    out = tmp_path / "out"
    args = ("run", DEMO_CONFIG, "-i", tmp_path / "in", "-o", out, "-w", "0", "--no-report", "--set", "device=cpu")
    assert cli(*args).exit_code == 0
    (out / ".notes.tmp").write_text("mine")
    (out / ".backup.tmp.d").mkdir()
    stale = _plant_stale(out, "manifest.json")
    assert cli(*args).exit_code == 0
    assert (out / ".notes.tmp").read_text() == "mine" and (out / ".backup.tmp.d").is_dir()
    assert not stale.exists()


def test_deid_rerun_clears_stale_temporaries_in_the_tree(cli, tmp_path):
    dicom_series(tmp_path / "in")
    out = tmp_path / "out"
    assert cli("deid", tmp_path / "in", out, *key_args(tmp_path / "k.key")).exit_code == 0
    series = next(out.glob("study-*/series-*"))
    stale = _plant_stale(series, "2.25.1234.dcm")
    (series / ".notes.tmp").write_text("mine")
    cli("deid", tmp_path / "in", out, *key_args(tmp_path / "k.key"))  # a rerun with the same key: it rewrites
    assert not stale.exists() and (series / ".notes.tmp").exists()


def test_a_convert_killed_mid_write_leaves_nothing_after_the_rerun(tmp_path):
    """SIGKILL a real `voxpipe convert` while it writes, then rerun: the partial file's folder is gone, the output whole."""
    dicom_series(tmp_path / "in", slices=160, size=256)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", "from voxpipe.entry import run; run()", "convert", str(tmp_path / "in"), str(out)]
    killed = False
    for _ in range(5):  # the write must be caught in the act; a fast machine may need another try
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None:
            if any(p.is_dir() and any(p.iterdir()) for p in out.glob(".*.tmp")):
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed = True
                break
            time.sleep(0.002)
        if killed:
            break
        for done in out.glob("case-*"):
            done.unlink()
    assert killed, "convert finished every time before its temporary file appeared"
    leftovers = list(out.glob(".*.tmp"))
    assert leftovers and not list(out.glob("case-*.nii.gz"))
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in out.glob("case-*_CT.*"))
    assert sorted(p.name.split(".", 1)[1] for p in out.iterdir()) == ["json", "nii.gz"]  # the NIfTI and its sidecar


# ----------------------------------------------------------------------------- the Python API keeps the command's rules


def test_deidentify_tree_from_python_refuses_overlaps_and_listings_inside_the_output(tmp_path, monkeypatch, umask):
    from voxpipe.errors import UsageError
    from voxpipe_plugins.deid.engine import DeidOptions
    from voxpipe_plugins.deid.tree import deidentify_tree

    monkeypatch.chdir(tmp_path)
    source = dicom_series(tmp_path / "in" / "series")
    key = tmp_path / "keys" / "deid.key"
    (tmp_path / "in-link").symlink_to(tmp_path / "in", target_is_directory=True)
    for output in (tmp_path / "in" / "out", tmp_path / "in-link" / "out", Path("in") / "series" / ".." / "out"):
        with pytest.raises(UsageError, match="inside the input"):
            deidentify_tree(tmp_path / "in", output, key, DeidOptions())
    out = tmp_path / "out"
    for _, listing in _map_spellings(tmp_path, out):
        with pytest.raises(UsageError, match="inside the output"):
            deidentify_tree(source, out, key, DeidOptions(), listing=listing)
    umask(0o000)
    listing = tmp_path / "lists" / "list.tsv"
    listing.parent.mkdir(mode=0o700)
    listing.write_text("old\n")
    listing.chmod(0o644)
    summary = deidentify_tree(source, out, key, DeidOptions(), listing=listing)
    assert summary.exit_code == 0
    assert stat.S_IMODE(listing.stat().st_mode) == 0o600 and listing.read_text().startswith("source\tresult")
    assert stat.S_IMODE(out.stat().st_mode) == 0o700

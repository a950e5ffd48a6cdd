"""Damaged compressed DICOM files never crash, never print a traceback, never stop a batch (issue 14 §3).

Three hundred mutants (every compressed syntax x bit flips, truncation, offset-table and
fragment-length corruption, overwritten codestream headers, wrong Pixel Data lengths, wrong
Rows/Columns; deflated streams flipped and truncated) lie in one folder beside a good series of
each syntax. ``convert`` and ``info`` (as real subprocesses, so native libraries' own stderr
output and process aborts would show) and ``run`` must report each bad file in one line and
still convert every good series. Deterministic: fixed seed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.dicom_codecs import CODECS, write_coded_series
from tests.dicom_mutants import mutant_bytes, write_mutants
from voxpipe.cases import case_id, id_key
from voxpipe_plugins.io_dicom.loader import case_source, discover_series

PER_CODEC = 30
VOXPIPE = [sys.executable, "-m", "voxpipe.cli"]
CONFIG = "version: 1\nname: fuzz\ndevice: cpu\nstages:\n  - use: load.dicom\n  - use: write.nifti\n"
NOISE = ("Traceback", "panicked", "terminate called", "internal error", "Segmentation", "core dumped")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    warnings.simplefilter("ignore")
    root = tmp_path_factory.mktemp("fuzz")
    bases = {}
    for codec in CODECS:
        paths, _ = write_coded_series(root / "input" / f"good_{codec}", codec, slices=8, size=32 if codec != "j2k-lossy" else 64)
        bases[codec] = paths[0]
    return root, write_mutants(bases, root / "input" / "mutants", PER_CODEC)


def _good(root: Path) -> dict[str, str]:
    """Case id -> codec of the good series (under the test's own id key, so per test)."""
    key = id_key()
    good = {}
    for codec in CODECS:
        [series] = discover_series(root / "input" / f"good_{codec}")
        good[case_id(case_source(series), key)] = codec
    return good


def _voxpipe(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*VOXPIPE, *map(str, args)], check=False, capture_output=True, text=True, timeout=300, env=dict(os.environ))


def _clean(text: str) -> None:
    for word in NOISE:
        assert word not in text, text[-3000:]


def test_convert_survives_every_mutant_and_converts_every_good_series(corpus, tmp_path):
    root, mutants = corpus
    good = _good(root)
    result = _voxpipe("convert", root / "input", tmp_path / "out")
    assert result.returncode == 1, result.stderr[-3000:]  # some cases failed, none crashed
    _clean(result.stdout + result.stderr)
    lines = result.stderr.splitlines()
    converted = {line.split()[0] for line in lines if "  -> " in line}
    failed = [line for line in lines if "  failed: " in line]
    assert set(good) <= converted
    assert all(line.startswith("case-") for line in failed)
    passed_over = [line for line in lines if line.startswith("passed over: ")]
    counted = sum(int(part.split()[0]) for part in passed_over[0][len("passed over: ") :].split(", ")) if passed_over else 0
    assert len(converted) + len(failed) + counted == len(mutants) + len(good)  # every file accounted for
    assert len(failed) >= len(mutants) // 3  # the damage is real: many are refused
    print(f"\nconvert: {len(mutants)} mutants, {len(converted) - len(good)} decoded, {len(failed)} failed cleanly, {counted} passed over")


def test_info_survives_every_mutant(corpus):
    root, _ = corpus
    good = _good(root)
    result = _voxpipe("info", root / "input", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    _clean(result.stdout + result.stderr)
    rows = json.loads(result.stdout)["series"]
    assert set(good) <= {row["case_id"] for row in rows}


def test_run_survives_mutants_and_runs_every_good_series(corpus, tmp_path):
    """A slice of the corpus (``run`` costs more per case): every mutant kind of every syntax."""
    root, mutants = corpus
    good = _good(root)
    folder = tmp_path / "input"
    for codec in CODECS:
        shutil.copytree(root / "input" / f"good_{codec}", folder / codec)
    picked = mutants[:: max(1, PER_CODEC // 7)]
    for path in picked:
        shutil.copy(path, folder / path.name)
    (tmp_path / "config.yaml").write_text(CONFIG)
    result = _voxpipe("run", tmp_path / "config.yaml", "-i", folder, "-o", tmp_path / "out", "--workers", "0")
    _clean(result.stdout + result.stderr)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    status = {case["case_id"]: case["status"] for case in manifest["cases"]}
    assert all(status.get(cid) == "ok" for cid in good), {good[c]: status.get(c) for c in good}
    assert result.returncode == 1 and list(status.values()).count("failed") >= len(picked) // 3


def test_every_decoder_failure_is_a_pixel_error(corpus):
    """In process, each mutant decodes or raises PixelError: nothing else escapes (not even BaseException)."""
    from voxpipe_plugins.io_dicom.pixels import PixelError, decode_pixels

    _, mutants = corpus
    outcomes = {"decoded": 0, "PixelError": 0}
    for path in mutants:
        try:
            decode_pixels(path)
            outcomes["decoded"] += 1
        except PixelError as exc:
            assert "\n" not in str(exc) and path.name in str(exc)
            outcomes["PixelError"] += 1
    assert outcomes["PixelError"] > 0


def test_a_rust_decoder_panic_becomes_a_pixel_error(tmp_path, monkeypatch):
    """pylibjpeg-rle panics on some damaged frames (PanicException derives from BaseException)."""
    pytest.importorskip("rle")
    import pydicom

    from voxpipe_plugins.io_dicom import pixels

    paths, _ = write_coded_series(tmp_path / "rle", "rle", slices=1, size=64)
    rng = random.Random(3)
    for attempt in range(400):
        path = tmp_path / f"MU{attempt:05d}.dcm"
        path.write_bytes(mutant_bytes(paths[0], "flip", rng))
        try:
            ds = pydicom.dcmread(path)
            ds.pixel_array_options(decoding_plugin="pylibjpeg")
            _ = ds.pixel_array
        except Exception:  # noqa: BLE001, S112 - an ordinary failure: not the case looked for
            continue
        except BaseException as exc:  # noqa: BLE001 - the panic
            assert not isinstance(exc, (KeyboardInterrupt, SystemExit))
            break
    else:
        pytest.skip("no mutant made this pylibjpeg-rle panic")
    monkeypatch.setitem(pixels.SAFE_PLUGINS, "1.2.840.10008.1.2.5", ("pylibjpeg",))
    with pytest.raises(pixels.PixelError, match="cannot decode RLE Lossless"):
        pixels.decode_pixels(path)
    monkeypatch.undo()
    try:  # pydicom's own decoder never panics: it decodes or raises an ordinary error
        pixels.decode_pixels(path)
    except pixels.PixelError:
        pass

"""Every compressed transfer syntax through ``voxpipe run`` with every executor (issue 14 §2).

Series of 8 or more compressed files once failed in pipeline workers ("daemonic processes
are not allowed to have children"): the loader started a decoding process pool inside a
worker. Tests that only used ``voxpipe convert`` or ``--workers 0`` missed it, so here one
input folder holds a series per syntax and each executor runs the whole folder; every case
must succeed and equal the load of its uncompressed twin (pydicom's decoding of the same
files, stored uncompressed), and lossless syntaxes the source volume itself.
"""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pytest

from tests.dicom_codecs import CODECS, LOSSLESS, write_coded_series, write_decoded_twin
from voxpipe.cases import case_id, id_key
from voxpipe_plugins.io_dicom.loader import (
    DicomOptions,
    case_source,
    discover_series,
    load_volume,
)

SLICES = 8  # the old pool started at 8 files
CONFIG = """\
version: 1
name: compressed-dicom
device: cpu
stages:
  - use: load.dicom
  - use: write.nifti
"""


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """One folder with a series per codec, and each series' expected volume (from its uncompressed twin)."""
    warnings.simplefilter("ignore")
    root = tmp_path_factory.mktemp("coded")
    expected = {}
    for codec in CODECS:
        paths, volume = write_coded_series(root / "input" / codec, codec, slices=SLICES)
        twin = write_decoded_twin(paths, root / "twins" / codec)
        [series] = discover_series(twin[0].parent)
        loaded = load_volume([h.path for h in series.headers], DicomOptions(), series.frames, series.headers)
        if codec in LOSSLESS:
            np.testing.assert_array_equal(loaded.array[0], volume.transpose(2, 1, 0))
        expected[codec] = (paths[0].parent, loaded.array[0], loaded.affine)
    return root / "input", expected


def _case_ids(expected: dict) -> dict[str, str]:
    key = id_key()
    ids = {}
    for codec, (folder, _, _) in expected.items():
        [series] = discover_series(folder)
        ids[case_id(case_source(series), key)] = codec
    return ids


@pytest.mark.parametrize(
    "executor",
    [["--workers", "0"], ["--workers", "1"], ["--workers", "2"], ["--executor", "dask-local", "--workers", "2"]],
    ids=["workers0", "workers1", "workers2", "dask-local"],
)
def test_every_compressed_syntax_runs_in_every_executor(cli, tmp_path, write_config, coded, executor):
    folder, expected = coded
    out = tmp_path / "out"
    result = cli("run", write_config(CONFIG), "-i", folder, "-o", out, *executor)
    manifest = json.loads((out / "manifest.json").read_text())
    failures = {c["case_id"]: c.get("error") for c in manifest["cases"] if c["status"] != "ok"}
    assert result.exit_code == 0 and not failures, (failures, result.stderr[-2000:])
    assert "daemonic" not in result.stderr and "Traceback" not in result.stderr
    ids = _case_ids(expected)
    assert sorted(c["case_id"] for c in manifest["cases"]) == sorted(ids)
    for cid, codec in ids.items():
        image = nib.load(out / cid / "image.nii.gz")
        _, values, affine = expected[codec]
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), values, err_msg=codec)
        np.testing.assert_allclose(image.affine, affine, atol=1e-4, err_msg=codec)


def test_decoding_pool_only_in_the_main_process(monkeypatch):
    """A worker (here: any process with a parent) decodes serially instead of starting a pool."""
    import multiprocessing

    from voxpipe_plugins.io_dicom import pixels

    assert pixels.may_start_processes()
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    assert not pixels.may_start_processes()

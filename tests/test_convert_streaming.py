"""``voxpipe convert`` streams regular uncompressed series slice by slice.

The streamed file must be the file the in-memory path writes, byte for byte (header and
voxels), for every rescale rule; series that cannot stream must say so before writing
anything, and the in-memory path then serves them. Ground truth is also checked
directly: the voxels are the real-world values the synthetic series was written from.
"""

from __future__ import annotations

import gzip
import stat
import warnings

import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import RLELossless

from voxpipe.atomic import atomic_path
from voxpipe_plugins.io_dicom.commands import convert
from voxpipe_plugins.io_dicom.loader import DicomOptions, SeriesError, discover_series, load_volume
from voxpipe_plugins.io_dicom.pixels import PixelError
from voxpipe_plugins.io_dicom.streaming import NotStreamable, stream_to_nifti
from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series
from voxpipe_plugins.io_nifti.writer import write_nifti

warnings.simplefilter("ignore")
SHAPE = (9, 20, 16)  # slices, rows, columns


def in_memory(series, target, options=None):
    options = options or DicomOptions()
    volume = load_volume([h.path for h in series.headers], options, series.frames, series.headers)
    write_nifti(volume.array, target, affine=volume.affine, meta=volume.meta)
    return volume


def raw_bytes(path):
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def one_series(folder):
    [series] = discover_series(folder)
    return series


SPECS = {
    "ct full-range int16, intercept -1024": (SeriesSpec(), None),
    "signed 12-bit": (SeriesSpec(bits_stored=12), None),
    "unsigned 12-bit, intercept -1024": (SeriesSpec(bits_stored=12, signed=False), None),
    "MONOCHROME1": (SeriesSpec(bits_stored=12, monochrome1=True, intercept=0.0), None),
    "per-slice whole intercepts": (SeriesSpec(intercept=[-1024.0 - 10 * k for k in range(SHAPE[0])]), None),
    "per-slice fractional slopes": (SeriesSpec(slope=[0.5 + 0.25 * k for k in range(SHAPE[0])], intercept=-100.0), None),
    "forced float32": (SeriesSpec(), "float32"),
}


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_streamed_file_is_the_in_memory_file(tmp_path, name, suffix):
    spec, dtype = SPECS[name]
    volume = ct_like_volume(SHAPE, seed=3)
    if spec.monochrome1 or not spec.signed:
        volume = np.clip(volume + 1024, 0, 4000) - (0 if spec.monochrome1 else 1024)
    write_series(tmp_path / "dicom", volume, spec)
    series = one_series(tmp_path / "dicom")
    options = DicomOptions(dtype=dtype or "auto")
    reference = in_memory(series, tmp_path / f"memory{suffix}", options)
    stream_to_nifti(series, tmp_path / f"stream{suffix}", options)
    assert raw_bytes(tmp_path / f"stream{suffix}") == raw_bytes(tmp_path / f"memory{suffix}")
    image = nib.load(tmp_path / f"stream{suffix}")
    data = np.asanyarray(image.dataobj)
    assert data.dtype == reference.array.dtype
    np.testing.assert_allclose(data, volume.transpose(2, 1, 0), atol=0.5 * max(np.atleast_1d(spec.slope)))
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dicom", f"memory{suffix}", f"stream{suffix}"])


def test_values_beyond_int16_fall_back_to_the_whole_volume_and_int32(tmp_path):
    volume = ct_like_volume(SHAPE, seed=4)
    volume[-1, 0, 0] = -33000  # stored as -31976 (fits int16), real-world value does not
    write_series(tmp_path / "dicom", volume, SeriesSpec())
    series = one_series(tmp_path / "dicom")
    with pytest.raises(NotStreamable):
        stream_to_nifti(series, tmp_path / "out.nii", DicomOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dicom"]  # the slices written so far are gone
    results, _ = convert(tmp_path / "dicom", tmp_path / "out.nii", DicomOptions())
    assert results[0].error is None
    data = np.asanyarray(nib.load(tmp_path / "out.nii").dataobj)
    assert data.dtype == np.int32
    np.testing.assert_array_equal(data, volume.transpose(2, 1, 0))


@pytest.mark.parametrize("why", ["compressed", "missing slice", "no geometry"])
def test_series_that_cannot_stream_say_so_before_writing(tmp_path, why):
    volume = ct_like_volume(SHAPE, seed=5)
    spec = SeriesSpec(transfer_syntax=RLELossless) if why == "compressed" else SeriesSpec()
    write_series(tmp_path / "dicom", volume, spec, skip=[4] if why == "missing slice" else ())
    series = one_series(tmp_path / "dicom")
    if why == "no geometry":
        for header in series.headers:
            header.values.pop("ImagePositionPatient", None)
    with pytest.raises(NotStreamable):
        stream_to_nifti(series, tmp_path / "out.nii", DicomOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dicom"]


def test_convert_of_a_compressed_series_still_matches_the_loader(tmp_path):
    volume = ct_like_volume(SHAPE, seed=6)
    write_series(tmp_path / "dicom", volume, SeriesSpec(transfer_syntax=RLELossless))
    results, _ = convert(tmp_path / "dicom", tmp_path / "out.nii", DicomOptions())
    assert results[0].error is None
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / "out.nii").dataobj), volume.transpose(2, 1, 0))


def test_a_truncated_slice_stops_the_stream_and_leaves_nothing(tmp_path):
    volume = ct_like_volume(SHAPE, seed=7)
    paths = write_series(tmp_path / "dicom", volume, SeriesSpec())
    series = one_series(tmp_path / "dicom")
    victim = sorted(paths)[len(paths) // 2]
    victim.write_bytes(victim.read_bytes()[:-100])  # after discovery: the header still promises the full slice
    with pytest.raises((PixelError, SeriesError)) as error:
        stream_to_nifti(series, tmp_path / "out.nii", DicomOptions())
    assert victim.name in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dicom"]


def test_atomic_path_writes_in_a_private_folder_and_cleans_up(tmp_path):
    target = tmp_path / "image.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.name == target.name and tmp.parent.parent == tmp_path
        assert stat.S_IMODE(tmp.parent.stat().st_mode) == 0o700
        assert not tmp.exists()  # created by the writer: no truncate-and-rewrite (ext4 flushes those on close)
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data" and sorted(tmp_path.iterdir()) == [target]
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "other.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert sorted(tmp_path.iterdir()) == [target]

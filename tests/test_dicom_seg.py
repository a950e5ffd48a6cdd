"""DICOM SEG output: built and validated by highdicom, referencing the source series, read back exactly."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest

from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_enhanced, write_series

warnings.simplefilter("ignore")

CONFIG = """\
version: 1
name: seg
stages:
  - use: {loader}
  - use: segment.otsu
  - use: write.nifti
    with: {{keys: [label]}}
  - use: write.dicom_seg
"""


@pytest.mark.parametrize("loader", ["load.dicom", "load.auto"])
def test_seg_references_source_and_reads_back(cli, tmp_path, loader):
    import highdicom as hd

    volume = ct_like_volume((8, 32, 28), seed=3)
    spec = SeriesSpec(row_dir=(1, 0, 0), col_dir=(0, 0, -1), spacing=(0.8, 0.6, 2.0))  # coronal, non-square
    paths = write_series(tmp_path / "in", volume, spec)
    config = tmp_path / "seg.yaml"
    config.write_text(CONFIG.format(loader=loader))
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    [case] = json.loads((tmp_path / "out" / "manifest.json").read_text())["cases"]
    folder = tmp_path / "out" / case["case_id"]
    seg = hd.seg.segread(folder / "segmentation.dcm")
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == spec.series_uid
    assert seg.FrameOfReferenceUID == spec.frame_uid and seg.StudyInstanceUID == spec.study_uid
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in paths}
    label = np.asanyarray(nib.load(folder / "label.nii.gz").dataobj)  # (i, j, k) in sorted order
    headers = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in paths), key=lambda d: np.dot(np.asarray(d.ImagePositionPatient, float), np.cross(spec.row_dir, spec.col_dir)))
    uids = [d.SOPInstanceUID for d in headers]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True)
    np.testing.assert_array_equal(pixels, label.transpose(2, 1, 0))
    assert label.any() and len(sources) == 8
    assert seg.SegmentSequence[0].SegmentLabel == "foreground"


def test_seg_from_enhanced_multiframe(cli, tmp_path):
    import highdicom as hd

    volume = ct_like_volume((6, 24, 24), seed=4)
    order = [3, 0, 5, 1, 4, 2]
    write_enhanced(tmp_path / "in" / "enhanced.dcm", volume, SeriesSpec(), frame_order=order)
    config = tmp_path / "seg.yaml"
    config.write_text(CONFIG.format(loader="load.dicom"))
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    [case] = json.loads((tmp_path / "out" / "manifest.json").read_text())["cases"]
    folder = tmp_path / "out" / case["case_id"]
    seg = hd.seg.segread(folder / "segmentation.dcm")
    label = np.asanyarray(nib.load(folder / "label.nii.gz").dataobj).transpose(2, 1, 0)  # sorted by position
    source_uid = pydicom.dcmread(tmp_path / "in" / "enhanced.dcm", stop_before_pixels=True).SOPInstanceUID
    stored = seg.get_pixels_by_source_frame(source_sop_instance_uid=source_uid, source_frame_numbers=[f + 1 for f in range(6)],
                                            combine_segments=True, skip_overlap_checks=True)
    np.testing.assert_array_equal(stored, label[order])  # stored frame f holds the slice at sorted position order[f]


def test_seg_refuses_non_dicom_and_resampled_grids(cli, tmp_path):
    from tests.conftest import write_nifti

    write_nifti(tmp_path / "in" / "v.nii.gz", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    config = tmp_path / "seg.yaml"
    config.write_text(CONFIG.format(loader="load.auto"))
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "needs a case loaded from DICOM" in result.stderr
    write_series(tmp_path / "dcm", ct_like_volume((8, 24, 24)), SeriesSpec())
    resampled = CONFIG.format(loader="load.dicom").replace("  - use: segment.otsu", "  - use: monai.Spacingd\n    with: {keys: [image], pixdim: [1.5, 1.5, 3.0]}\n  - use: segment.otsu")
    config.write_text(resampled)
    result = cli("run", config, "-i", tmp_path / "dcm", "-o", tmp_path / "out2")
    assert result.exit_code == 1 and "does not match the source series grid" in result.stderr


@pytest.mark.skipif(__import__("shutil").which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_seg_passes_the_dicom3tools_iod_validator(cli, tmp_path):
    """David Clunie's dciodvfy checks the SEG against the standard's IOD and module tables
    (what viewers such as 3D Slicer rely on): no errors and no warnings, single- and multi-frame sources."""
    import subprocess

    write_series(tmp_path / "in" / "axial", ct_like_volume((8, 32, 28), seed=3), SeriesSpec(spacing=(0.8, 0.6, 2.0)))
    write_enhanced(tmp_path / "in" / "enhanced" / "mf.dcm", ct_like_volume((6, 24, 24), seed=4), SeriesSpec(), frame_order=[3, 0, 5, 1, 4, 2])
    config = tmp_path / "seg.yaml"
    config.write_text(CONFIG.format(loader="load.dicom"))
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    segs = sorted((tmp_path / "out").glob("case-*/segmentation.dcm"))
    assert len(segs) == 2
    for seg in segs:
        check = subprocess.run(["dciodvfy", str(seg)], capture_output=True, text=True, timeout=60)
        report = (check.stdout + check.stderr).splitlines()
        problems = [line for line in report if line.startswith(("Error", "Warning"))]
        assert check.returncode == 0 and not problems, "\n".join(problems[:10])
        assert any(line.strip() == "Segmentation" for line in report)

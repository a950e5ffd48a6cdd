"""configs/demo.yaml, the README's first command: the whole CT chain on a generated series.

DICOM series -> NLM denoise -> body and lungs -> radiomics -> NIfTI, DICOM SEG, features,
PNGs, report. Checked for every output, and measured against the phantom's own truth:
lung and body volumes within 10 %, the lungs' mean HU where the phantom puts it.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO

DEMO = REPO / "configs" / "demo.yaml"
SHAPE, SCALE = (96, 96, 24), 160 / 96


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory):
    """One thorax series like the sample data's first, run through the demo in this process."""
    import os

    from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, write_series
    from voxpipe_plugins.samples.data import thorax_ct

    base = tmp_path_factory.mktemp("demo")
    volume, spacing = thorax_ct(0, shape=SHAPE, scale=SCALE)  # the sample series' anatomy on a coarser grid (faster)
    write_series(base / "in" / "ct", volume, SeriesSpec(spacing=spacing, series_description="demo CT", patient_name="Demo^Patient1"))
    os.environ.setdefault("VOXPIPE_ID_KEY_FILE", str(base / "id.key"))
    import voxpipe

    summary = voxpipe.run(DEMO, base / "in", base / "out", device="cpu", workers=0)
    return summary, base / "out", volume, spacing


def test_demo_runs_the_whole_chain(demo_output):
    summary, out, _, _ = demo_output
    assert summary.exit_code == 0 and summary.count("ok") == 1, [o.error for o in summary.outcomes]
    case = out / summary.outcomes[0].case_id
    names = {p.name for p in case.iterdir()}
    assert {
        "image.nii.gz",
        "label.nii.gz",
        "label.labels.json",
        "segmentation.dcm",
        "montage.png",
        "preview.png",
        "features.npz",
        "features.json",
        "case.json",
    } <= names
    assert json.loads((case / "label.labels.json").read_text()) == {"0": "background", "1": "lungs", "2": "body"}
    assert (out / "report.html").is_file() and (out / "manifest.json").is_file()
    stages = [s["stage"] for s in json.loads((out / "manifest.json").read_text())["cases"][0]["stages"]]
    assert stages[0] == "load.dicom" and "denoise" in stages and "radiomics.extract" in stages and stages[-1] == "write.preview"


def test_demo_segments_what_the_phantom_holds(demo_output):
    from voxpipe_plugins.segment.phantoms import ct_phantom

    summary, out, _, spacing = demo_output
    record = json.loads((out / summary.outcomes[0].case_id / "case.json").read_text())
    volumes = record["metrics"]["volumes_ml"]
    truth = ct_phantom(shape=SHAPE, spacing=(spacing[1], spacing[0], spacing[2]), noise_hu=25.0, seed=11)
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000
    lungs_ml = truth.truth["lungs"].sum() * voxel_ml
    body_ml = truth.truth["body"].sum() * voxel_ml
    assert abs(volumes["lungs"] - lungs_ml) / lungs_ml < 0.10, (volumes, lungs_ml)
    assert abs(volumes["lungs"] + volumes["body"] - body_ml) / body_ml < 0.10, (volumes, body_ml)
    mean_hu = record["metrics"]["feature_values"]["lungs:firstorder.mean"]
    assert -880 < mean_hu < -820, "lungs are -850 HU in the phantom; radiomics runs on HU, not on the window"


def test_demo_dicom_seg_references_its_series(demo_output):
    import pydicom

    summary, out, _, _ = demo_output
    seg = pydicom.dcmread(out / summary.outcomes[0].case_id / "segmentation.dcm")
    assert seg.Modality == "SEG"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lungs", "body"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID


def test_demo_config_is_the_readme_first_command():
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "configs/demo.yaml" in makefile and "--ct-series 3" in makefile
    assert "docs/images/demo-report.png" in readme

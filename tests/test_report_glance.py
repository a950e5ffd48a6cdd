"""The report checked at a glance: the thumbnail's slice, contours, orientation letters, scale bar,
the volume plot's outliers, failures first, row thumbnails, sortable tables (issue 16, deliverable 5).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from voxpipe.thumbnail import AXIAL, PALETTE, best_slice, contours, planes, render, scale_length


def _labels() -> np.ndarray:
    """A big label 1 (the body) largest at z=2, a small label 2 largest at z=7."""
    labels = np.zeros((20, 20, 10), dtype=np.int16)
    labels[2:18, 2:18, 0:10] = 1
    labels[2:18, 2:18, 2] = 1
    labels[8:10, 8:10, 6] = 2
    labels[7:12, 7:12, 7] = 2
    labels[8:10, 8:10, 8] = 2
    return labels


@pytest.mark.parametrize("small_value", [2, 1, 7])
def test_slice_is_where_the_smallest_label_is_largest(small_value):
    labels = _labels()
    swap = labels.copy()
    swap[labels == 2] = small_value
    swap[labels == 1] = 3 if small_value != 3 else 4
    assert best_slice(swap, axis=2) == 7
    # the body label alone: its largest slice (the first of equal ones)
    assert best_slice((labels == 1).astype(np.int16), axis=2) == 0
    assert best_slice(np.zeros((4, 4, 6), dtype=np.int16), axis=2) == 3


def test_planes_cut_through_the_smallest_label():
    image = np.random.default_rng(0).normal(size=(1, 20, 20, 10)).astype(np.float32)
    _, plane, _ = planes(image, np.eye(4), _labels(), "largest_label")
    assert plane is not None and (plane == 2).sum() == 25
    _, middle, _ = planes(image, np.eye(4), _labels(), "middle")
    assert (middle == 2).sum() == 0


def test_contours_keep_the_anatomy_inside_visible():
    labels = np.zeros((40, 40), dtype=np.int32)
    labels[10:30, 10:30] = 3
    edges = contours(labels, width=2)
    assert set(np.unique(edges)) == {0, 3}
    assert edges[10, 15] == 3 and edges[11, 15] == 3 and edges[12, 15] == 0
    assert (edges[12:28, 12:28] == 0).all(), "the inside is not filled"
    grey = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (40, 1))
    picture = np.asarray(render(grey, labels, (1.0, 1.0), 0.0, 40))
    plain = np.asarray(render(grey, None, (1.0, 1.0), 0.0, 40))
    assert (picture[20, 20] == plain[20, 20]).all(), "alpha 0: the inside is the anatomy as it is"
    assert (picture[10, 20] == PALETTE[2].astype(np.uint8)).all(), "the contour is drawn in the label's colour"


def test_orientation_letters_and_scale_bar_are_drawn_on_volumes_only():
    grey = np.full((64, 64), 0.5, dtype=np.float32)
    grey[0, 0] = 0.0
    grey[-1, -1] = 1.0
    bare = np.asarray(render(grey, None, (2.0, 2.0), 0.0, 128))
    marked = np.asarray(render(grey, None, (2.0, 2.0), 0.0, 128, AXIAL, True))
    yellow = (marked[..., 0] > 200) & (marked[..., 1] > 200) & (marked[..., 2] < 60)
    h, w = yellow.shape
    for region in (
        yellow[:20, w // 2 - 10 : w // 2 + 10],
        yellow[-20:, w // 2 - 10 : w // 2 + 10],
        yellow[h // 2 - 12 : h // 2 + 12, :16],
        yellow[h // 2 - 12 : h // 2 + 12, -16:],
    ):
        assert region.any(), "a letter at each edge's midpoint"
    white_bar = (marked[-10:-6, :] == 255).all(axis=-1).any(axis=0).sum()
    # 128 mm wide picture at 1 px/mm: a 20 mm bar is 20 px
    assert scale_length(128.0) == 20.0 and abs(white_bar - 20 * bare.shape[1] / 128) <= 2
    assert not ((bare[..., 0] > 200) & (bare[..., 2] < 60)).any(), "no letters unless asked"


@pytest.mark.parametrize(("width", "expected"), [(5.0, 1.0), (100.0, 20.0), (260.0, 50.0), (512.0, 100.0), (0.3, 0.05)])
def test_scale_bar_lengths_are_round(width, expected):
    assert scale_length(width) == pytest.approx(expected)


# ----------------------------------------------------------------------------- the page


def _case(cid: str, status: str = "ok", volumes: dict | None = None, unit: str = "mL", source: str = "write.preview", seconds: float = 1.0):
    metrics = [
        {"name": f"{name} ({unit})", "value": value, "unit": unit, "source": source, "shown": str(value)}
        for name, value in (volumes or {}).items()
    ]
    case = {"case_id": cid, "status": status, "seconds": seconds, "metrics": metrics, "pictures": []}
    if status == "failed":
        case["error"] = f"{cid} could not be read: not a NIfTI file"
    return case


def _page(cases: list[dict]) -> str:
    from voxpipe.report import render_page

    return render_page({"pipeline": "p", "summary": {"cases": len(cases)}}, cases, [])


def test_robust_z_flags_the_outlier_a_mean_and_sd_would_hide():
    from voxpipe.report import robust_z

    values = [100.0, 102.0, 98.0, 101.0, 99.0, 5000.0]
    z = robust_z(values)
    assert abs(z[-1]) > 3.5 and all(abs(v) < 3.5 for v in z[:-1])
    mean, sd = np.mean(values), np.std(values)
    assert abs((values[-1] - mean) / sd) < 3.5, "a classic z-score misses it: the outlier inflates the SD"
    assert robust_z([5.0, 5.0, 5.0, 5.0]) == [0.0] * 4
    mostly_equal = robust_z([5.0, 5.0, 5.0, 5.0, 9.0])  # MAD 0: the mean absolute deviation stands in
    assert mostly_equal[-1] > 3.5 and mostly_equal[0] == 0.0
    assert robust_z([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == pytest.approx([0.6745 * (x - 4) / 2 for x in range(1, 8)])  # MAD 2


@pytest.mark.parametrize(("unit", "factor"), [("mL", 1.0), ("mm³", 1000.0), ("mm3", 1000.0), ("cm³", 1.0)])
def test_volumes_in_any_unit_are_plotted_in_ml_and_outliers_flagged(unit, factor):
    from voxpipe.report import _key_metrics

    cases = []
    for i, ml in enumerate([210.0, 190.0, 205.0, 198.0, 2900.0]):
        record = {
            "report": {"metrics": [{"name": "volumes.liver", "value": ml * factor, "unit": unit, "label": "liver", "source": "stage.x"}]}
        }
        cases.append({"case_id": f"case-{i}", "status": "ok", "seconds": 1.0, "metrics": _key_metrics(record), "pictures": []})
    text = _page(cases)
    assert "liver (mL)" in text and "mm³" not in text and "mm3" not in text, "one unit for every volume"
    flagged = re.findall(r'<circle class="outlier"[^>]*><title>([^<]*)</title>', text)
    assert len(flagged) == 1 and flagged[0].startswith("case-4: 2,900 mL"), flagged
    assert len(re.findall(r'<circle class="case"', text)) == 4
    assert "stage.x" in text, "the source of each number is stated"
    assert re.search(r'<tr class="ok outlier">\s*<td class=mono>case-4', text), "the case's row is flagged too"


def test_too_few_cases_flag_nothing_and_an_unstated_source_says_so():
    text = _page([_case("case-a", volumes={"liver": 10.0}, source=""), _case("case-b", volumes={"liver": 9000.0}, source="")])
    assert 'class="outlier"' not in text and "Flagged volumes" not in text
    assert "not stated" in text


def test_failures_come_first_with_their_reason():
    cases = [_case("case-1"), _case("case-2", "failed"), _case("case-3"), _case("case-4", "failed"), _case("case-5", "skipped")]
    text = _page(cases)
    rows = re.findall(r'<tr class="(ok|failed|skipped)[^"]*">\s*<td class=mono>(?:<a[^>]*>)?(case-\d)', text)
    assert [cid for _, cid in rows] == ["case-2", "case-4", "case-1", "case-3", "case-5"], rows
    failures = text.index("<h2>Failures</h2>")
    assert failures < text.index("<h2>Cases</h2>"), "the failures section is the first thing after the run's facts"
    assert "case-2 could not be read: not a NIfTI file" in text[failures : text.index("<h2>Cases</h2>")]


def test_every_table_is_sortable_and_the_page_needs_no_network():
    from voxpipe.report import SORT_SCRIPT, script_hash

    cases = [_case(f"case-{i}", volumes={"liver": 100.0 + i}) for i in range(4)]
    text = _page(cases)
    tables = re.findall(r"<table[^>]*>", text)
    assert tables and all("sortable" in t for t in tables if "mini" not in t), tables
    assert f"<script>{SORT_SCRIPT}</script>" in text
    assert f"script-src '{script_hash()}'" in text and "default-src 'none'" in text
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?!data:|#)[a-z]", text, re.I), "no resource but data: URIs and in-page anchors"
    assert not re.search(r"https?:|//[a-z0-9-]+\.[a-z]|@import|url\(", text, re.I)


def test_label_volumes_carry_their_source_copy_on_write():
    from monai.data import MetaTensor

    from voxpipe_plugins.label.volumes import report_label_volumes

    label = MetaTensor(np.zeros((1, 10, 10, 10), dtype=np.int16), affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    label[0, :5] = 1
    case = {"label": label}
    report_label_volumes(case, "label")
    before = case["report"]
    out = dict(case)
    report_label_volumes(out, "label", source="write.preview")
    assert case["report"] is before and "source" not in before["metrics"][0], "the input case is not changed"
    assert out["report"]["metrics"] == [
        {"name": "volumes_ml.label 1", "value": 4.0, "unit": "mL", "label": "label 1", "source": "write.preview"}
    ]


def test_montage_planes_cross_through_the_smallest_label():
    from voxpipe_plugins.preview.montage import centre_of

    labels = np.zeros((30, 30, 30), dtype=np.int16)
    labels[2:28, 2:28, 2:28] = 1  # the body
    labels[20:23, 5:8, 9:12] = 2  # a small lesion off-centre, largest at x=21, y=6, z=10
    labels[21, 6, 10] = 2
    labels[20:23, 5:8, 10] = 2
    labels[19:24, 4:9, 10] = 2
    assert centre_of(labels, labels.shape)[2] == 10
    x, y, _ = centre_of(labels, labels.shape)
    assert labels[x, y, 10] == 2, "the three planes meet inside the lesion, not in the body's centre"
    assert centre_of(None, (8, 6, 4)) == (4, 3, 2)

"""Report items: what stages record (report_metric / report_picture), how case.json keeps it, and
what report.html shows of it -- escaped, only from inside the case folder, never through links."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from voxpipe.report_items import (
    ReportItemError,
    items_of,
    metric_values,
    picture_path,
    report_metric,
    report_picture,
)

CID = "case-0123456789ab"
SCRIPT = "<script>alert(1)</script>"


# ----------------------------------------------------------------------------- recording


def test_items_are_copy_on_write():
    case = {"image": 1}
    report_metric(case, "a.x", 1.5, unit="mL")
    report_picture(case, "a.png", "first")
    before = json.loads(json.dumps(case["report"]))
    out = dict(case)  # the documented way a stage makes its output case
    report_metric(out, "a.y", 2)
    report_picture(out, "b.png")
    assert case["report"] == before, "the input case's items are not changed"
    assert out["report"] is not case["report"]
    assert out["report"]["metrics"] is not case["report"]["metrics"]
    assert [m["name"] for m in out["report"]["metrics"]] == ["a.x", "a.y"]
    assert [p["path"] for p in out["report"]["pictures"]] == ["a.png", "b.png"]


def test_recording_again_replaces_in_place_and_values_are_normalised():
    case: dict = {}
    report_metric(case, "v.lungs", 1.0, unit="mL", label="lungs")
    report_metric(case, "v.body", np.float32(2.5), unit="mL")
    report_metric(case, "v.lungs", np.int64(3), unit="mL", label="lungs")
    report_metric(case, "flag", True)
    report_metric(case, "grade", "II")
    metrics = items_of(case)["metrics"]
    assert [(m["name"], m["value"], type(m["value"])) for m in metrics] == [
        ("v.lungs", 3, int),
        ("v.body", 2.5, float),
        ("flag", 1, int),
        ("grade", "II", str),
    ]
    assert metrics[0]["label"] == "lungs" and "label" not in metrics[1]
    assert metric_values(metrics) == {"v": {"lungs": 3, "body": 2.5}, "flag": 1, "grade": "II"}
    report_picture(case, "p.png", "one")
    report_picture(case, "./p.png", "two")
    assert items_of(case)["pictures"] == [{"path": "p.png", "caption": "two"}]


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), np.float64("nan"), {"a": 1}, [1, 2], None, np.zeros(3), "x" * 201, "line\nbreak"]
)
def test_metric_values_that_cannot_be_shown_are_refused(value):
    case: dict = {}
    with pytest.raises(ReportItemError):
        report_metric(case, "m", value)
    assert "report" not in case


@pytest.mark.parametrize("name", ["", "   ", None, 3, "x" * 201, "a\x00b", "a\tb"])
def test_metric_names_must_be_short_text(name):
    with pytest.raises(ReportItemError):
        report_metric({}, name, 1)


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd.png",
        "//host/share/x.png",
        "../x.png",
        "a/../../x.png",
        "sub/../x.png",
        "..",
        "../",
        "..\\x.png",
        "sub\\x.png",
        "C:\\x.png",
        "C:x.png",
        "c:/x.png",
        "",
        ".",
        "./",
        "x.txt",
        "x.png.exe",
        "x",
        "x.svg",
        "x\x00.png",
        "x\n.png",
        "sub/",
        "a" * 300 + ".png",
        None,
        3,
        b"x.png",
    ],
)
def test_picture_paths_outside_the_case_folder_or_not_pictures_are_refused(path):
    case: dict = {}
    with pytest.raises(ReportItemError):
        report_picture(case, path)
    assert "report" not in case


@pytest.mark.parametrize(
    ("path", "clean"),
    [("a.png", "a.png"), ("./a.png", "a.png"), ("sub/a.PNG", "sub/a.PNG"), ("sub//b.jpg", "sub/b.jpg"), (Path("c.jpeg"), "c.jpeg")],
)
def test_relative_picture_paths_are_kept_clean(path, clean):
    assert picture_path(path) == clean


# ----------------------------------------------------------------------------- case.json


class _Result:
    def __init__(self, case):
        self.case = case


class _Source:
    kind = "nifti"
    paths = ()


def test_case_json_keeps_the_items_redacted_and_drops_pictures_not_in_the_folder(tmp_path):
    from voxpipe.worker import case_record

    (tmp_path / "ok.png").write_bytes(_png())
    os.symlink(tmp_path / "ok.png", tmp_path / "link.png")
    case = {"source": _Source(), "history": []}
    report_metric(case, "volumes_ml.Doe^Jane", 1.0, unit="mL", label="Doe^Jane's lungs")
    report_metric(case, "note", "seen Doe^Jane")
    report_picture(case, "ok.png", "Doe^Jane")
    report_picture(case, "link.png")
    report_picture(case, "missing.png")
    report_picture(case, "Doe^Jane.png")

    def redact(text):
        return text.replace("Doe^Jane", "<value withheld>")

    record = case_record(_Result(case), CID, "h", 1.0, [], [], [], redact, tmp_path)
    text = json.dumps(record)
    assert "Doe" not in text and "Jane" not in text
    assert record["report"]["pictures"] == [{"path": "ok.png", "caption": "<value withheld>"}]
    assert [m["name"] for m in record["report"]["metrics"]] == ["volumes_ml.<value withheld>", "note"]
    assert record["metrics"]["volumes_ml"] == {"<value withheld>": 1.0}


def test_the_core_names_no_plugin_output():
    """The report path knows no metric, file or module of any plugin: stages record what it shows."""
    root = Path(__file__).resolve().parents[1] / "platform" / "voxpipe"
    for name in ("worker.py", "report.py", "report_items.py", "runner.py", "templates/report.html.j2"):
        text = (root / name).read_text()
        for word in (
            "voxpipe_plugins",
            "shape.volume",
            "glcm",
            "firstorder",
            "preview.png",
            "montage.png",
            "PREVIEW_NAMES",
            "volumes_ml",
            "areas_px",
            "feature_values",
            "radiomics",
        ):
            assert word not in text, f"{name} names {word!r}"


# ----------------------------------------------------------------------------- report.html


def _png(size=(8, 6), colour=(200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _output(tmp_path: Path, report: dict, pipeline: str = "p") -> Path:
    out = tmp_path / "out"
    case = out / CID
    case.mkdir(parents=True)
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "pipeline": pipeline,
                "summary": {"cases": 1, "ok": 1},
                "cases": [{"case_id": CID, "status": "ok", "seconds": 1.0, "stages": [{"stage": "s", "seconds": 0.5}]}],
            }
        )
    )
    (case / "case.json").write_text(json.dumps({"case_id": CID, "status": "ok", "kind": "nifti", "report": report}))
    return out


class _Page(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _report(out: Path) -> tuple[str, _Page]:
    from voxpipe.report import write_report

    text = write_report(out).read_text(encoding="utf-8")
    return text, _Page(text)


@pytest.mark.parametrize("field", ["name", "value", "unit", "label", "source", "caption", "pipeline"])
def test_markup_in_any_recorded_text_is_shown_as_text(tmp_path, field):
    metric = {"name": "m", "value": 1.5, "unit": "mL", "label": "lungs"}
    picture = {"path": "p.png", "caption": "cap"}
    if field == "caption":
        picture["caption"] = SCRIPT
    elif field != "pipeline":
        metric[field] = SCRIPT
        if field == "name":
            del metric["label"]  # the label is shown instead of the name when there is one
    out = _output(tmp_path, {"metrics": [metric], "pictures": [picture]}, pipeline=SCRIPT if field == "pipeline" else "p")
    (out / CID / "p.png").write_bytes(_png())
    text, page = _report(out)
    from voxpipe.report import SORT_SCRIPT

    assert re.findall(r"<script\b[^>]*>(.*?)</script>", text, re.S | re.I) == [SORT_SCRIPT], "only the page's own sorter"
    assert text.lower().count("<script") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert any(SCRIPT in chunk for chunk in page.text), "shown, as text"


def test_recorded_metrics_and_pictures_are_shown_with_units(tmp_path):
    report = {
        "metrics": [{"name": "volumes.a", "value": 12.3456, "unit": "mL", "label": "lungs"}, {"name": "grade", "value": "II", "unit": ""}],
        "pictures": [{"path": "sub/p.png", "caption": "a picture"}, {"path": "q.png", "caption": ""}],
    }
    out = _output(tmp_path, report)
    (out / CID / "sub").mkdir()
    (out / CID / "sub" / "p.png").write_bytes(_png())
    (out / CID / "q.png").write_bytes(_png(colour=(0, 0, 255)))
    text, page = _report(out)
    words = " ".join(page.text)
    assert "lungs (mL)" in words and "12.3" in words and "grade" in words and "II" in words
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", text)
    assert captions == ["a picture", "q.png"], "recorded pictures in order; no caption: the path"
    assert "Across cases" in words  # numeric metrics get statistics


@pytest.mark.parametrize("how", ["absolute", "dotdot", "link", "linked_folder", "folder", "not_a_picture", "tampered_nested"])
def test_pictures_from_outside_the_case_folder_or_through_links_are_never_shown(tmp_path, how):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "x.png").write_bytes(_png(colour=(1, 2, 3)))
    path = {
        "absolute": str(secret / "x.png"),
        "dotdot": "../../secret/x.png",
        "link": "x.png",
        "linked_folder": "sub/x.png",
        "folder": "dir.png",
        "not_a_picture": "x.png",
        "tampered_nested": "sub/../../../secret/x.png",
    }[how]
    out = _output(tmp_path, {"metrics": [], "pictures": [{"path": path, "caption": "c"}]})
    folder = out / CID
    if how == "link":
        os.symlink(secret / "x.png", folder / "x.png")
    elif how == "linked_folder":
        os.symlink(secret, folder / "sub")
    elif how == "folder":
        (folder / "dir.png").mkdir()
    elif how == "not_a_picture":
        (folder / "x.png").write_bytes(b"not a png")
    text, page = _report(out)
    assert not [a for tag, a in page.tags if tag == "img"], f"{how}: nothing from outside is drawn"
    assert "<figcaption>c</figcaption>" not in text


def test_unrecorded_pngs_and_run_plots_are_not_read_through_links(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png())
    out = _output(tmp_path, {"metrics": [], "pictures": []})
    os.symlink(secret, out / CID / "plot.png")
    os.symlink(secret, out / "curve.png")
    text, page = _report(out)
    assert not [a for tag, a in page.tags if tag == "img"]
    (out / CID / "own.png").write_bytes(_png())
    (out / "run.png").write_bytes(_png())
    text, page = _report(out)
    assert re.findall(r"<figcaption>([^<]*)</figcaption>", text) == ["own.png", "run.png"]

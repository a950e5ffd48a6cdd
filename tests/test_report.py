"""``OUTDIR/report.html``: self-contained, complete, free of input names, and it renders.

Structure is checked on every run; the page is also rendered in headless Chromium when
it is installed (Debian's ``chromium``), and the screenshot must not be blank.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DEMO_CONFIG

NO_PREVIEW = """\
version: 1
name: no-preview
device: cpu
stages:
  - use: load.auto
  - use: intensity.scale
    with: {mode: percentile, lower: 1, upper: 99}
  - use: segment.otsu
  - use: write.nifti
    with: {keys: [image, label]}
"""


class _Collector(HTMLParser):
    """Every tag with its attributes, and the text, for structural checks."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> _Collector:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector


@pytest.fixture
def demo_run(cli, sample_inputs, tmp_path):
    """The demo on its sample inputs plus one broken file, in this process (fast)."""
    (sample_inputs / "broken-Doe^Jane.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "out"
    result = cli("run", DEMO_CONFIG, "-i", sample_inputs, "-o", out, "--workers", "0")
    assert result.exit_code == 1 and (out / "report.html").is_file(), result.stderr
    return out, sample_inputs


def test_report_is_self_contained_and_complete(demo_run):
    out, inputs = demo_run
    report = out / "report.html"
    page = parse(report)
    text = report.read_text()
    tags = {tag for tag, _ in page.tags}
    assert "iframe" not in tags and "link" not in tags and "object" not in tags and "embed" not in tags
    from voxpipe.report import SORT_SCRIPT, script_hash

    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", text, re.S | re.I)
    assert scripts == [SORT_SCRIPT], "one script: the table sorter, byte for byte"
    assert [a for tag, a in page.tags if tag == "script"] == [{}], "inline, no src"
    assert f"script-src '{script_hash()}'" in text, "the CSP allows that script by its hash, nothing else"
    assert not re.search(r"\son[a-z]+\s*=", re.sub(r"<script\b.*?</script>", "", text, flags=re.S)), "no inline handlers"
    assert not re.search(r"https?://|//[a-z0-9-]+\.[a-z]", text, re.I), "no external references of any kind"
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert "style" in tags and "default-src 'none'" in text  # CSP forbids the network even if something slipped in

    manifest = json.loads((out / "manifest.json").read_text())
    rows = [a for tag, a in page.tags if tag == "tr" and a.get("class", "").split(" ")[0] in ("ok", "failed", "skipped")]
    assert len(rows) == manifest["summary"]["cases"] == 5
    words = " ".join(page.text)
    for case in manifest["cases"]:
        assert case["case_id"] in words
    failed = [c for c in manifest["cases"] if c["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"] in words
    assert "foreground (mL)" in words, "label volumes are a key metric"
    cards = [a for tag, a in page.tags if tag == "img" and "class" not in a]  # the case cards' pictures (no run plots here)
    in_rows = [a for tag, a in page.tags if tag == "img" and a.get("class") == "row-thumb"]
    assert len(cards) == 4, "one picture per case that produced a preview"
    assert len(in_rows) == 4, "and its thumbnail in its table row"
    assert "Where the time goes" in words and "segment.otsu" in words

    readable = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)  # base64 holds any short string by chance
    for name in ["t1-brain", "phantom", "shepp", "ct-series", "Doe", "IM0", str(inputs)]:
        assert name not in readable, f"input name {name!r} leaked into the report"


def test_rerun_report_keeps_completed_cases_and_plots_are_included(cli, demo_run):
    from PIL import Image

    out, inputs = demo_run
    Image.fromarray((np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8)).save(out / "learning_curve.png")
    again = cli("run", DEMO_CONFIG, "-i", inputs, "-o", out, "--workers", "0")
    assert again.exit_code == 1
    page = parse(out / "report.html")
    words = " ".join(page.text)
    assert "learning_curve.png" in words and "Plots" in words
    assert sum(1 for tag, attrs in page.tags if tag == "img" and "class" not in attrs) == 5, "4 case cards and the run's plot"
    assert sum(1 for tag, attrs in page.tags if tag == "img" and attrs.get("class") == "row-thumb") == 4
    assert sum(1 for tag, attrs in page.tags if tag == "img") == 9, "skipped (complete) cases keep their thumbnails; the plot"
    assert words.count("skipped") >= 4


def test_thumbnail_rendered_when_the_pipeline_wrote_none(cli, sample_inputs, tmp_path, write_config):
    out = tmp_path / "out"
    result = cli("run", write_config(NO_PREVIEW), "-i", sample_inputs, "-o", out, "--workers", "0")
    assert result.exit_code == 0, result.stderr
    page = parse(out / "report.html")
    assert sum(1 for tag, a in page.tags if tag == "img" and "class" not in a) == 3, "3D cases: a thumbnail from their NIfTI"
    assert "rendered from image.nii.gz" in " ".join(page.text)
    import base64
    import io

    from PIL import Image

    for tag, attrs in page.tags:
        if tag == "img" and "class" not in attrs:
            pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))).convert("RGB")).astype(int)
            yellow = ((pixels[..., 0] > 180) & (pixels[..., 1] > 180) & (pixels[..., 2] < 90)).sum()
            assert yellow > 20, "the fallback thumbnail has the previews' orientation letters and scale label"
    no_report = tmp_path / "quiet"
    assert cli("run", write_config(NO_PREVIEW), "-i", sample_inputs, "-o", no_report, "--workers", "0", "--no-report").exit_code == 0
    assert not (no_report / "report.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    from PIL import Image

    out, _ = demo_run
    shot = tmp_path / "shot.png"
    profile = tempfile.mkdtemp(dir=tmp_path)
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file(), "Chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    background = np.array([0xF6, 0xF7, 0xF9])
    differs = np.abs(pixels - background).sum(axis=-1) > 30
    assert differs.mean() > 0.05, "the page rendered (nearly) blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200, "text, chips and thumbnails give many colours"
    green = (np.abs(pixels - np.array([0x1F, 0x9D, 0x55])).sum(axis=-1) < 40).sum()
    assert green > 50, "the ok status chips are drawn"


PROBE = (
    "var th=document.querySelectorAll('table.cases thead th')[4];function order(){return Array.from("
    "document.querySelectorAll('table.cases tbody tr')).map(function(r){return r.cells[4].getAttribute('data-v')}).join(',')}"
    "th.click();document.body.setAttribute('data-asc',order());th.click();document.body.setAttribute('data-desc',order());"
)
INTRUDER = "document.body.setAttribute('data-intruder','ran');"


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_at_a_glance_in_headless_chromium(demo_run, tmp_path):
    """DOM after the page's script ran: failures first, outliers flagged, contours drawn, sorting works, CSP holds."""
    import base64
    import hashlib
    import io
    import os

    from PIL import Image

    from voxpipe.report import script_hash

    out, _ = demo_run
    page = (out / "report.html").read_text(encoding="utf-8")
    probe_hash = "sha256-" + base64.b64encode(hashlib.sha256(PROBE.encode()).digest()).decode()
    probed = page.replace(f"script-src '{script_hash()}'", f"script-src '{script_hash()}' '{probe_hash}'")
    probed = probed.replace("</body>", f"<script>{PROBE}</script><script>{INTRUDER}</script></body>")
    copy = tmp_path / "probed.html"
    copy.write_text(probed, encoding="utf-8")
    dom = _chromium("--dump-dom", copy.as_uri(), profile=tmp_path / "p1").stdout
    assert "<table" in dom, "Chromium dumped the page"

    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert "data-intruder" not in body, "the CSP refuses a script it does not know by hash"
    asc = [float(v) for v in re.search(r'data-asc="([^"]*)"', body).group(1).split(",")]
    desc = [float(v) for v in re.search(r'data-desc="([^"]*)"', body).group(1).split(",")]
    assert asc == sorted(asc) and desc == sorted(desc, reverse=True) and len(asc) == 5, "a header click sorts, a second reverses"

    rows = re.findall(r'<tr class="(ok|failed|skipped)[^"]*">', page)
    assert rows[0] == "failed" and rows.count("failed") == 1, "failures first"
    assert len(re.findall(r'<circle class="outlier"', dom)) >= 1, "the demo's outlying volume is flagged in the plot"
    assert "Flagged volumes" in dom and "write.preview" in dom, "with the stage that recorded the number"

    thumbs = re.findall(r"<figure><img src=\"data:image/png;base64,([^\"]+)\"", dom)  # the case cards' pictures
    pictures = [np.asarray(Image.open(io.BytesIO(base64.b64decode(t))).convert("RGB")).astype(int) for t in thumbs]
    contour = [(np.abs(p - np.array([230, 25, 75])).sum(axis=-1) < 60).sum() for p in pictures]
    yellow = [((p[..., 0] > 180) & (p[..., 1] > 180) & (p[..., 2] < 90)).sum() for p in pictures]
    assert len(pictures) == 4 and sum(c > 20 for c in contour) >= 3, f"label contours drawn on the volumes: {contour}"
    assert sum(y > 5 for y in yellow) >= 3, f"orientation letters on the volumes: {yellow}"

    shot = tmp_path / "glance.png"
    _chromium(
        f"--screenshot={shot}", "--window-size=1200,2000", "--hide-scrollbars", (out / "report.html").as_uri(), profile=tmp_path / "p2"
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    red = (np.abs(pixels - np.array([0xD6, 0x45, 0x45])).sum(axis=-1) < 30).sum()
    assert red > 60, "the failed chip and the flagged volume are drawn in red"
    if os.environ.get("VOXPIPE_UPDATE_SCREENSHOTS"):  # docs/images/demo-report.png, shown in docs/report.md
        shutil.copyfile(shot, Path(__file__).resolve().parents[1] / "docs" / "images" / "demo-report.png")

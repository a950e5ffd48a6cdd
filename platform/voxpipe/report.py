"""``OUTDIR/report.html``: one self-contained page a radiologist can check at a glance.

Everything is inline: CSS in a ``<style>`` element, images as ``data:`` URIs, charts as
inline SVG, one small script (sorting a table by a header click) allowed by its hash in the
page's Content-Security-Policy, so the file can be mailed, archived or opened offline and
never reaches the network. It shows the run (pipeline, config hash, executor, counts), the
failures first with their one-line reason, a case table (failed cases first, each row
with its thumbnail, status, time, key metrics), each label's volume across cases in mL
with outliers flagged by a robust z-score (median/MAD, |z| > 3.5) and the stage that
recorded each number, a card per case with the pictures and metrics its stages recorded
(:mod:`voxpipe.report_items`; a thumbnail drawn from the case's ``image`` NIfTI when no
stage recorded a picture), statistics of every numeric metric across cases, and every
other PNG the run produced. The core names no metric and no file of any plugin: what the
stages recorded in ``case.json`` is what appears. Only pseudonymous case ids and recorded
items appear: no input names, no header values (the worker redacted the recorded texts).

The page is rendered from ``templates/report.html.j2`` with autoescape on, so a metric
name, value or caption holding markup is shown as text.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import statistics
from pathlib import Path
from typing import Any

from voxpipe.atomic import atomic_path
from voxpipe.report_items import picture_file

REPORT = "report.html"
TEMPLATE = "report.html.j2"
THUMB_WIDTH = 360
PLOT_WIDTH = 720
MAX_CARDS = 200  # beyond this the table still lists every case; thumbnails stop
TABLE_COLUMNS = 12
KEY_METRICS = 4  # shown in the case table's one-line summary
FALLBACK_CAPTION = "rendered from image.nii.gz"
ROW_THUMB_WIDTH = 120  # the thumbnail in a case's table row
OUTLIER_Z = 3.5  # robust z-score (Iglewicz & Hoaglin) beyond which a volume is flagged
MIN_CASES_FOR_OUTLIERS = 3
VOLUME_UNITS = {"mL": 1.0, "ml": 1.0, "mm³": 0.001, "mm3": 0.001, "cm³": 1.0, "cm3": 1.0, "L": 1000.0}

# Sorting a table by clicking a header: the only script on the page, allowed by its hash (CSP).
SORT_SCRIPT = (
    "document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){"
    "var row=th.parentNode,body=th.closest('table').tBodies[0],i=Array.prototype.indexOf.call(row.children,th),"
    "dir=th.getAttribute('data-dir')==='asc'?'desc':'asc';"
    "row.querySelectorAll('th').forEach(function(h){h.removeAttribute('data-dir')});th.setAttribute('data-dir',dir);"
    "function key(r){var c=r.cells[i];if(!c)return '';var v=c.hasAttribute('data-v')?c.getAttribute('data-v'):c.textContent.trim();"
    "var n=parseFloat(v.replace(/,/g,''));return isNaN(n)?v.toLowerCase():n}"
    "Array.from(body.rows).sort(function(a,b){var x=key(a),y=key(b),r=(typeof x==='number'&&typeof y==='number')?x-y:"
    "String(x).localeCompare(String(y));return dir==='asc'?r:-r}).forEach(function(r){body.appendChild(r)})})})"
)


def write_report(output_dir: Path) -> Path:
    """Build the report from ``manifest.json`` and the case folders; write it atomically."""
    output_dir = Path(output_dir)
    manifest = json.loads((output_dir / "manifest.json").read_text())
    cases = [_case_view(output_dir, entry) for entry in manifest.get("cases", [])]
    page = render_page(manifest, cases, _run_plots(output_dir))
    target = output_dir / REPORT
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


# ----------------------------------------------------------------------------- gathering


def _case_view(output_dir: Path, entry: dict) -> dict:
    """What the report shows of one case: manifest entry + its case.json + its pictures."""
    view = dict(entry)
    folder = output_dir / entry["case_id"]
    record: dict = {}
    if entry.get("status") in ("ok", "skipped") and _plain_file(folder, "case.json"):
        try:
            record = json.loads((folder / "case.json").read_text())
        except ValueError:
            record = {}
        record = record if isinstance(record, dict) else {}
    if entry.get("status") == "skipped":  # complete from an earlier run: show its numbers
        view["seconds"] = record.get("seconds", 0.0)
        view["stages"] = record.get("stages", [])
    view["kind"] = record.get("kind", "")
    view["metrics"] = _key_metrics(record)
    pictures: list[tuple[Any, str]] = []
    if folder.is_dir() and record:
        items = record.get("report") if isinstance(record.get("report"), dict) else {}
        shown = set()
        for item in items.get("pictures") or []:
            path = picture_file(folder, item.get("path")) if isinstance(item, dict) else None
            if path is not None:
                pictures.append((path, str(item.get("caption") or item["path"])))
                shown.add(path.name)
        for png in sorted(folder.glob("*.png")):  # PNGs no stage recorded (plots): shown by file name
            if png.name not in shown and _plain_file(folder, png.name):
                pictures.append((png, png.name))
        if not pictures:
            rendered = _render_from_nifti(folder)
            if rendered is not None:
                pictures.append((rendered, FALLBACK_CAPTION))
    view["pictures"] = pictures
    return view


def _plain_file(folder: Path, name: str) -> bool:
    """A regular file named ``name`` directly in ``folder``, not a link (never read through one)."""
    try:
        return stat.S_ISREG(os.lstat(Path(folder) / name).st_mode)
    except OSError:
        return False


def _run_plots(output_dir: Path) -> list[Path]:
    """PNGs written at the top of the output folder (run-level plots)."""
    return sorted(p for p in output_dir.glob("*.png") if _plain_file(output_dir, p.name))


def _render_from_nifti(folder: Path):
    """A thumbnail of the case's ``image`` (+ ``label``) NIfTI with the preview drawing, or None."""
    image_path = next((folder / n for n in ("image.nii.gz", "image.nii") if _plain_file(folder, n)), None)
    if image_path is None:
        return None
    try:
        import nibabel as nib
        import numpy as np

        from voxpipe.thumbnail import AXIAL, planes, render

        def load(path):
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
            return (data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)), img.affine

        array, affine = load(image_path)
        label = load(folder / "label.nii.gz")[0][0] if _plain_file(folder, "label.nii.gz") else None
        grey, plane, pixel_mm = planes(array, affine, label)
        volume = array.ndim == 4
        return render(grey, plane, pixel_mm, 0.15, 256, AXIAL if volume else None, volume)
    except Exception:  # noqa: BLE001 - a thumbnail we cannot draw is simply left out
        return None


def _data_uri(picture, width: int) -> str | None:
    """A picture (path or PIL image) scaled down to ``width`` at most, as a PNG data: URI; None if unreadable."""
    from PIL import Image

    try:
        image = Image.open(picture) if isinstance(picture, (str, Path)) else picture
        image = image.convert("RGB") if image.mode not in ("RGB", "L", "RGBA") else image
        if image.width > width:
            image = image.resize((width, max(1, round(image.height * width / image.width))), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    except Exception:  # noqa: BLE001 - a damaged picture is left out, the page still renders
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- metrics


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value[:6]) + (", …" if len(value) > 6 else "") + "]"
    return str(value)


def _key_metrics(record: dict) -> list[dict]:
    """A case's metrics as ``{"name", "unit", "value", "shown"}``: what stages recorded, then head outputs and feature counts."""
    rows: list[dict] = []
    items = record.get("report") if isinstance(record.get("report"), dict) else {}
    for metric in items.get("metrics") or []:
        if not isinstance(metric, dict) or "name" not in metric:
            continue
        name, unit, value = str(metric.get("label") or metric["name"]), str(metric.get("unit") or ""), metric.get("value")
        if unit in VOLUME_UNITS and isinstance(value, (int, float)) and not isinstance(value, bool):
            value, unit = round(value * VOLUME_UNITS[unit], 6), "mL"  # one unit for every volume
        rows.append(
            {
                "name": f"{name} ({unit})" if unit else name,
                "value": value,
                "unit": unit,
                "source": str(metric.get("source") or ""),
            }
        )
    core = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    for name, value in (core.get("outputs") or {}).items():  # head predictions (a data-model case key)
        if isinstance(value, dict):
            rows += [{"name": f"{name}.{sub}", "value": v} for sub, v in value.items() if sub != "probabilities"]
        elif name != "probabilities":
            rows.append({"name": name, "value": value})
    for name, count in (core.get("features") or {}).items():
        rows.append({"name": f"features {name}", "value": f"{count} values"})
    for row in rows:
        row["shown"] = _fmt(row["value"])
    return rows


def _across_cases(cases: list[dict]) -> list[dict]:
    """Every numeric metric's statistics over the cases that recorded it."""
    values: dict[str, list[float]] = {}
    sources: dict[str, set[str]] = {}
    for case in cases:
        for row in case.get("metrics", []):
            value = row["value"]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(row["name"], []).append(float(value))
                if row.get("source"):
                    sources.setdefault(row["name"], set()).add(row["source"])
    return [
        {
            "name": name,
            "cases": len(v),
            "mean": _fmt(statistics.mean(v)),
            "min": _fmt(min(v)),
            "max": _fmt(max(v)),
            "source": ", ".join(sorted(sources.get(name, ()))) or "not stated",
        }
        for name, v in values.items()
    ]


def robust_z(values: list[float]) -> list[float]:
    """Modified z-scores 0.6745 (x - median) / MAD (Iglewicz & Hoaglin); the mean absolute
    deviation (x 1.2533) stands in when more than half the values are equal (MAD 0); all 0 when
    every value is the same. Robust: one huge outlier does not hide itself by inflating the spread.
    """
    median = statistics.median(values)
    deviations = [abs(v - median) for v in values]
    mad = statistics.median(deviations)
    if mad > 0:
        return [0.6745 * (v - median) / mad for v in values]
    mean_ad = statistics.mean(deviations)
    return [(v - median) / (1.253314 * mean_ad) if mean_ad > 0 else 0.0 for v in values]


def _volumes(cases: list[dict]) -> list[dict]:
    """Each label's volume (mL) across cases, with each value's robust z-score and outlier flag."""
    by_label: dict[str, list[dict]] = {}
    for case in cases:
        if case.get("status") not in ("ok", "skipped"):
            continue
        for row in case.get("metrics", []):
            value = row["value"]
            if row.get("unit") == "mL" and isinstance(value, (int, float)) and not isinstance(value, bool):
                by_label.setdefault(row["name"], []).append(
                    {"case_id": case["case_id"], "value": float(value), "source": row.get("source") or "not stated"}
                )
    labels = []
    for name, points in by_label.items():
        scores = robust_z([p["value"] for p in points]) if len(points) >= MIN_CASES_FOR_OUTLIERS else [0.0] * len(points)
        for point, z in zip(points, scores):
            point["z"], point["outlier"] = round(z, 1), abs(z) > OUTLIER_Z
            point["shown"] = _fmt(point["value"])
        values = [p["value"] for p in points]
        labels.append(
            {
                "name": name,
                "points": points,
                "median": statistics.median(values),
                "top": max(max(values), 0.0) * 1.05 or 1.0,
                "sources": ", ".join(sorted({p["source"] for p in points})),
            }
        )
    return labels


def _volume_chart(labels: list[dict]) -> dict | None:
    """The volume plot laid out for the template's inline SVG: one row per label, its own mL axis."""
    if not labels:
        return None
    row, label_w, plot_w = 44, 200, 460
    rows = []
    for i, label in enumerate(labels):
        y = 10 + i * row

        def x(value: float, top: float = label["top"]) -> float:
            return round(label_w + plot_w * max(value, 0.0) / top, 1)

        dots = [{**p, "x": x(p["value"]), "y": y + 22} for p in label["points"]]
        rows.append(
            {
                "name": label["name"],
                "y": y,
                "dots": sorted(dots, key=lambda d: d["outlier"]),  # outliers drawn last, on top
                "median_x": x(label["median"]),
                "median": _fmt(label["median"]),
                "top": _fmt(label["top"]),
                "source": label["sources"],
            }
        )
    return {"rows": rows, "label_w": label_w, "plot_w": plot_w, "width": label_w + plot_w + 90, "height": row * len(labels) + 20}


def _metric_table(cases: list[dict]) -> tuple[list[str], list[tuple[str, dict]]]:
    columns: list[str] = []
    table: list[tuple[str, dict]] = []
    for case in cases:
        pairs = {row["name"]: row["shown"] for row in case.get("metrics", [])}
        if pairs:
            table.append((case["case_id"], pairs))
            columns += [k for k in pairs if k not in columns]
    return columns[:TABLE_COLUMNS], table


# ----------------------------------------------------------------------------- rendering


def _summary_cards(manifest: dict, cases: list[dict]) -> list[tuple[str, Any, str]]:
    summary = manifest.get("summary", {})
    seconds = [c.get("seconds", 0.0) for c in cases if c.get("status") == "ok"]
    median = statistics.median(seconds) if seconds else 0.0
    items = [
        ("cases", summary.get("cases", len(cases)), ""),
        ("ok", summary.get("ok", 0), "ok"),
        ("failed", summary.get("failed", 0), "failed" if summary.get("failed") else ""),
        ("skipped", summary.get("skipped", 0), "skipped"),
        ("median s / case", f"{median:.2f}", ""),
    ]
    if manifest.get("not_run"):
        items.append(("not run", manifest["not_run"], "failed"))
    return items


def _run_facts(manifest: dict) -> list[tuple[str, str]]:
    executor = manifest.get("executor") or {}
    workers = executor.get("workers")
    facts = [
        ("pipeline", manifest.get("pipeline", "")),
        ("config", f"{manifest.get('config_file', '')} · hash {str(manifest.get('config_hash', ''))[:12]}"),
        ("stages", " → ".join(s.get("id", s.get("use", "")) for s in (manifest.get("config") or {}).get("stages", []))),
        ("device", manifest.get("device", "")),
        ("executor", f"{executor.get('kind', 'local')}" + (f", {workers} workers" if workers else ", in-process") if executor else ""),
        ("started", manifest.get("started", "")),
        ("finished", manifest.get("finished") or "not finished"),
        ("voxpipe", manifest.get("voxpipe_version", "")),
    ]
    return [(k, str(v)) for k, v in facts if v]


def _stage_chart(cases: list[dict]) -> dict | None:
    """Median seconds per stage, laid out for the template's inline SVG bar chart."""
    per_stage: dict[str, list[float]] = {}
    for c in cases:
        if c.get("status") not in ("ok", "skipped"):
            continue
        for s in c.get("stages", []):
            per_stage.setdefault(s["stage"], []).append(float(s.get("seconds", 0.0)))
    if not per_stage:
        return None
    medians = [(name, statistics.median(values)) for name, values in per_stage.items()]
    top = max(v for _, v in medians) or 1.0
    row, label_w, bar_w = 24, 190, 420
    bars = [
        {"name": name, "y": 5 + i * row, "w": round(max(1.0, bar_w * value / top), 1), "value": f"{value:.3f}"}
        for i, (name, value) in enumerate(medians)
    ]
    return {"bars": bars, "row": row, "label_w": label_w, "width": label_w + bar_w + 90, "height": row * len(medians) + 10}


def _row_thumbs(cases: list[dict]) -> None:
    """Each case's first picture, small, for its table row."""
    for case in cases:
        first = case["pictures"][0][0] if case.get("pictures") else None
        case["thumb"] = _data_uri(first, ROW_THUMB_WIDTH) if first is not None else None


def _cards(cases: list[dict]) -> list[dict]:
    cards = []
    for c in [c for c in cases if c.get("pictures")][:MAX_CARDS]:
        pictures = [
            {"uri": uri, "caption": caption} for picture, caption in c["pictures"] if (uri := _data_uri(picture, THUMB_WIDTH)) is not None
        ]
        cards.append({**c, "images": pictures, "seconds": float(c.get("seconds") or 0)})
    return cards


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(manifest: dict, cases: list[dict], run_plots: list[Path]) -> str:
    """The whole page as one string (the template escapes every value it is given)."""
    for case in cases:
        case.setdefault("metrics", [])
        case.setdefault("pictures", [])
        case["summary"] = "; ".join(f"{m['name']} {m['shown']}" for m in case["metrics"][:KEY_METRICS]) + (
            " …" if len(case["metrics"]) > KEY_METRICS else ""
        )
    cases = sorted(cases, key=lambda c: c.get("status") != "failed")  # failures first, otherwise run order
    _row_thumbs(cases)
    volumes = _volumes(cases)
    outliers = [{"label": v["name"], **p} for v in volumes for p in v["points"] if p["outlier"]]
    flagged: dict[str, list[str]] = {}
    for o in outliers:
        flagged.setdefault(o["case_id"], []).append(o["label"])
    for case in cases:
        case["outlier_labels"] = flagged.get(case["case_id"], [])
    columns, table = _metric_table(cases)
    plots = [{"uri": uri, "name": p.name} for p in run_plots if (uri := _data_uri(p, PLOT_WIDTH)) is not None]
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            manifest=manifest,
            title=manifest.get("pipeline") or "voxpipe run",
            version=manifest.get("voxpipe_version", ""),
            summary=_summary_cards(manifest, cases),
            facts=_run_facts(manifest),
            cases=cases,
            failed=[c for c in cases if c.get("status") == "failed"],
            chart=_stage_chart(cases),
            across=_across_cases(cases),
            columns=columns,
            table=table,
            cards=_cards(cases),
            plots=plots,
            volume_chart=_volume_chart(volumes),
            outliers=outliers,
            outlier_z=OUTLIER_Z,
            min_cases=MIN_CASES_FOR_OUTLIERS,
            sort_script=SORT_SCRIPT,
            script_hash=script_hash(),
        )
    )


def script_hash() -> str:
    """The CSP source that allows exactly the page's sorting script and nothing else."""
    digest = hashlib.sha256(SORT_SCRIPT.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")

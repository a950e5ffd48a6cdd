"""``OUTDIR/report.html``: one self-contained page a person would rather look at than read.

Everything is inline: CSS in a ``<style>`` element, images as ``data:`` URIs, charts as
inline SVG, no scripts at all, so the file can be mailed, archived or opened offline and
never reaches the network. It shows the run (pipeline, config hash, executor, counts), a
case table (status, time, key metrics, the one-line failure reason), a card per case with
its thumbnails (the pipeline's own preview/montage PNGs -- the preview renderer's overlays
-- or, when a case wrote none, a thumbnail rendered here from its NIfTI outputs with the
same renderer), metric tables, and every other PNG the run produced (learning curves,
embeddings). Only pseudonymous case ids and the numbers in ``case.json`` appear: no
input names, no header values.
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from pathlib import Path
from typing import Any

from voxpipe.atomic import atomic_path

REPORT = "report.html"
THUMB_WIDTH = 360
PLOT_WIDTH = 720
PREVIEW_NAMES = ("preview.png", "montage.png")
MAX_CARDS = 200  # beyond this the table still lists every case; thumbnails stop


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
    record = {}
    if entry.get("status") in ("ok", "skipped") and (folder / "case.json").is_file():
        try:
            record = json.loads((folder / "case.json").read_text())
        except ValueError:
            record = {}
    view["record"] = record
    view["metrics"] = record.get("metrics", {})
    if entry.get("status") == "skipped":  # complete from an earlier run: show its numbers
        view["seconds"] = record.get("seconds", 0.0)
        view["stages"] = record.get("stages", [])
    view["kind"] = record.get("kind", "")
    pictures, plots = [], []
    if folder.is_dir() and record:
        for png in sorted(folder.glob("*.png")):
            (pictures if png.name in PREVIEW_NAMES or png.name.startswith(("preview", "montage")) else plots).append(png)
        if not pictures:
            rendered = _render_from_nifti(folder)
            if rendered is not None:
                pictures.append(rendered)
    view["pictures"], view["plots"] = pictures, plots
    return view


def _run_plots(output_dir: Path) -> list[Path]:
    """PNGs written at the top of the output folder (run-level plots)."""
    return sorted(p for p in output_dir.glob("*.png") if p.is_file())


def _render_from_nifti(folder: Path):
    """A thumbnail from ``image.nii.gz`` (+ ``label.nii.gz``) with the preview renderer, or None."""
    image_path = next((folder / n for n in ("image.nii.gz", "image.nii") if (folder / n).is_file()), None)
    if image_path is None:
        return None
    try:
        import nibabel as nib
        import numpy as np

        from voxpipe_plugins.preview.render import display_planes, render

        class _Volume:
            def __init__(self, array, affine) -> None:
                self.array, self.affine = array, affine

            def __array__(self, dtype=None, copy=None):
                return self.array if dtype is None else self.array.astype(dtype)

        def load(path):
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
            return _Volume(data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0), img.affine)

        image = load(image_path)
        label_path = folder / "label.nii.gz"
        label = load(label_path) if label_path.is_file() else None
        grey, plane, pixel_mm = display_planes(image, label)
        return render(grey, plane, pixel_mm, 0.45, 256)
    except Exception:  # noqa: BLE001 - a thumbnail we cannot draw is simply left out
        return None


def _data_uri(picture, width: int) -> str:
    """A PNG (path or PIL image) scaled down to ``width`` at most, as a data: URI."""
    from PIL import Image

    image = Image.open(picture) if isinstance(picture, (str, Path)) else picture
    image = image.convert("RGB") if image.mode not in ("RGB", "L", "RGBA") else image
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- rendering


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value[:6]) + (", …" if len(value) > 6 else "") + "]"
    return str(value)


def _key_metrics(metrics: dict) -> list[tuple[str, str]]:
    """Flatten a case's metrics into (name, value) pairs for the table."""
    pairs: list[tuple[str, str]] = []
    for key, unit in (("volumes_ml", "mL"), ("areas_px", "px")):
        for name, value in (metrics.get(key) or {}).items():
            pairs.append((f"{name} ({unit})", _fmt(value)))
    outputs = metrics.get("outputs") or {}
    for name, value in outputs.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if sub != "probabilities":
                    pairs.append((f"{name}.{sub}", _fmt(v)))
        elif name != "probabilities":
            pairs.append((name, _fmt(value)))
    for name, count in (metrics.get("features") or {}).items():
        pairs.append((f"features {name}", f"{count} values"))
    for name, value in (metrics.get("feature_values") or {}).items():
        pairs.append((name, _fmt(value)))
    return pairs


def _status_chip(status: str) -> str:
    return f'<span class="chip {_e(status)}">{_e(status)}</span>'


def _summary_cards(manifest: dict, cases: list[dict]) -> str:
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
    return '<div class="cards">' + "".join(
        f'<div class="card {cls}"><div class="num">{_e(v)}</div><div class="lbl">{_e(k)}</div></div>' for k, v, cls in items) + "</div>"


def _run_facts(manifest: dict) -> str:
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
    return "<dl class=facts>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v) + "</dl>"


def _case_table(cases: list[dict]) -> str:
    rows = []
    for c in cases:
        metrics = _key_metrics(c.get("metrics", {}))
        metric_text = "; ".join(f"{k} {v}" for k, v in metrics[:4]) + (" …" if len(metrics) > 4 else "")
        detail = c.get("error") or metric_text
        anchor = f'<a href="#{_e(c["case_id"])}">{_e(c["case_id"])}</a>' if c.get("pictures") or c.get("plots") or metrics else _e(c["case_id"])
        warn = f' <span class="warn" title="warnings">⚠ {len(c.get("warnings", []))}</span>' if c.get("warnings") else ""
        rows.append(
            f"<tr class=\"{_e(c.get('status', ''))}\"><td class=mono>{anchor}</td><td>{_status_chip(c.get('status', ''))}{warn}</td>"
            f"<td>{_e(c.get('kind', ''))}</td><td class=num>{float(c.get('seconds') or 0):.2f}</td>"
            f"<td class={'err' if c.get('error') else 'metrics'}>{_e(detail)}</td></tr>")
    return ("<table class=cases><thead><tr><th>case</th><th>status</th><th>kind</th><th>seconds</th><th>key metrics / reason</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _stage_chart(cases: list[dict]) -> str:
    """Median seconds per stage as an inline SVG bar chart (no script, no external font)."""
    per_stage: dict[str, list[float]] = {}
    for c in cases:
        if c.get("status") not in ("ok", "skipped"):
            continue
        for s in c.get("stages", []):
            per_stage.setdefault(s["stage"], []).append(float(s.get("seconds", 0.0)))
    if not per_stage:
        return ""
    medians = [(name, statistics.median(values)) for name, values in per_stage.items()]
    top = max(v for _, v in medians) or 1.0
    row, label_w, bar_w = 24, 190, 420
    height = row * len(medians) + 10
    bars = []
    for i, (name, value) in enumerate(medians):
        y = 5 + i * row
        w = max(1.0, bar_w * value / top)
        bars.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{_e(name)}</text>'
                    f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" rx="3"/>'
                    f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" class="v">{value:.3f} s</text>')
    return (f'<svg class="chart" viewBox="0 0 {label_w + bar_w + 90} {height}" width="{label_w + bar_w + 90}" height="{height}" '
            f'role="img" aria-label="median seconds per stage">{"".join(bars)}</svg>')


def _metric_tables(cases: list[dict]) -> str:
    """Per-label volume statistics across cases, then every case's key metrics side by side."""
    volumes: dict[str, list[float]] = {}
    for c in cases:
        for name, value in (c.get("metrics", {}).get("volumes_ml") or {}).items():
            volumes.setdefault(name, []).append(float(value))
    parts = []
    if volumes:
        rows = "".join(
            f"<tr><td>{_e(name)}</td><td class=num>{len(v)}</td><td class=num>{statistics.mean(v):.1f}</td>"
            f"<td class=num>{min(v):.1f}</td><td class=num>{max(v):.1f}</td></tr>" for name, v in sorted(volumes.items()))
        parts.append("<h3>Label volumes (mL) across cases</h3><table><thead><tr><th>label</th><th>cases</th><th>mean</th>"
                     f"<th>min</th><th>max</th></tr></thead><tbody>{rows}</tbody></table>")
    columns: list[str] = []
    table: list[tuple[str, dict]] = []
    for c in cases:
        pairs = dict(_key_metrics(c.get("metrics", {})))
        if pairs:
            table.append((c["case_id"], pairs))
            columns += [k for k in pairs if k not in columns]
    if table:
        columns = columns[:12]
        head = "".join(f"<th>{_e(k)}</th>" for k in columns)
        body = "".join("<tr><td class=mono>" + _e(cid) + "</td>" + "".join(f"<td class=num>{_e(p.get(k, ''))}</td>" for k in columns) + "</tr>"
                       for cid, p in table)
        parts.append(f"<h3>Per-case metrics</h3><div class=scroll><table><thead><tr><th>case</th>{head}</tr></thead><tbody>{body}</tbody></table></div>")
    return "".join(parts)


def _case_cards(cases: list[dict]) -> str:
    cards = []
    for c in [c for c in cases if c.get("pictures") or c.get("plots")][:MAX_CARDS]:
        images = "".join(
            f'<figure><img src="{_data_uri(p, THUMB_WIDTH)}" alt="{_e(Path(p).name if isinstance(p, Path) else "thumbnail")}">'
            f"<figcaption>{_e(Path(p).name if isinstance(p, Path) else 'rendered from image.nii.gz')}</figcaption></figure>"
            for p in c["pictures"] + c["plots"])
        metrics = "".join(f"<tr><td>{_e(k)}</td><td class=num>{_e(v)}</td></tr>" for k, v in _key_metrics(c.get("metrics", {})))
        facts = f"<table class=mini>{metrics}</table>" if metrics else ""
        cards.append(f'<section class="case" id="{_e(c["case_id"])}"><header><span class=mono>{_e(c["case_id"])}</span> '
                     f'{_status_chip(c.get("status", ""))} <span class=dim>{_e(c.get("kind", ""))} · {float(c.get("seconds") or 0):.2f} s</span></header>'
                     f'<div class=row><div class=pics>{images}</div>{facts}</div></section>')
    return "".join(cards)


def _plots(paths: list[Path]) -> str:
    return "".join(f'<figure class=plot><img src="{_data_uri(p, PLOT_WIDTH)}" alt="{_e(p.name)}"><figcaption>{_e(p.name)}</figcaption></figure>'
                   for p in paths)


def render_page(manifest: dict, cases: list[dict], run_plots: list[Path]) -> str:
    """The whole page as one string."""
    failed = [c for c in cases if c.get("status") == "failed"]
    sections = [
        f"<header class=top><h1>{_e(manifest.get('pipeline', 'voxpipe run'))}</h1><p class=dim>VoxPipe run report</p></header>",
        _summary_cards(manifest, cases),
        _run_facts(manifest),
        "<h2>Cases</h2>" + _case_table(cases),
    ]
    if failed:
        sections.append("<h2>Failures</h2><ul class=failures>" + "".join(
            f"<li><span class=mono>{_e(c['case_id'])}</span> {_e(c.get('error', ''))}</li>" for c in failed) + "</ul>")
    chart = _stage_chart(cases)
    if chart:
        sections.append("<h2>Where the time goes</h2><p class=dim>median seconds per stage over completed cases</p>" + chart)
    metrics = _metric_tables(cases)
    if metrics:
        sections.append("<h2>Metrics</h2>" + metrics)
    cards = _case_cards(cases)
    if cards:
        sections.append("<h2>Case pictures</h2><div class=gallery>" + cards + "</div>")
    if run_plots:
        sections.append("<h2>Plots</h2>" + _plots(run_plots))
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
            f"<title>{_e(manifest.get('pipeline', 'voxpipe'))} · VoxPipe report</title><style>{STYLE}</style></head>"
            f"<body><main>{''.join(sections)}</main><footer>written by voxpipe {_e(manifest.get('voxpipe_version', ''))} · "
            "self-contained: no scripts, no external resources</footer></body></html>\n")


STYLE = """
:root{--bg:#f6f7f9;--fg:#1d232b;--dim:#66707c;--card:#fff;--line:#e2e5ea;--ok:#1f9d55;--failed:#d64545;--skipped:#7a869a;--accent:#2f6fde}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 28px 12px}
h1{font-size:28px;margin:0}h2{font-size:19px;margin:34px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}h3{font-size:15px;margin:18px 0 8px}
.top{display:flex;align-items:baseline;gap:14px}.dim{color:var(--dim);margin:4px 0}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:18px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 18px;min-width:120px;box-shadow:0 1px 2px rgba(0,0,0,.04)}
.card .num{font-size:26px;font-weight:650}.card .lbl{color:var(--dim);font-size:13px}
.card.ok .num{color:var(--ok)}.card.failed .num{color:var(--failed)}.card.skipped .num{color:var(--skipped)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 18px;margin:0}
dl.facts dt{color:var(--dim)}dl.facts dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:8px;overflow:hidden;width:100%}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600;font-size:13px;color:#3b4450}tr:last-child td{border-bottom:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:13px}
td.err{color:var(--failed)}td.metrics{color:#333}
table.cases tr.failed{background:#fff6f6}
.scroll{overflow-x:auto}
.chip{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;color:#fff;background:var(--skipped)}
.chip.ok{background:var(--ok)}.chip.failed{background:var(--failed)}
.warn{color:#b7791f;font-size:12px}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
ul.failures{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--failed);border-radius:8px;padding:10px 10px 10px 34px}
svg.chart{background:var(--card);border:1px solid var(--line);border-radius:8px;max-width:100%;height:auto}
svg.chart text{font:12px system-ui,"DejaVu Sans",sans-serif;fill:#3b4450}svg.chart text.v{fill:var(--dim)}svg.chart rect{fill:var(--accent)}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:14px}
section.case{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.04)}
section.case header{margin-bottom:8px}section.case:target{outline:2px solid var(--accent)}
.row{display:flex;flex-direction:column;gap:10px}.pics{display:flex;gap:10px;flex-wrap:wrap}
figure{margin:0}figure img{display:block;max-width:100%;max-height:300px;border-radius:6px;background:#000}
figcaption{color:var(--dim);font-size:12px;margin-top:3px}
table.mini{width:100%}table.mini td{padding:3px 8px;font-size:13px}
figure.plot{display:inline-block;margin:8px 12px 8px 0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px}
figure.plot img{background:#fff}
footer{max-width:1180px;margin:0 auto;padding:16px 28px 30px;color:var(--dim);font-size:12px}
"""

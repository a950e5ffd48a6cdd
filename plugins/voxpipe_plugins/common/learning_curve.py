"""The learning-curve PNG every trainer writes: training loss and one validation metric against epoch.

Drawn with Pillow, so training needs no matplotlib; written atomically.
"""

from __future__ import annotations

from pathlib import Path

LOSS_COLOUR, METRIC_COLOUR = (200, 60, 30), (30, 90, 200)


def plot_learning_curve(
    history: list[dict],
    path: Path,
    metric: str,
    metric_label: str,
    loss_label: str = "training loss (left axis)",
    metric_range: tuple[float, float] | None = None,
) -> None:
    """``history`` rows hold ``epoch``, ``loss`` and ``metric``; ``metric_range`` fixes the right axis (else the values ± 0.5)."""
    from PIL import Image, ImageDraw

    from voxpipe.atomic import atomic_path

    width, height, left, right, top, bottom = 720, 420, 60, 60, 30, 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    draw.rectangle([x0, y0, x1, y1], outline="black")
    emax = max(max((h["epoch"] for h in history), default=1), 2)
    losses = [h["loss"] for h in history if h.get("loss") is not None]
    lmax = max(losses) * 1.05 if losses else 1.0
    scores = [h[metric] for h in history if h.get(metric) is not None]
    if metric_range is not None:
        smin, smax = metric_range
    else:
        smin, smax = (min(scores) - 0.5, max(scores) + 0.5) if scores else (0.0, 1.0)

    def px(epoch: float) -> float:
        return x0 + (epoch - 1) / (emax - 1) * (x1 - x0)

    for i in range(6):  # grid and axis labels: loss on the left, the metric on the right
        y = y1 - i / 5 * (y1 - y0)
        draw.line([x0, y, x1, y], fill=(225, 225, 225))
        draw.text((5, y - 6), f"{lmax * i / 5:.2g}", fill=LOSS_COLOUR)
        draw.text((x1 + 5, y - 6), f"{smin + (smax - smin) * i / 5:.1f}", fill=METRIC_COLOUR)
    for e in sorted({1, emax, *(round(emax * k / 5) for k in range(1, 5))}):
        draw.text((px(e) - 6, y1 + 6), str(e), fill="black")
    draw.text(((x0 + x1) / 2 - 15, y1 + 26), "epoch", fill="black")
    loss_points = [(px(h["epoch"]), y1 - h["loss"] / lmax * (y1 - y0)) for h in history if h.get("loss") is not None]
    metric_points = [
        (px(h["epoch"]), y1 - (h[metric] - smin) / ((smax - smin) or 1.0) * (y1 - y0)) for h in history if h.get(metric) is not None
    ]
    for points, colour in ((loss_points, LOSS_COLOUR), (metric_points, METRIC_COLOUR)):
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points if len(points) <= 60 else []:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    draw.text((x0 + 10, 8), loss_label, fill=LOSS_COLOUR)
    draw.text((x0 + 260, 8), metric_label, fill=METRIC_COLOUR)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")

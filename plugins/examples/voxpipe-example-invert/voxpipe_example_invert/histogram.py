"""The `example.histogram` implementation: what a stage shows in the run report.

It writes a PNG of the image's intensity histogram into the case folder and records it with
``report_picture``, and records the image's mean with ``report_metric``: ``report.html`` and
``case.json`` show both, with no change to VoxPipe. Imported only when a pipeline builds the stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from voxpipe.plugin import atomic_path, record, report_metric, report_picture

WIDTH, HEIGHT = 256, 96


class Histogram:
    """Draws ``bins`` bars of the intensity histogram of ``case[key]`` to ``filename`` in the case folder.

    Args:
        key: case key of the image.
        filename: PNG file name inside the case folder.
        bins: number of histogram bins.
    """

    def __init__(self, key: str = "image", filename: str = "histogram.png", bins: int = 64) -> None:
        self.key, self.filename, self.bins = key, filename, bins

    def __call__(self, case: dict) -> dict:
        out = dict(case)
        image = case[self.key]
        values = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        counts, _ = np.histogram(values, bins=self.bins) if values.size else (np.zeros(self.bins), None)
        picture = Image.new("RGB", (WIDTH, HEIGHT), (250, 250, 250))
        draw = ImageDraw.Draw(picture)
        top = max(float(counts.max()), 1.0)
        step = WIDTH / self.bins
        for index, count in enumerate(counts):
            height = round((HEIGHT - 4) * float(count) / top)
            draw.rectangle([index * step, HEIGHT - height, (index + 1) * step - 1, HEIGHT], fill=(47, 111, 222))
        with atomic_path(Path(case["output_dir"]) / self.filename) as tmp:
            picture.save(tmp, format="PNG")
        report_picture(out, self.filename, caption=f"{self.key} intensity histogram")
        if values.size:
            report_metric(out, f"example.{self.key}_mean", round(float(values.mean()), 4), label=f"{self.key} mean")
        record(out, "example.histogram", key=self.key, file=self.filename, bins=self.bins)
        return out

"""CT windowing: the DICOM VOI LUT linear functions, in place on one float32 buffer."""

from __future__ import annotations

import torch

from voxpipe.stage import record
from voxpipe_plugins.enhance.presets import WINDOW_PRESETS
from voxpipe_plugins.enhance.util import checked_float

STAGE = "enhance.window"


def window_bounds(level: float, width: float, function: str = "linear_exact") -> tuple[float, float]:
    """The input interval [a, a + d] mapped onto [0, 1] (DICOM PS3.3 C.11.2.1.2 and C.11.2.1.3.2).

    LINEAR_EXACT: a = c - w/2, d = w. LINEAR: a = c - 0.5 - (w - 1)/2, d = w - 1 (a step at
    c - 0.5 when w = 1).
    """
    if function == "linear":
        return level - 0.5 - (width - 1) / 2, width - 1
    return level - width / 2, width


class Window:
    """Maps [level - width/2, level + width/2] (HU) linearly onto [out_min, out_max], clipping outside.

    Computes where the image lives (CPU or GPU); a pointwise map is not worth a transfer.
    """

    def __init__(
        self,
        key: str = "image",
        preset: str | None = None,
        level: float | None = None,
        width: float | None = None,
        out_min: float = 0.0,
        out_max: float = 1.0,
        function: str = "linear_exact",
    ) -> None:
        if preset is not None:
            level, width, _ = WINDOW_PRESETS[preset]
        if level is None or width is None:
            raise ValueError("set `preset` or both `level` and `width`")
        if width <= 0 or (function == "linear" and width < 1):
            raise ValueError(f"width {width} is too small for function `{function}`")
        self.key, self.preset, self.level, self.width = key, preset, float(level), float(width)
        self.out_min, self.out_max, self.function = float(out_min), float(out_max), function
        self.start, self.span = window_bounds(self.level, self.width, function)

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """The windowed image (a new float32 tensor; one allocation, the rest in place)."""
        if self.span == 0:  # DICOM LINEAR with width 1: a threshold at level - 0.5
            out = torch.gt(image, self.start).to(torch.float32)
        else:
            out = torch.sub(image, self.start).div_(self.span).clamp_(0.0, 1.0)
        if (self.out_min, self.out_max) != (0.0, 1.0):
            out.mul_(self.out_max - self.out_min).add_(self.out_min)
        return out

    def __call__(self, case: dict) -> dict:
        image, low, high = checked_float(case[self.key], STAGE)
        out = dict(case)
        out[self.key] = self.apply(image)
        record(
            out,
            STAGE,
            preset=self.preset,
            level=self.level,
            width=self.width,
            function=self.function,
            lower=self.start,
            upper=self.start + self.span,
            out_min=self.out_min,
            out_max=self.out_max,
            input_range=[round(low, 4), round(high, 4)],
        )
        return out

"""Gamma correction on a stated intensity range."""

from __future__ import annotations

import torch

from voxpipe.stage import record
from voxpipe_plugins.enhance.util import checked_float

STAGE = "enhance.gamma"


class Gamma:
    """out = lower + (upper - lower) * t**gamma, t = (clip(x, lower, upper) - lower) / (upper - lower).

    lower/upper default to the image's own minimum and maximum, which is MONAI's
    ``AdjustContrast`` (without its 1e-7 epsilon). With ``preserve_range`` false the output
    is t**gamma in [0, 1]. Computes where the image lives, in one float32 buffer.
    """

    def __init__(
        self, key: str = "image", gamma: float = 1.0, lower: float | None = None, upper: float | None = None, preserve_range: bool = True
    ) -> None:
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        self.key, self.gamma, self.lower, self.upper, self.preserve_range = key, float(gamma), lower, upper, preserve_range

    def __call__(self, case: dict) -> dict:
        image, low, high = checked_float(case[self.key], STAGE)
        lower = low if self.lower is None else float(self.lower)
        upper = high if self.upper is None else float(self.upper)
        constant = upper == lower  # only possible with the image's own range: a constant image
        if constant:
            result = image.clone() if self.preserve_range else torch.zeros_like(image)
        else:
            result = torch.clamp(image, lower, upper).sub_(lower).div_(upper - lower).pow_(self.gamma)
            if self.preserve_range:
                result.mul_(upper - lower).add_(lower)
        out = dict(case)
        out[self.key] = result
        record(
            out,
            STAGE,
            gamma=self.gamma,
            lower=round(lower, 6),
            upper=round(upper, 6),
            range_from="image" if self.lower is None else "parameters",
            preserve_range=self.preserve_range,
            constant_image=constant or None,
        )
        return out

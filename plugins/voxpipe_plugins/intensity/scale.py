"""Linear intensity rescaling through MONAI's ScaleIntensityRange* transforms."""

from __future__ import annotations

import torch
from monai.transforms import ScaleIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles

from voxpipe.stage import record
from voxpipe_plugins.common.checks import float_image


class IntensityScale:
    """Maps [lower, upper] (percentiles, values or min-max) linearly to [out_min, out_max]."""

    def __init__(self, key="image", mode="percentile", lower=0.5, upper=99.5, out_min=0.0, out_max=1.0, clip=True) -> None:
        self.key, self.mode = key, mode
        self.settings = dict(lower=lower, upper=upper, out_min=out_min, out_max=out_max, clip=clip)
        if mode == "percentile":
            self.transform = ScaleIntensityRangePercentiles(lower, upper, out_min, out_max, clip=clip, dtype=torch.float32)
        elif mode == "range":
            self.transform = ScaleIntensityRange(lower, upper, out_min, out_max, clip=clip, dtype=torch.float32)
        else:
            self.transform = ScaleIntensity(out_min, out_max, dtype=torch.float32)

    def __call__(self, case: dict) -> dict:
        out = dict(case)
        out[self.key] = self.transform(float_image(case[self.key], "intensity.scale"))  # int16 CT works too
        record(out, "intensity.scale", mode=self.mode, **self.settings)
        return out

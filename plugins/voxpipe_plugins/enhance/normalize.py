"""Intensity normalisation inside a mask: z-score to a stated mean/std, or percentile clip-and-rescale."""

from __future__ import annotations

import torch
from monai.transforms import ScaleIntensityRange
from monai.transforms.utils_pytorch_numpy_unification import percentile

from voxpipe.stage import record
from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.enhance.util import build_mask, checked_float, count_per_channel, plain, rewrap

STAGE = "enhance.normalize"


class Normalize:
    """z-score (per channel) or percentile clip-and-rescale, statistics from the masked voxels.

    zscore: out = (x - mean) / std * target_std + target_mean, with mean and the population
    std (ddof 0) of the voxels in the mask, so the masked voxels end with exactly the stated
    mean and std. percentile: [p_lower, p_upper] of the masked voxels -> [out_min, out_max],
    clipped, through MONAI's ScaleIntensityRange (as ``intensity.scale`` does).
    """

    def __init__(
        self,
        key: str = "image",
        mode: str = "zscore",
        target_mean: float = 0.0,
        target_std: float = 1.0,
        lower: float = 0.5,
        upper: float = 99.5,
        out_min: float = 0.0,
        out_max: float = 1.0,
        mask_key: str | None = None,
        mask_labels: list[int] | None = None,
        mask_threshold: float | None = None,
        fill_outside: float | None = None,
    ) -> None:
        self.key, self.mode = key, mode
        self.target_mean, self.target_std = float(target_mean), float(target_std)
        self.lower, self.upper, self.out_min, self.out_max = lower, upper, out_min, out_max
        self.mask_key, self.mask_labels, self.mask_threshold = mask_key, mask_labels, mask_threshold
        self.fill_outside = fill_outside

    def __call__(self, case: dict) -> dict:
        image, low, high = checked_float(case[self.key], STAGE)
        mask = build_mask(case, image, STAGE, self.mask_key, self.mask_labels, self.mask_threshold)
        if mask is not None:
            counts = count_per_channel(mask)
            if min(counts) == 0:
                raise StageInputError(
                    f"{STAGE}: the mask selects no voxels (channel {counts.index(0)}); check `mask_key`/`mask_labels`/`mask_threshold`"
                )
        data = plain(image)
        channels = []
        stats = []
        for c in range(image.shape[0]):
            values = data[c] if mask is None else data[c][mask[c]]
            if self.mode == "zscore":
                var, mean = torch.var_mean(values, correction=0)
                mean, std = float(mean), float(var) ** 0.5
                if std == 0:
                    where = "inside the mask" if mask is not None else "image"
                    raise StageInputError(f"{STAGE}: constant {where} (value {mean:g}); z-score is undefined")
                scale = self.target_std / std
                channels.append(torch.sub(data[c], mean).mul_(scale).add_(self.target_mean))
                stats.append({"mean": round(mean, 6), "std": round(std, 6)})
            else:
                p_low, p_high = (float(v) for v in percentile(values, [self.lower, self.upper]))
                if p_high <= p_low:
                    raise StageInputError(
                        f"{STAGE}: percentiles {self.lower} and {self.upper} are equal ({p_low:g}); "
                        "the image (inside the mask) is constant or nearly so"
                    )
                transform = ScaleIntensityRange(p_low, p_high, self.out_min, self.out_max, clip=True, dtype=torch.float32)
                channels.append(plain(torch.as_tensor(transform(data[c]))))
                stats.append({"p_lower": round(p_low, 6), "p_upper": round(p_high, 6)})
        result = channels[0][None] if len(channels) == 1 else torch.stack(channels)
        if mask is not None and self.fill_outside is not None:
            result.masked_fill_(~mask, self.fill_outside)
        out = dict(case)
        out[self.key] = rewrap(image, result)
        details = {"mode": self.mode, "channels": stats}
        if self.mode == "zscore":
            details.update(target_mean=self.target_mean, target_std=self.target_std)
        else:
            details.update(lower=self.lower, upper=self.upper, out_min=self.out_min, out_max=self.out_max)
        if mask is not None:
            details.update(
                mask_key=self.mask_key,
                mask_labels=self.mask_labels,
                mask_threshold=self.mask_threshold,
                mask_voxels=counts,
                fill_outside=self.fill_outside,
            )
        record(out, STAGE, **details)
        return out

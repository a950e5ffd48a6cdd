"""Global histogram equalisation: scikit-image on the CPU, the same algorithm in torch on the GPU."""

from __future__ import annotations

import torch
from skimage.exposure import equalize_hist

from voxpipe.stage import record
from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.enhance.util import build_mask, checked_float, count_per_channel, plain, rewrap, source_device

STAGE = "enhance.histeq"


def equalize_torch(image: torch.Tensor, nbins: int = 256, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``skimage.exposure.equalize_hist`` in torch (any device): the CDF of ``nbins`` bins between the
    (masked) minimum and maximum, linearly interpolated between bin centres, clamped outside.
    """
    values = image if mask is None else image[mask]
    low, high = (float(v) for v in torch.aminmax(values))
    hist = torch.histc(values, bins=nbins, min=low, max=high).to(torch.float64)
    cdf = hist.cumsum(0)
    cdf = (cdf / cdf[-1]).to(torch.float32)
    step = (high - low) / nbins
    # position in units of bins, measured from the first bin centre
    t = torch.sub(image, low + step / 2).div_(step).clamp_(0, nbins - 1)
    index = t.floor().clamp_(max=nbins - 2).long()
    t.sub_(index)  # fraction between centre i and i + 1
    lower = cdf[index]
    return lower.add_(t.mul_(cdf[index + 1].sub_(lower)))


class HistogramEqualize:
    """Maps intensities through their cumulative histogram (taken inside the mask if any); output in [0, 1]."""

    def __init__(
        self,
        key: str = "image",
        nbins: int = 256,
        mask_key: str | None = None,
        mask_labels: list[int] | None = None,
        mask_threshold: float | None = None,
        device: str = "cpu",
    ) -> None:
        self.key, self.nbins, self.device = key, nbins, device
        self.mask_key, self.mask_labels, self.mask_threshold = mask_key, mask_labels, mask_threshold

    def __call__(self, case: dict) -> dict:
        image, low, high = checked_float(case[self.key], STAGE)
        mask = build_mask(case, image, STAGE, self.mask_key, self.mask_labels, self.mask_threshold)
        data = plain(image)
        use_torch = str(self.device).startswith("cuda")
        if use_torch:
            data = data.to(self.device)
            mask = None if mask is None else mask.to(self.device)
        channels = []
        for c in range(data.shape[0]):
            values = data[c] if mask is None else data[c][mask[c]]
            if values.numel() == 0:
                raise StageInputError(f"{STAGE}: the mask selects no voxels (channel {c}); check `mask_key`/`mask_labels`/`mask_threshold`")
            single = mask is None and data.shape[0] == 1
            v_low, v_high = (low, high) if single else (float(v) for v in torch.aminmax(values))
            if v_low == v_high:
                where = " inside the mask" if mask is not None else ""
                raise StageInputError(f"{STAGE}: image is constant{where} ({v_low:g}); histogram equalisation is undefined")
            if use_torch:
                channels.append(equalize_torch(data[c], self.nbins, None if mask is None else mask[c]))
            else:
                channel_mask = None if mask is None else mask[c].cpu().numpy()
                channels.append(torch.from_numpy(equalize_hist(data[c].cpu().numpy(), nbins=self.nbins, mask=channel_mask)))
        result = channels[0][None] if len(channels) == 1 else torch.stack(channels)
        result = result.to(device=source_device(image), dtype=torch.float32)
        out = dict(case)
        out[self.key] = rewrap(image, result)
        details = {
            "nbins": self.nbins,
            "input_range": [round(low, 4), round(high, 4)],
            "backend": "torch" if use_torch else "scikit-image",
            "device": str(self.device) if use_torch else "cpu",
        }
        if mask is not None:
            details.update(
                mask_key=self.mask_key,
                mask_labels=self.mask_labels,
                mask_threshold=self.mask_threshold,
                mask_voxels=count_per_channel(mask),
            )
        record(out, STAGE, **details)
        return out

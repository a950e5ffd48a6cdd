"""Unsharp masking with the blur in millimetres, on MONAI's separable Gaussian filtering (CPU or GPU)."""

from __future__ import annotations

from monai.networks.layers import separable_filtering
from monai.networks.layers.simplelayers import gaussian_1d

from voxpipe.stage import record
from voxpipe_plugins.common.tensors import spacing_of
from voxpipe_plugins.enhance.util import checked_float, plain, rewrap, source_device

STAGE = "enhance.unsharp"


class Unsharp:
    """out = x + amount * (x - G_sigma(x)), sigma = radius_mm / spacing per axis.

    The Gaussian is normalised and the image edges are replicated (scikit-image's
    ``unsharp_mask`` uses the same 'nearest' boundary), so flat regions and the mean are kept.
    """

    def __init__(
        self,
        key: str = "image",
        radius_mm: float = 1.0,
        amount: float = 1.0,
        truncated: float = 4.0,
        clip: bool = False,
        device: str = "cpu",
    ) -> None:
        self.key, self.radius_mm, self.amount, self.truncated = key, radius_mm, amount, truncated
        self.clip, self.device = clip, device

    def __call__(self, case: dict) -> dict:
        image, low, high = checked_float(case[self.key], STAGE)
        sigma = [self.radius_mm / s for s in spacing_of(image)]
        x = plain(image).to(self.device)[None]
        kernels = [gaussian_1d(s, truncated=self.truncated, approx="erf", normalize=True).to(x) for s in sigma]
        result = separable_filtering(x, kernels, mode="replicate")  # the blurred image, a new buffer
        result.sub_(x).mul_(-self.amount).add_(x)  # x + amount * (x - blurred), in place
        if self.clip:
            result.clamp_(low, high)
        out = dict(case)
        out[self.key] = rewrap(image, result[0].to(source_device(image)))
        record(
            out,
            STAGE,
            radius_mm=self.radius_mm,
            sigma_voxels=[round(s, 4) for s in sigma],
            amount=self.amount,
            clip=self.clip,
            device=str(self.device),
        )
        return out

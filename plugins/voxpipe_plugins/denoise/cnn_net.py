"""The residual denoising network (DnCNN family) and the WGAN critic, from MONAI's layer blocks.

DnCNN (Zhang et al. 2017) learns the noise, not the image: the last layer predicts the
residual ``noisy - clean`` and the output is ``noisy - residual``, which trains much faster
than predicting the image. As in FFDNet (Zhang et al. 2018) the network gets the noise
level as a second input channel (a constant map of σ in the scaled units), so one model
covers a range of levels instead of one model per σ. No batch norm: sliding-window
inference feeds windows of varied content one batch at a time, and plain convolutions with
residual learning train well at this depth.

A hybrid model (``guide="nlm"``, :mod:`.cnn_guide`) gets a third input, the NLM estimate of
the same image, and predicts a correction to that estimate instead of to the noisy image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.blocks import Convolution
from torch import nn


@dataclass(frozen=True)
class Architecture:
    """What a weights file needs to be rebuilt (stored in its JSON card)."""

    spatial_dims: int = 2
    features: int = 32
    depth: int = 8
    guide: str = "none"
    """``none``: input [image, σ map]; ``nlm``: [image, NLM estimate, σ map], output = estimate − correction."""

    @property
    def in_channels(self) -> int:
        return 3 if self.guide == "nlm" else 2

    def to_dict(self) -> dict:
        return {"name": "dncnn-noise-map", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        return cls(
            spatial_dims=int(data["spatial_dims"]),
            features=int(data["features"]),
            depth=int(data["depth"]),
            guide=str(data.get("guide", "none")),
        )


class ResidualDenoiser(nn.Module):
    """``depth`` 3×3(×3) convolutions (ReLU between), input [image, (NLM estimate,) σ map], output the denoised image."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        if arch.spatial_dims not in (2, 3) or arch.depth < 2 or arch.features < 1 or arch.guide not in ("none", "nlm"):
            raise ValueError(f"unsupported architecture {arch}")
        dims, f = arch.spatial_dims, arch.features
        layers: list[nn.Module] = [Convolution(dims, arch.in_channels, f, kernel_size=3, act="RELU", norm=None, bias=True)]
        layers += [Convolution(dims, f, f, kernel_size=3, act="RELU", norm=None, bias=True) for _ in range(arch.depth - 2)]
        layers.append(Convolution(dims, f, 1, kernel_size=3, conv_only=True, bias=True))
        self.body = nn.Sequential(*layers)
        self.arch = arch

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, guide: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (B, 1, *spatial) scaled image; ``sigma``: scalar or (B,) noise level in the same units;
        ``guide``: (B, 1, *spatial) NLM estimate of ``x`` (hybrid models only)."""
        level = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        noise_map = level.expand(x.shape[0], 1, *x.shape[2:])
        if self.arch.guide == "nlm":
            if guide is None or guide.shape != x.shape:
                raise ValueError("a hybrid (guide: nlm) model needs the NLM estimate of its input, of the same shape")
            return guide - self.body(torch.cat([x, guide.to(x.dtype), noise_map], dim=1))
        return x - self.body(torch.cat([x, noise_map], dim=1))


class Critic(nn.Module):
    """WGAN critic (as in WGAN-VGG, Yang et al. 2018): strided convolutions, LeakyReLU, no normalisation
    (batch norm would break the per-sample gradient penalty), a global average and one linear output."""

    def __init__(self, spatial_dims: int = 2, features: int = 32) -> None:
        super().__init__()
        chans = [1, features, features, 2 * features, 2 * features, 4 * features, 4 * features]
        layers: list[nn.Module] = []
        for i in range(len(chans) - 1):
            layers.append(
                Convolution(
                    spatial_dims,
                    chans[i],
                    chans[i + 1],
                    strides=1 + i % 2,
                    kernel_size=3,
                    act=("leakyrelu", {"negative_slope": 0.2}),
                    norm=None,
                )
            )
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(2).mean(2))

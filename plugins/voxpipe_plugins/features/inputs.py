"""From a case's image to network input: planes or a volume, intensity, channels, ImageNet statistics, size.

Shared by the extractor and the heads, so a model is trained and run on the same input.

Axis policy: VoxPipe images are channel-first with x first (MONAI's layout: a 2D image from
`load.image2d` is (C, W, H)). A plane is fed to the network as rows x columns, (C, H, W) --
the way torchvision sees the same picture -- so ImageNet filters meet the orientation they
were trained on. A volume (C, X, Y, Z) is cut along ``slice_axis`` (default 2: axial
slices of a RAS volume); for native 3D that axis becomes the network's depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def planes(image: torch.Tensor, slice_axis: int = 2) -> torch.Tensor:
    """(C, W, H) -> (1, C, H, W); (C, X, Y, Z) -> (slices, C, rows, cols) cut along ``slice_axis``."""
    if image.ndim == 3:
        return image.transpose(1, 2).unsqueeze(0)
    axis = slice_axis + 1
    moved = image.movedim(axis, 0)  # (S, C, a, b) with a, b the two remaining spatial axes in order
    return moved.transpose(2, 3)


def volume(image: torch.Tensor, slice_axis: int = 2) -> torch.Tensor:
    """(C, X, Y, Z) -> (1, C, depth, rows, cols), ``slice_axis`` becoming the depth (same in-plane order as :func:`planes`)."""
    return planes(image, slice_axis).permute(1, 0, 2, 3).unsqueeze(0)


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Scale the whole case to [0, 1] (one min and max per case, so slices keep their relative brightness)."""
    low, high = x.amin(), x.amax()
    if float(high - low) <= 0:
        return torch.zeros_like(x)
    return (x - low) / (high - low)


def match_channels(x: torch.Tensor, in_channels: int, what: str) -> torch.Tensor:
    """Grey -> 3 channels by repetition (ImageNet nets), RGB -> grey by the mean; anything else is refused."""
    channels = x.shape[1]
    if channels == in_channels:
        return x
    if channels == 1:
        return x.expand(-1, in_channels, *x.shape[2:])
    if in_channels == 1:
        return x.mean(1, keepdim=True)
    raise ValueError(f"{what}: the image has {channels} channels, the network takes {in_channels}; convert it to grey or RGB first")


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std with ImageNet's per-channel statistics; a 1-channel net gets their averages."""
    channels = x.shape[1]
    mean = torch.tensor(IMAGENET_MEAN if channels == 3 else [sum(IMAGENET_MEAN) / 3] * channels, dtype=x.dtype, device=x.device)
    std = torch.tensor(IMAGENET_STD if channels == 3 else [sum(IMAGENET_STD) / 3] * channels, dtype=x.dtype, device=x.device)
    shape = (1, channels) + (1,) * (x.ndim - 2)
    return (x - mean.view(shape)) / std.view(shape)


def resize(x: torch.Tensor, size: list[int] | tuple[int, ...] | None) -> torch.Tensor:
    """Bilinear resize of planes to ``size`` (rows, cols), antialiased when shrinking; ``None`` keeps the size."""
    if not size or tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = any(s < n for s, n in zip(size, x.shape[-2:]))
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrinking)


def prepare(
    image, *, mode: str, slice_axis: int, in_channels: int, intensity: str, normalise: bool, size: list[int] | None, what: str
) -> torch.Tensor:
    """A case's image as network input: (N, C, H, W) planes for ``2d``/``slices``, (1, C, D, H, W) for ``3d``."""
    x = torch.as_tensor(image).float()
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    if not torch.isfinite(x).all():
        raise ValueError(f"{what}: the image has NaN or infinite values; fill or mask them first")
    if intensity == "minmax":
        x = minmax(x)
    x = volume(x, slice_axis) if mode == "3d" else planes(x, slice_axis)
    x = match_channels(x, in_channels, what)
    if normalise:
        x = imagenet_normalise(x)
    if mode != "3d":
        x = resize(x, size)
    return x.contiguous()

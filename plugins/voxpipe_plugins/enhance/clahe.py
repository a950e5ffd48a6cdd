"""CLAHE in 2D and 3D through scikit-image's n-dimensional ``equalize_adapthist``, tiles sized in mm."""

from __future__ import annotations

import numpy as np
import torch
from skimage.exposure import equalize_adapthist

from voxpipe.stage import record
from voxpipe_plugins.common.tensors import spacing_of
from voxpipe_plugins.enhance.util import checked_float, plain, refuse_constant, rewrap, source_device

STAGE = "enhance.clahe"

# scikit-image wraps equalize_adapthist with adapt_rgb, which treats any 3D array whose last
# axis has 3 or 4 elements as an RGB(A) picture and equalises its HSV value instead. A
# volume with 3 or 4 slices is not a colour picture: call the n-dimensional function itself.
_equalize_nd = getattr(equalize_adapthist, "__wrapped__", equalize_adapthist)


def kernel_voxels(kernel_mm: float | None, spacing: tuple[float, ...], shape: tuple[int, ...]) -> list[int]:
    """Tile size per axis in voxels: kernel_mm / spacing, rounded, within [1, size]; default shape // 8."""
    if kernel_mm is None:
        return [max(s // 8, 1) for s in shape]
    return [int(min(max(round(kernel_mm / sp), 1), s)) for sp, s in zip(spacing, shape)]


class Clahe:
    """Contrast-limited adaptive histogram equalisation of each channel; output in [0, 1].

    The input is first rescaled from its own [min, max] to [0, 1] when it lies outside that
    range (scikit-image requires it and stretches to the full range anyway); window CT before
    this stage so that air and metal do not take the grey levels.
    """

    def __init__(
        self, key: str = "image", kernel_mm: float | None = None, clip_limit: float = 0.01, nbins: int = 256, per_slice: bool = False
    ) -> None:
        self.key, self.kernel_mm, self.clip_limit, self.nbins, self.per_slice = key, kernel_mm, clip_limit, nbins, per_slice

    def equalize(self, array: np.ndarray, kernel: list[int]) -> np.ndarray:
        return _equalize_nd(array, kernel_size=kernel, clip_limit=self.clip_limit, nbins=self.nbins)

    def __call__(self, case: dict) -> dict:
        image, low, high = checked_float(case[self.key], STAGE)
        refuse_constant(low, high, STAGE, "CLAHE")
        dims = image.ndim - 1
        spacing = spacing_of(image)
        shape = tuple(image.shape[1:])
        slicewise = self.per_slice and dims == 3
        kernel = kernel_voxels(self.kernel_mm, spacing[:2] if slicewise else spacing, shape[:2] if slicewise else shape)
        data = plain(image).detach().cpu()
        channels, constant_slices, rescaled = [], 0, []
        for c in range(data.shape[0]):
            channel = data[c]
            c_low, c_high = (low, high) if data.shape[0] == 1 else (float(v) for v in torch.aminmax(channel))
            if c_low < 0 or c_high > 1:  # scikit-image accepts floats in [0, 1] only
                channel = torch.sub(channel, c_low).div_(max(c_high - c_low, np.finfo(np.float32).tiny))
                rescaled.append([round(c_low, 4), round(c_high, 4)])
            array = channel.numpy()
            if slicewise:
                result = np.empty(array.shape, dtype=np.float32)
                for z in range(array.shape[-1]):
                    plane = array[..., z]
                    if plane.min() == plane.max():
                        result[..., z] = 0.0  # no contrast to equalise
                        constant_slices += 1
                    else:
                        result[..., z] = self.equalize(plane, kernel)
            else:
                result = self.equalize(array, kernel).astype(np.float32, copy=False)
            channels.append(torch.from_numpy(result))
        output = channels[0][None] if len(channels) == 1 else torch.stack(channels)
        out = dict(case)
        out[self.key] = rewrap(image, output.to(source_device(image)))
        record(
            out,
            STAGE,
            mode="2d per slice" if slicewise else f"{dims}d",
            kernel_mm=self.kernel_mm,
            kernel_voxels=kernel,
            clip_limit=self.clip_limit,
            nbins=self.nbins,
            rescaled_from=rescaled or None,
            constant_slices=constant_slices if slicewise else None,
        )
        return out

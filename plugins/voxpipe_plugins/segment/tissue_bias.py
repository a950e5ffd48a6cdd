"""A smooth multiplicative bias field estimated inside ``segment.tissue``'s EM (Wells et al. 1996, as in FSL FAST).

Each round the classes predict every voxel's intensity (the membership-weighted class means,
partial volume included); the log of observed / predicted, weighted by how sure the voxel's
class is, is smoothed with a wide Gaussian (``fwhm_mm``) inside the mask, and the image is
divided by that field before the next round. Only the smooth part of the residual is taken,
so anatomy stays in the classes and a slow coil shading goes into the field. The smoothing
runs on a grid coarsened by about a third of the Gaussian's sigma (block means), which keeps
a round well under a second on a 1 mm brain; the field is read back at the mask's voxels by
linear interpolation.
"""

from __future__ import annotations

import numpy as np


def _block_mean(array: np.ndarray, step: tuple[int, ...]) -> np.ndarray:
    pads = [(0, (-n) % s) for n, s in zip(array.shape, step)]
    padded = np.pad(array, pads)
    shape = []
    for n, s in zip(padded.shape, step):
        shape += [n // s, s]
    return padded.reshape(shape).mean(axis=tuple(range(1, 2 * array.ndim, 2)))


class BiasField:
    """Estimates log bias at the mask's voxels (C order of ``grid_mask``) from log residuals."""

    def __init__(self, grid_mask: np.ndarray, spacing: tuple[float, ...], fwhm_mm: float) -> None:
        self.shape = grid_mask.shape
        self.index = np.flatnonzero(grid_mask)
        sigma = fwhm_mm / (2 * np.sqrt(2 * np.log(2))) / np.asarray(spacing, dtype=np.float64)
        self.step = tuple(int(s) for s in np.maximum(1, np.floor(sigma / 3)))
        self.sigma = sigma / np.asarray(self.step)
        voxel = np.unravel_index(self.index, self.shape)
        self.coords = np.array([(v - (s - 1) / 2) / s for v, s in zip(voxel, self.step)], dtype=np.float32)

    def _coarse(self, values: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        grid = np.zeros(self.shape, dtype=np.float32)
        grid.reshape(-1)[self.index] = values
        return ndimage.gaussian_filter(_block_mean(grid, self.step), self.sigma, mode="constant", truncate=3.0)

    def estimate(self, log_residual: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The smooth part of ``log_residual`` (weighted), with zero weighted mean over the mask."""
        from scipy import ndimage

        weights = weights.astype(np.float32)
        coarse = self._coarse(log_residual * weights) / np.maximum(self._coarse(weights), 1e-6)
        field = ndimage.map_coordinates(coarse, self.coords, order=1, mode="nearest")  # one read-back: the ratio is smooth
        return (field - np.average(field, weights=weights)).astype(np.float32)

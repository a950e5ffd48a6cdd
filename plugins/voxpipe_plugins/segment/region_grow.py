"""Region growing from seeds: connected threshold and confidence connected (as in ITK).

*Connected*: the voxels inside an intensity interval that are connected (faces) to a seed.
*Confidence connected*: start from the mean and standard deviation of a small
neighbourhood around the seeds, take the connected region inside mean ± k·std, recompute
the statistics from that region, and repeat a few times.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voxpipe.stage import record
from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.segment.base import add_warning, intensity, mask_from_case, to_label, values_in, world_to_voxel


def connected_to_seeds(inside: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The face-connected components of ``inside`` that contain a seed."""
    from scipy import ndimage

    components, _ = ndimage.label(inside)
    ids = {int(components[tuple(s)]) for s in seeds} - {0}
    if not ids:
        return np.zeros(inside.shape, dtype=bool)
    return values_in(components, sorted(ids))


class RegionGrowSegmenter:
    STAGE = "segment.region_grow"

    def __init__(
        self,
        key: str = "image",
        output_key: str = "label",
        seeds: Sequence[Sequence[float]] = (),
        seed_space: str = "voxel",
        method: str = "connected",
        lower: float | None = None,
        upper: float | None = None,
        multiplier: float = 2.5,
        iterations: int = 4,
        initial_radius: int = 1,
        mask_key: str | None = None,
        name: str = "region",
    ) -> None:
        if not seeds:
            raise ValueError("give at least one seed")
        if method == "connected" and lower is None and upper is None:
            raise ValueError("method `connected` needs `lower` and/or `upper`")
        self.key, self.output_key, self.seeds, self.seed_space = key, output_key, [list(s) for s in seeds], seed_space
        self.method, self.lower, self.upper = method, lower, upper
        self.multiplier, self.iterations, self.initial_radius = multiplier, iterations, initial_radius
        self.mask_key, self.name = mask_key, name

    def _seed_indices(self, image, shape: tuple[int, ...]) -> np.ndarray:
        ndim = len(shape)
        if self.seed_space == "world":
            points = world_to_voxel(image, self.seeds, ndim)
        else:
            if any(len(s) != ndim for s in self.seeds):
                raise StageInputError(f"{self.STAGE}: voxel seeds need {ndim} coordinates for a {ndim}D image, got {self.seeds}")
            points = np.asarray(self.seeds, dtype=np.float64)
        indices = np.rint(points).astype(np.int64)
        for seed, index in zip(self.seeds, indices):
            if np.any(index < 0) or np.any(index >= np.asarray(shape)):
                raise StageInputError(
                    f"{self.STAGE}: seed {seed} ({self.seed_space}) is outside the image (voxel {index.tolist()}, shape {list(shape)})"
                )
        return indices

    def __call__(self, case: dict) -> dict:
        image = case[self.key]
        values = intensity(image, self.STAGE)
        allowed = mask_from_case(case, self.mask_key, values.shape, self.STAGE)
        seeds = self._seed_indices(image, values.shape)
        out = dict(case)
        details: dict = {"method": self.method, "seeds_voxel": seeds.tolist()}
        if self.method == "connected":
            low = -np.inf if self.lower is None else self.lower
            high = np.inf if self.upper is None else self.upper
            inside = (values >= low) & (values <= high)
            if allowed is not None:
                inside &= allowed
            region = connected_to_seeds(inside, seeds)
            details.update(lower=self.lower, upper=self.upper)
        else:
            region, history = self._confidence(values, seeds, allowed)
            details["intervals"] = history
        outside = [s.tolist() for s in seeds if not region[tuple(s)]]
        if outside:
            add_warning(out, f"{self.STAGE}: {len(outside)} seed(s) lie outside the accepted interval and grew nothing: {outside}")
        if not region.any():
            add_warning(out, f"{self.STAGE}: the region is empty; label map `{self.output_key}` is empty")
        out[self.output_key] = to_label(image, region.astype(np.uint8), {0: "background", 1: self.name})
        details["voxels"] = int(region.sum())
        record(out, self.STAGE, **details)
        return out

    def _confidence(self, values: np.ndarray, seeds: np.ndarray, allowed: np.ndarray | None):
        r = self.initial_radius
        samples = []
        for seed in seeds:
            window = tuple(slice(max(0, int(c) - r), int(c) + r + 1) for c in seed)
            samples.append(values[window].ravel())
        pool = np.concatenate(samples)
        mean, std = float(pool.mean()), float(pool.std())
        history = []
        region = np.zeros_like(values, dtype=bool)
        for _ in range(self.iterations + 1):
            low, high = mean - self.multiplier * std, mean + self.multiplier * std
            inside = (values >= low) & (values <= high)
            if allowed is not None:
                inside &= allowed
            region = connected_to_seeds(inside, seeds)
            history.append([round(low, 4), round(high, 4)])
            if not region.any():
                break
            new_mean, new_std = float(values[region].mean()), float(values[region].std())
            if np.isclose(new_mean, mean) and np.isclose(new_std, std):
                break
            mean, std = new_mean, new_std
        return region, history

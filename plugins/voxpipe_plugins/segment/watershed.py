"""Marker-based watershed (scikit-image), with the relief and the markers chosen by name.

Relief (``surface``): ``gradient`` (gradient magnitude in intensity per mm after Gaussian
smoothing with sigma in mm: boundaries are ridges), ``distance`` (minus the Euclidean distance to the mask's edge in mm: splits
touching round objects), ``image`` or ``inverted`` (the intensities themselves).
Markers: ``label`` (the non-zero values of another case key, kept as they are),
``threshold`` (connected components of the voxels in [marker_lower, marker_upper]) or
``h_maxima`` (regional maxima of the inverted relief at least ``h`` high: one per basin
deeper than ``h``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voxpipe.stage import record
from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.segment.base import (
    add_warning,
    default_names,
    intensity,
    label_array,
    label_names_of,
    mask_from_case,
    spacing,
    to_label,
)


class WatershedSegmenter:
    STAGE = "segment.watershed"

    def __init__(
        self,
        key: str = "image",
        output_key: str = "label",
        surface: str = "gradient",
        sigma_mm: float = 1.0,
        markers: str = "h_maxima",
        marker_key: str | None = None,
        marker_lower: float | None = None,
        marker_upper: float | None = None,
        h: float = 1.0,
        mask_key: str | None = None,
        mask_threshold: float | None = None,
        min_marker_voxels: int = 1,
        watershed_line: bool = False,
        names: Sequence[str] | None = None,
    ) -> None:
        self.key, self.output_key, self.surface, self.sigma_mm = key, output_key, surface, sigma_mm
        self.markers, self.marker_key, self.marker_lower, self.marker_upper, self.h = markers, marker_key, marker_lower, marker_upper, h
        self.mask_key, self.mask_threshold, self.min_marker_voxels = mask_key, mask_threshold, min_marker_voxels
        self.watershed_line, self.names = watershed_line, names
        if markers == "label" and marker_key is None:
            raise ValueError("markers `label` needs `marker_key`")
        if markers == "threshold" and marker_lower is None and marker_upper is None:
            raise ValueError("markers `threshold` needs `marker_lower` and/or `marker_upper`")
        if surface == "distance" and mask_key is None and mask_threshold is None:
            raise ValueError("surface `distance` needs a mask (`mask_key` or `mask_threshold`)")

    def _relief(self, values: np.ndarray, mask: np.ndarray | None, sampling: tuple[float, ...]) -> np.ndarray:
        from scipy import ndimage

        if self.surface == "gradient":
            # Smooth (sigma in mm -> voxels per axis), then central differences in mm: a coarse
            # axis keeps its edges (a Gaussian derivative with sub-voxel sigma would lose them).
            sigma = [self.sigma_mm / s for s in sampling]
            smoothed = ndimage.gaussian_filter(values, sigma=[g if g >= 0.3 else 0.0 for g in sigma])
            gradients = np.gradient(smoothed, *sampling)
            return np.sqrt(sum(g.astype(np.float32) ** 2 for g in gradients))
        if self.surface == "distance":
            return -ndimage.distance_transform_edt(mask, sampling=sampling).astype(np.float32)
        if self.surface == "inverted":
            return -values
        return values

    def _markers(self, case: dict, values: np.ndarray, relief: np.ndarray, mask) -> tuple[np.ndarray, dict[int, str]]:
        from scipy import ndimage

        if self.markers == "label":
            if self.marker_key not in case:
                raise StageInputError(f"{self.STAGE}: the case has no `{self.marker_key}` (marker_key); an earlier stage must write it")
            markers = label_array(case[self.marker_key], self.STAGE).astype(np.int32)
            if markers.shape != values.shape:
                raise StageInputError(f"{self.STAGE}: markers `{self.marker_key}` have shape {markers.shape}, the image {values.shape}")
            return markers, label_names_of(case[self.marker_key])
        if self.markers == "threshold":
            low = -np.inf if self.marker_lower is None else self.marker_lower
            high = np.inf if self.marker_upper is None else self.marker_upper
            seeds = (values >= low) & (values <= high)
        else:
            from skimage.morphology import h_maxima

            seeds = h_maxima(-relief.astype(np.float64), self.h).astype(bool)
        if mask is not None:
            seeds &= mask
        markers, count = ndimage.label(seeds)
        if self.min_marker_voxels > 1 and count:
            sizes = np.bincount(markers.ravel())
            small = sizes < self.min_marker_voxels
            small[0] = False
            markers[small[markers]] = 0
            markers, count = ndimage.label(markers > 0)
        return markers, {}

    def __call__(self, case: dict) -> dict:
        from skimage.segmentation import watershed

        image = case[self.key]
        values = intensity(image, self.STAGE)
        sampling = spacing(image)
        mask = mask_from_case(case, self.mask_key, values.shape, self.STAGE)
        if self.mask_threshold is not None:
            above = values > self.mask_threshold
            mask = above if mask is None else (mask & above)
        relief = self._relief(values, mask, sampling)
        markers, marker_names = self._markers(case, values, relief, mask)
        out = dict(case)
        if not markers.any():
            add_warning(out, f"{self.STAGE}: no markers found ({self.markers}); label map `{self.output_key}` is empty")
            label = np.zeros_like(values, dtype=np.int32)
        else:
            label = watershed(relief, markers, mask=mask, watershed_line=self.watershed_line).astype(np.int32)
        values_found = sorted(int(v) for v in np.unique(label) if v)
        count = max(values_found, default=0)
        if marker_names:
            names = {0: "background", **{v: marker_names.get(v, f"region_{v}") for v in values_found}}
        elif self.names:
            names = {0: "background", **{v: (self.names[v - 1] if v <= len(self.names) else f"region_{v}") for v in values_found}}
        else:
            names = default_names(count, 1, None, prefix="region")
        out[self.output_key] = to_label(image, label, names)
        record(
            out,
            self.STAGE,
            surface=self.surface,
            markers=self.markers,
            regions=len(values_found),
            sigma_mm=self.sigma_mm if self.surface == "gradient" else None,
            h=self.h if self.markers == "h_maxima" else None,
        )
        return out

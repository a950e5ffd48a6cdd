"""Intensity-range and multi-Otsu segmenters: the classical baselines on CT (HU) and MR."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from voxpipe.stage import record
from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.segment.base import add_warning, default_names, intensity, mask_from_case, to_label


def _get(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name)


class ThresholdSegmenter:
    """Named intensity ranges -> labels 1..N (first matching range wins), optionally inside a mask."""

    STAGE = "segment.threshold"

    def __init__(
        self,
        key: str = "image",
        output_key: str = "label",
        ranges: Sequence[Any] = (),
        mask_key: str | None = None,
        mask_labels: Sequence[int] | None = None,
    ) -> None:
        self.key, self.output_key, self.mask_key, self.mask_labels = key, output_key, mask_key, mask_labels
        self.ranges = []
        for i, item in enumerate(ranges):
            low, high = _get(item, "min"), _get(item, "max")
            value = _get(item, "value") or i + 1
            self.ranges.append(
                (str(_get(item, "name")), -np.inf if low is None else float(low), np.inf if high is None else float(high), int(value))
            )
        if not self.ranges:
            raise ValueError("give at least one range")

    def __call__(self, case: dict) -> dict:
        image = case[self.key]
        values = intensity(image, self.STAGE)
        inside = mask_from_case(case, self.mask_key, values.shape, self.STAGE, self.mask_labels)
        label = np.zeros_like(values, dtype=np.int32)
        free = np.ones_like(values, dtype=bool) if inside is None else inside.copy(order="K")
        counts = {}
        for name, low, high, value in self.ranges:
            hit = free & (values >= low) & (values <= high)
            label[hit] = value
            free &= ~hit
            counts[name] = int(hit.sum())
        out = dict(case)
        names = {0: "background", **{value: name for name, _, _, value in self.ranges}}
        out[self.output_key] = to_label(image, label, names)
        if not label.any():
            add_warning(out, f"{self.STAGE}: no voxel fell in any range ({self._describe()}); label map `{self.output_key}` is empty")
        record(out, self.STAGE, ranges=self._describe(), voxels=counts, masked=self.mask_key is not None)
        return out

    def _describe(self) -> str:
        return ", ".join(f"{name}=[{low:g}, {high:g}]" for name, low, high, _ in self.ranges)


class MultiOtsuSegmenter:
    """Multi-Otsu thresholds (scikit-image) -> classes ordered by intensity."""

    STAGE = "segment.multiotsu"

    def __init__(
        self,
        key: str = "image",
        output_key: str = "label",
        classes: int = 3,
        nbins: int = 256,
        mask_key: str | None = None,
        mask_labels: Sequence[int] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if names is not None and len(names) != classes:
            raise ValueError(f"`names` has {len(names)} entries for {classes} classes")
        self.key, self.output_key, self.classes, self.nbins = key, output_key, classes, nbins
        self.mask_key, self.mask_labels, self.names = mask_key, mask_labels, names

    def __call__(self, case: dict) -> dict:
        from skimage.filters import threshold_multiotsu

        image = case[self.key]
        values = intensity(image, self.STAGE)
        inside = mask_from_case(case, self.mask_key, values.shape, self.STAGE, self.mask_labels)
        sample = values if inside is None else values[inside]
        first = 0 if inside is None else 1
        out = dict(case)
        label = np.zeros_like(values, dtype=np.int32)
        if sample.size == 0 or np.ptp(sample) == 0:
            if inside is None:
                raise StageInputError(f"{self.STAGE}: image is constant; multi-Otsu thresholds are undefined")
            add_warning(
                out, f"{self.STAGE}: the mask `{self.mask_key}` is empty or constant inside; label map `{self.output_key}` is empty"
            )
            thresholds = []
        else:
            try:
                thresholds = [float(t) for t in threshold_multiotsu(sample, classes=self.classes, nbins=self.nbins)]
            except ValueError as exc:  # fewer distinct values than classes
                raise StageInputError(f"{self.STAGE}: cannot split the image into {self.classes} classes: {exc}") from None
            classes = np.digitize(values, thresholds)
            if inside is None:
                label = classes.astype(np.int32)
            else:
                label[inside] = classes[inside] + 1
        out[self.output_key] = to_label(image, label, default_names(self.classes, first, self.names))
        record(
            out,
            self.STAGE,
            classes=self.classes,
            thresholds=[round(t, 6) for t in thresholds],
            voxels=[int((label == first + c).sum()) for c in range(self.classes)],
            masked=inside is not None,
        )
        return out

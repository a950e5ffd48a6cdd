"""``segment.tissue``: CSF / grey / white matter labels and probability maps for a (skull-stripped) T1.

The case handling around :mod:`voxpipe_plugins.segment.tissue_model`: the mask (a mask
key, an intensity threshold, or the non-zero voxels), intensities scaled by robust
percentiles so that nothing depends on units, the work cropped to the mask's bounding box,
and the outputs put back on the image grid: a label map (1..k darkest first, 0 outside)
and one float32 probability map per class that sums to 1 inside the mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from voxpipe.stage import record
from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.common.tensors import like
from voxpipe_plugins.segment.base import default_names, intensity, mask_from_case, spacing, to_label
from voxpipe_plugins.segment.tissue_model import initial_mixture, segment

BRAIN_NAMES = ("csf", "gray_matter", "white_matter")
BRAIN_PROBS = ("csf_prob", "gm_prob", "wm_prob")


def probability_keys(classes: int, given: Sequence[str] | None) -> list[str]:
    """The case keys of the probability maps: given, or csf/gm/wm_prob for 3 classes, class_<v>_prob otherwise."""
    if given is not None:
        return list(given)
    return list(BRAIN_PROBS) if classes == 3 else [f"class_{v}_prob" for v in range(1, classes + 1)]


class TissueSegmenter:
    """EM + partial volume + hidden-MRF tissue classes (see :mod:`tissue_model` for the method)."""

    STAGE = "segment.tissue"

    def __init__(
        self,
        key: str = "image",
        output_key: str = "label",
        classes: int = 3,
        mask_key: str | None = None,
        mask_labels: Sequence[int] | None = None,
        mask_threshold: float | None = None,
        names: Sequence[str] | None = None,
        prob_keys: Sequence[str] | None = None,
        beta: float = 2.0,
        neighbours: int = 26,
        partial_volume: bool = True,
        variance: str = "shared",
        iterations: int = 10,
        bias_fwhm_mm: float | None = None,
        max_samples: int = 200_000,
        seed: int = 0,
    ) -> None:
        names = list(names) if names is not None else (list(BRAIN_NAMES) if classes == 3 else None)
        keys = probability_keys(classes, prob_keys)
        for what, given in (("names", names), ("prob_keys", keys)):
            if given is not None and len(given) not in ((0, classes) if what == "prob_keys" else (classes,)):
                raise ValueError(f"`{what}` has {len(given)} entries for {classes} classes")
        if variance not in ("shared", "per_class"):
            raise ValueError(f"`variance` must be shared or per_class, not {variance!r}")
        self.key, self.output_key, self.classes = key, output_key, classes
        self.mask_key, self.mask_labels, self.mask_threshold = mask_key, mask_labels, mask_threshold
        self.names, self.prob_keys = names, keys
        self.beta, self.neighbours, self.partial_volume = float(beta), int(neighbours), bool(partial_volume)
        self.shared = variance == "shared"
        self.iterations, self.max_samples, self.seed = int(iterations), int(max_samples), int(seed)
        self.bias_fwhm_mm = bias_fwhm_mm

    def _mask(self, case: dict, values: np.ndarray) -> np.ndarray:
        mask = mask_from_case(case, self.mask_key, values.shape, self.STAGE, self.mask_labels)
        if self.mask_threshold is not None:
            above = values > self.mask_threshold
            mask = above if mask is None else (mask & above)
        return values != 0 if mask is None else mask

    def __call__(self, case: dict) -> dict:
        image = case[self.key]
        values = intensity(image, self.STAGE)
        mask = self._mask(case, values)
        where = "the mask" if self.mask_key or self.mask_threshold is not None else "the non-zero voxels"
        inside = values[mask]
        if inside.size < 10 * self.classes or np.unique(inside).size < self.classes:
            raise StageInputError(
                f"{self.STAGE}: {where} of `{self.key}` hold {inside.size} voxel(s) of {np.unique(inside).size} value(s), "
                f"too few for {self.classes} classes; check `mask_key`/`mask_threshold` or the image"
            )
        box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(mask))
        grid_mask = np.ascontiguousarray(mask[box])
        x = np.ascontiguousarray(values[box][grid_mask], dtype=np.float64)  # C order of the box
        # A few extreme voxels (a vessel, a hot pixel, a stray bright spot) would take a class of their
        # own: the outer 0.5 % on each side are clipped, so they join the darkest or brightest class.
        np.clip(x, *np.percentile(x, (0.5, 99.5)), out=x)
        low, high = np.percentile(x, (1.0, 99.0))
        scale = float(high - low) or float(np.ptp(x)) or 1.0
        x = (x - low) / scale  # units-free: the same classes for any linear rescaling of the image
        rng = np.random.default_rng(self.seed)
        sample = x if x.size <= self.max_samples else rng.choice(x, self.max_samples, replace=False)
        mix = initial_mixture(sample, self.classes, self.shared, self.partial_volume, self.seed)
        result = segment(
            x.astype(np.float32),
            grid_mask,
            mix,
            spacing(image),
            self.beta,
            self.neighbours,
            self.iterations,
            self.bias_fwhm_mm,
            float(low / scale),
        )

        out = dict(case)
        label = np.zeros(values.shape, dtype=np.int32)
        label_box = np.zeros(grid_mask.shape, dtype=np.int32)
        label_box[grid_mask] = result.labels + 1
        label[box] = label_box
        out[self.output_key] = to_label(image, label, default_names(self.classes, 1, self.names))
        for c, key in enumerate(self.prob_keys):
            prob = np.zeros(values.shape, dtype=np.float32)
            prob_box = np.zeros(grid_mask.shape, dtype=np.float32)
            prob_box[grid_mask] = result.memberships[c]
            prob[box] = prob_box
            out[key] = like(image, torch.from_numpy(prob[None]))
        fitted = result.mixture
        record(
            out,
            self.STAGE,
            classes=self.classes,
            mask_voxels=int(x.size),
            means=[round(float(m * scale + low), 4) for m in fitted.means],
            stds=[round(float(np.sqrt(v) * abs(scale)), 4) for v in fitted.variances],
            weights=[round(float(w), 4) for w in fitted.weights],
            partial_volume=self.partial_volume,
            variance="shared" if fitted.shared else "per_class",
            beta=self.beta,
            bias_fwhm_mm=self.bias_fwhm_mm,
            rounds=result.rounds,
            voxels=[int((result.labels == c).sum()) for c in range(self.classes)],
        )
        return out

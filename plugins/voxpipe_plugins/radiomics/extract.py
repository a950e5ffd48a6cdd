"""The ``radiomics.extract`` stage: one feature vector per case from the image inside a mask."""

from __future__ import annotations

import numpy as np

from voxpipe.report_items import report_metric
from voxpipe.stage import record
from voxpipe_plugins.radiomics import discretise, firstorder, glcm, shape

GROUPS = ("firstorder", "shape", "glcm")
REPORTED = {"shape.volume_mm3": "mm³", "firstorder.mean": "", "glcm.contrast": "", "firstorder.entropy": "bits"}
"""The features the run report shows (name -> unit; intensities are in the image's own units)."""


class RadiomicsExtractor:
    """Computes IBSI first-order, shape and GLCM features inside ``mask_key == label_value``.

    The features go to ``case["features"][name]`` (float32, 1-D) and their names, prefixed
    by group (``firstorder.mean``, ``shape.volume_mm3``, ``glcm.contrast``), to
    ``case["feature_names"][name]``. Other feature sets already in the case are kept.
    """

    def __init__(
        self,
        key="image",
        mask_key="label",
        label_value=1,
        name="radiomics",
        bin_count=32,
        bin_width=None,
        bin_lower=None,
        glcm_distance=1,
        glcm_aggregation="averaged",
        surface="smoothed",
        groups=GROUPS,
        min_voxels=1,
    ) -> None:
        self.key, self.mask_key, self.label_value, self.name = key, mask_key, label_value, name
        self.bin_count, self.bin_width, self.bin_lower = bin_count, bin_width, bin_lower
        self.glcm_distance, self.glcm_aggregation, self.surface = glcm_distance, glcm_aggregation, surface
        self.groups = [g for g in GROUPS if g in groups]
        self.min_voxels = min_voxels

    def _arrays(self, case: dict) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
        from voxpipe_plugins.common.checks import StageInputError
        from voxpipe_plugins.common.tensors import spacing_of, to_numpy

        for key in (self.key, self.mask_key):
            if key not in case:
                raise StageInputError(
                    f"radiomics.extract: the case has no `{key}`; add a stage that makes it (e.g. a segmenter for the mask)"
                )
        image, mask = case[self.key], case[self.mask_key]
        array, labels = to_numpy(image), to_numpy(mask)
        if array.ndim not in (3, 4) or array.shape[0] != 1:
            raise StageInputError(f"radiomics.extract: `{self.key}` must be a one-channel 2D or 3D image, got shape {tuple(array.shape)}")
        array = array[0]
        if labels.ndim == array.ndim + 1 and labels.shape[0] == 1:
            labels = labels[0]
        if labels.shape != array.shape:
            raise StageInputError(
                f"radiomics.extract: `{self.mask_key}` has shape {labels.shape} but `{self.key}` has {array.shape}; "
                "resample the mask onto the image grid"
            )
        roi = labels != 0 if self.label_value is None else labels == self.label_value
        count = int(roi.sum())
        wanted = "non-zero" if self.label_value is None else f"value {self.label_value}"
        if count < self.min_voxels:
            raise StageInputError(
                f"radiomics.extract: `{self.mask_key}` has {count} voxels with {wanted} (need at least {self.min_voxels}); "
                "check `label_value` or the segmentation"
            )
        values = array[roi]
        if not np.all(np.isfinite(values)):
            raise StageInputError(f"radiomics.extract: `{self.key}` has NaN or infinite values inside the mask; fill them first")
        return array, roi, spacing_of(image)

    def _discretise(self, values: np.ndarray) -> discretise.Discretised:
        if self.bin_width is not None:
            return discretise.fixed_bin_width(values, self.bin_width, self.bin_lower)
        return discretise.fixed_bin_count(values, self.bin_count)

    def compute(self, array: np.ndarray, roi: np.ndarray, spacing: tuple[float, ...]) -> tuple[list[str], np.ndarray, dict]:
        """Feature names, values and a summary of the discretisation (for the history)."""
        index = np.argwhere(roi)
        box = tuple(slice(a, b) for a, b in zip(index.min(0), index.max(0) + 1))
        array, roi = array[box], roi[box]  # every feature is translation invariant: work on the bounding box
        values = array[roi].astype(np.float64)
        grey = self._discretise(values)
        names: list[str] = []
        out: list[float] = []
        if "firstorder" in self.groups:
            stats = firstorder.first_order(values, grey.values)
            names += [f"firstorder.{n}" for n in firstorder.NAMES]
            out += [stats[n] for n in firstorder.NAMES]
        if "shape" in self.groups:
            morph = shape.shape_features(roi, spacing, self.surface)
            names += [f"shape.{n}" for n in shape.names(roi.ndim)]
            out += [morph[n] for n in shape.names(roi.ndim)]
        if "glcm" in self.groups:
            levels = np.zeros(roi.shape, np.int32)
            levels[roi] = grey.values
            tex = glcm.texture(levels, roi, grey.levels, self.glcm_distance, self.glcm_aggregation)
            names += [f"glcm.{n}" for n in glcm.NAMES]
            out += [tex[n] for n in glcm.NAMES]
        summary = {
            "levels": grey.levels,
            "discretisation": grey.method,
            "bin_lower": round(grey.lower, 6),
            "bin_width": round(grey.width, 6),
        }
        return names, np.asarray(out, dtype=np.float32), summary

    def __call__(self, case: dict) -> dict:
        array, roi, spacing = self._arrays(case)
        names, vector, summary = self.compute(array, roi, spacing)
        if not np.all(np.isfinite(vector)):
            bad = [n for n, v in zip(names, vector) if not np.isfinite(v)]
            raise ValueError(f"radiomics.extract: non-finite features {bad[:5]} (float32 overflow?); rescale the image")
        case.setdefault("features", {})[self.name] = vector
        case.setdefault("feature_names", {})[self.name] = names
        record(
            case,
            "radiomics.extract",
            feature_set=self.name,
            count=len(names),
            voxels=int(roi.sum()),
            spacing_mm=[round(s, 4) for s in spacing],
            groups=self.groups,
            surface=self.surface,
            **summary,
        )
        for name, value in zip(names, vector.tolist()):
            if name in REPORTED:
                report_metric(
                    case, f"feature_values.{self.name}:{name}", round(float(value), 4), unit=REPORTED[name], label=f"{self.name}:{name}"
                )
        return case

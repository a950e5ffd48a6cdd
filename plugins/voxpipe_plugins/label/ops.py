"""Label-map post-processing: largest component, hole filling, opening/closing in mm, components.

Every stage works per label value (all non-zero values, or those in ``labels``), leaves the
other values alone, keeps the label map's geometry and label table, and handles an empty
map with one warning in ``case["warnings"]`` instead of failing.

Morphology in mm: the structuring element is the set of voxel offsets ``d`` with
``|d · spacing| <= radius_mm`` -- an ellipsoid in voxels, flat along coarse axes (1 mm on
0.7 × 0.7 × 5 mm voxels is 3 × 3 × 1). Erosion and dilation by it are exact: small elements
(up to 400 voxels: the usual 1-3 mm) as the intersection/union of shifted copies of the
mask, larger ones with Euclidean distance transforms in mm (a voxel survives erosion when
the nearest outside voxel is farther than the radius), whose cost does not grow with the
radius. Both work on the mask's bounding box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from voxpipe.label_counts import label_values
from voxpipe.stage import record
from voxpipe_plugins.segment.base import add_warning, axial_axis, label_array, label_names_of, spacing, to_label, values_in

_EPS = 1e-6


def footprint(radius_mm: float, sampling: Sequence[float]) -> np.ndarray:
    """The ellipsoidal structuring element (bool array) for ``radius_mm`` on voxels of ``sampling`` mm."""
    half = [int(np.floor(radius_mm / s + _EPS)) for s in sampling]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, sampling)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + _EPS


def _crop(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` voxels per axis (clipped to the array)."""
    coords = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis))) for axis in range(mask.ndim)]
    return tuple(slice(max(0, int(c[0]) - m), min(n, int(c[-1]) + m + 1)) for c, m, n in zip(coords, margin, mask.shape))


SHIFT_MAX_OFFSETS = 400
"""Elements with at most this many voxels are applied as a union/intersection of shifted copies
(cost ~ offsets x voxels, cheap for the usual 1-3 mm radii); larger ones through distance
transforms (cost independent of the radius). Both are exact; the tests check both against scipy."""


def _offsets(radius_mm: float, sampling: Sequence[float]) -> np.ndarray:
    element = footprint(radius_mm, sampling)
    return np.argwhere(element) - np.array(element.shape) // 2


def _shifted(mask: np.ndarray, offset: Sequence[int], combine, out: np.ndarray) -> None:
    """out[x] = combine(out[x], mask[x + offset]) where x + offset is inside the array."""
    dst, src = [], []
    for d, n in zip(offset, mask.shape):
        dst.append(slice(max(0, -d), n - max(0, d)))
        src.append(slice(max(0, d), n - max(0, -d)))
    combine(out[tuple(dst)], mask[tuple(src)], out=out[tuple(dst)])


def erode(mask: np.ndarray, radius_mm: float, sampling: Sequence[float]) -> np.ndarray:
    """Binary erosion by the mm ball (outside the array counts as background)."""
    from scipy import ndimage

    if not mask.any():
        return mask.copy()
    box = _crop(mask, [1] * mask.ndim)
    offsets = _offsets(radius_mm, sampling)
    result = np.zeros_like(mask)
    if len(offsets) <= SHIFT_MAX_OFFSETS:
        padded = np.pad(mask[box], [(int(np.abs(offsets[:, a]).max()),) * 2 for a in range(mask.ndim)])
        eroded = padded.copy()
        for offset in offsets:
            if offset.any():
                _shifted(padded, offset, np.logical_and, eroded)
        inner = tuple(slice(int(np.abs(offsets[:, a]).max()), eroded.shape[a] - int(np.abs(offsets[:, a]).max())) for a in range(mask.ndim))
        result[box] = eroded[inner]
        return result
    padded = np.pad(mask[box], 1)
    distance = ndimage.distance_transform_edt(padded, sampling=sampling)
    result[box] = (distance > radius_mm + _EPS)[(slice(1, -1),) * mask.ndim]
    return result


def dilate(mask: np.ndarray, radius_mm: float, sampling: Sequence[float]) -> np.ndarray:
    """Binary dilation by the mm ball."""
    from scipy import ndimage

    if not mask.any():
        return mask.copy()
    margin = [int(np.floor(radius_mm / s + _EPS)) + 1 for s in sampling]
    box = _crop(mask, margin)
    offsets = _offsets(radius_mm, sampling)
    result = np.zeros_like(mask)
    if len(offsets) <= SHIFT_MAX_OFFSETS:
        region = mask[box]
        grown = region.copy()
        for offset in offsets:
            if offset.any():
                _shifted(region, offset, np.logical_or, grown)
        result[box] = grown
        return result
    distance = ndimage.distance_transform_edt(~mask[box], sampling=sampling)
    result[box] = distance <= radius_mm + _EPS
    return result


def largest_components(mask: np.ndarray, count: int = 1, connectivity: int = 1) -> np.ndarray:
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    components, n = ndimage.label(mask, structure=structure)
    if n <= count:
        return mask.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    keep = np.argsort(sizes)[::-1][:count]
    return values_in(components, keep)


def fill_holes(mask: np.ndarray, slice_axis: int | None) -> np.ndarray:
    """Fill enclosed background (in 2D slices along ``slice_axis`` when given, else in the whole array)."""
    from scipy import ndimage

    if slice_axis is None or mask.ndim == 2:
        return ndimage.binary_fill_holes(mask)
    moved = np.moveaxis(mask, slice_axis, 0)
    filled = np.stack([ndimage.binary_fill_holes(s) if s.any() else s for s in moved])
    return np.moveaxis(filled, 0, slice_axis)


class _LabelStage:
    """Apply a binary operation to each selected label value of ``case[key]``."""

    STAGE = "label.op"

    def __init__(self, key: str = "label", output_key: str | None = None, labels: Sequence[int] | None = None) -> None:
        self.key, self.output_key, self.labels = key, output_key or key, labels

    def __call__(self, case: dict) -> dict:
        label = case[self.key]
        array = label_array(label, self.STAGE)
        out = dict(case)
        values = label_values(array)
        if array.dtype.kind == "i" and array.size and array.min() < 0:  # rare, but a label is any non-zero value
            values = sorted({int(v) for v in np.unique(array[array < 0])} | set(values))
        selected = [v for v in values if self.labels is None or v in self.labels]
        details: dict[str, Any] = {"key": self.key}
        if not selected:
            which = "" if self.labels is None else f" with values {list(self.labels)}"
            already = any(f"`{self.key}`" in str(w) and "empty" in str(w) for w in case.get("warnings", []))
            if not already:  # one warning per empty map, not one per later stage
                add_warning(out, f"{self.STAGE}: label map `{self.key}` is empty (no voxels{which}); left unchanged")
            result, names = array, label_names_of(label)
            details["empty"] = True
        else:
            sampling = spacing(label)
            # Fortran-ordered maps (NIfTI data keeps its layout) are processed as their C-ordered
            # transpose, a free view: scipy's output arrays are C-ordered, and mixing layouts is slow.
            # Passed through `details` (popped before recording), never stored on the stage:
            # one stage object may serve several cases at once.
            transposed = array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous
            details["_transposed"] = transposed
            if transposed:
                array, sampling = array.T, tuple(reversed(sampling))
            result, names = self.apply(array, selected, sampling, label, details)
            details.pop("_transposed", None)
            if transposed:
                result = result.T
            if not result.any():
                add_warning(out, f"{self.STAGE}: removed every labelled voxel; label map `{self.output_key}` is now empty")
        out[self.output_key] = to_label(label, result, names or label_names_of(label) or {0: "background"})
        record(out, self.STAGE, **details)
        return out

    def apply(self, array, selected, sampling, label, details):  # pragma: no cover - abstract
        raise NotImplementedError


class LargestComponent(_LabelStage):
    STAGE = "label.largest_component"

    def __init__(self, key="label", output_key=None, labels=None, count: int = 1, connectivity: int = 1) -> None:
        super().__init__(key, output_key, labels)
        self.count, self.connectivity = count, connectivity

    def apply(self, array, selected, sampling, label, details):
        result = array.copy()
        removed = {}
        for value in selected:
            mask = array == value
            kept = largest_components(mask, self.count, self.connectivity)
            result[mask & ~kept] = 0
            removed[str(value)] = int((mask & ~kept).sum())
        details.update(count=self.count, removed_voxels=removed)
        return result, None


class FillHoles(_LabelStage):
    STAGE = "label.fill_holes"

    def __init__(self, key="label", output_key=None, labels=None, mode: str = "slice") -> None:
        super().__init__(key, output_key, labels)
        self.mode = mode

    def apply(self, array, selected, sampling, label, details):
        axis = axial_axis(label, array.ndim) if self.mode == "slice" and array.ndim == 3 else None
        if axis is not None and details.get("_transposed", False):
            axis = array.ndim - 1 - axis
        result = array.copy()
        filled_counts = {}
        for value in selected:
            mask = array == value
            filled = fill_holes(mask, axis) & (result == 0)  # only background becomes the label
            result[filled] = value
            filled_counts[str(value)] = int(filled.sum())
        shown_axis = None if axis is None else (array.ndim - 1 - axis if details.get("_transposed", False) else axis)
        details.update(mode=self.mode, slice_axis=shown_axis, filled_voxels=filled_counts)
        return result, None


class Morphology(_LabelStage):
    """Opening (erode, then dilate) or closing (dilate, then erode) by a ball of ``radius_mm``."""

    def __init__(self, key="label", output_key=None, labels=None, radius_mm: float = 1.0, operation: str = "open") -> None:
        super().__init__(key, output_key, labels)
        self.radius_mm, self.operation = radius_mm, operation
        self.STAGE = f"label.{operation}"

    def apply(self, array, selected, sampling, label, details):
        result = array.copy()
        changed = {}
        for value in selected:
            mask = array == value
            if self.operation == "open":
                new = dilate(erode(mask, self.radius_mm, sampling), self.radius_mm, sampling) & mask
                result[mask & ~new] = 0
            else:
                new = erode(dilate(mask, self.radius_mm, sampling), self.radius_mm, sampling) | mask
                new &= result == 0  # closing only claims background
                result[new] = value
            changed[str(value)] = int((mask ^ (result == value)).sum())
        element = footprint(self.radius_mm, sampling)
        flip = details.get("_transposed", False)
        details.update(
            radius_mm=self.radius_mm,
            spacing_mm=[round(s, 4) for s in (sampling[::-1] if flip else sampling)],
            element_voxels=list(element.shape[::-1] if flip else element.shape),
            changed_voxels=changed,
        )
        return result, None


class Opening(Morphology):
    """Removes parts thinner than the ball (spurs, bridges, specks)."""

    def __init__(self, key="label", output_key=None, labels=None, radius_mm: float = 1.0) -> None:
        super().__init__(key, output_key, labels, radius_mm, "open")


class Closing(Morphology):
    """Fills gaps and notches narrower than the ball (only background voxels are claimed)."""

    def __init__(self, key="label", output_key=None, labels=None, radius_mm: float = 1.0) -> None:
        super().__init__(key, output_key, labels, radius_mm, "close")


class Components(_LabelStage):
    """Connected components of the selected labels (merged into one foreground), numbered 1..N by size."""

    STAGE = "label.components"

    def __init__(
        self,
        key="label",
        output_key=None,
        labels=None,
        min_size: float = 0.0,
        size_unit: str = "mm3",
        connectivity: int = 1,
        max_components: int = 255,
        relabel: bool = True,
        name: str = "component",
    ) -> None:
        super().__init__(key, output_key, labels)
        self.relabel = relabel
        self.min_size, self.size_unit, self.connectivity = min_size, size_unit, connectivity
        self.max_components, self.name = max_components, name

    def apply(self, array, selected, sampling, label, details):
        from scipy import ndimage

        mask = values_in(array, selected)
        structure = ndimage.generate_binary_structure(mask.ndim, self.connectivity)
        components, n = ndimage.label(mask, structure=structure)
        sizes = np.bincount(components.ravel())[1:]
        voxel_volume = float(np.prod(sampling))
        minimum = self.min_size / voxel_volume if self.size_unit == "mm3" else self.min_size
        order = [int(i) for i in np.argsort(sizes, kind="stable")[::-1] if sizes[i] >= minimum][: self.max_components]
        lookup = np.zeros(n + 1, dtype=np.int32)
        lookup[np.asarray(order, dtype=np.int64) + 1] = np.arange(1, len(order) + 1)
        result = lookup[components]
        if not self.relabel:  # size filter: kept voxels keep their value, dropped ones become background
            kept = result > 0
            result = array.copy()
            result[mask & ~kept] = 0
        details.update(
            found=int(n),
            kept=len(order),
            min_size=self.min_size,
            size_unit=self.size_unit,
            min_voxels=round(float(minimum), 3),
            sizes_mm3=[round(float(sizes[i]) * voxel_volume, 3) for i in order[:20]],
        )
        if not order:
            details["note"] = "no component reached the minimum size"
        if not self.relabel:
            return result, None
        names = {0: "background", **{i: f"{self.name}_{i}" for i in range(1, len(order) + 1)}}
        return result, names

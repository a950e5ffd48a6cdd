"""Brain extraction for a whole-head T1: a robust intensity model plus mm-aware morphology.

Why this shape: on T1 the brain is separated from the skull and scalp by a dark gap (CSF rim
and the inner table of the skull), but thin bright bridges (vessels, partial volume, marrow)
cross it. Thresholding keeps brain, marrow and fat together; eroding by a few mm breaks the
bridges; the component at the head's centre is the brain; a geodesic (mask-limited)
dilation by a little more than the erosion gives the brain its shape back without walking
over the gap; a closing and hole filling take in the sulcal and ventricular CSF. The
thresholds follow FSL BET's robust rules (2nd/98th percentiles, the median intensity
near the head's centre). Distances are in mm through Euclidean distance transforms with the
voxel spacing, so anisotropic volumes get round structuring elements.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from voxpipe.report_items import report_metric
from voxpipe.stage import record
from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.common.tensors import affine_of
from voxpipe_plugins.segment.base import intensity, spacing, to_label

STAGE = "segment.brain_mask"


def distance_to(mask: np.ndarray, sampling: tuple[float, ...]) -> np.ndarray:
    """Distance in mm from every voxel to the nearest voxel of ``mask`` (0 on it).

    SimpleITK's Maurer distance map (exact Euclidean, multi-threaded): about 10x faster than
    scipy's ``distance_transform_edt`` on a 1 mm head, where the transforms dominated the stage.
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8).T))
    image.SetSpacing(tuple(float(s) for s in sampling))
    signed = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.maximum(sitk.GetArrayViewFromImage(signed).T, 0.0)


def within_mm(mask: np.ndarray, distance_mm: float, sampling: tuple[float, ...]) -> np.ndarray:
    """Voxels within ``distance_mm`` of ``mask`` (a dilation by an mm ball), through one distance transform."""
    if distance_mm <= 0 or not mask.any():
        return mask.copy()
    return distance_to(mask, sampling) <= distance_mm


def erode_mm(mask: np.ndarray, distance_mm: float, sampling: tuple[float, ...]) -> np.ndarray:
    """Voxels further than ``distance_mm`` from the outside of ``mask``; the field of view's edge is not an edge."""
    if distance_mm <= 0:
        return mask.copy()
    padded = np.pad(mask, 1, mode="edge")  # the head may leave the field of view: do not erode from there
    if padded.all():
        return mask.copy()
    return (distance_to(~padded, sampling) > distance_mm)[(slice(1, -1),) * mask.ndim]


def geodesic_dilate(seed: np.ndarray, limit: np.ndarray, distance_mm: float, sampling: tuple[float, ...]) -> np.ndarray:
    """Grow ``seed`` by up to ``distance_mm`` through ``limit`` only (face steps, each axis at its own spacing)."""
    grown = seed & limit
    finest = min(sampling)
    steps = max(1, int(math.ceil(distance_mm / finest)))
    for k in range(1, steps + 1):
        axes = [i for i, s in enumerate(sampling) if math.floor(k * finest / s) > math.floor((k - 1) * finest / s)]
        if not axes:
            continue
        structure = np.zeros((3,) * seed.ndim, dtype=bool)
        centre = (1,) * seed.ndim
        structure[centre] = True
        for axis in axes:
            for offset in (0, 2):
                index = list(centre)
                index[axis] = offset
                structure[tuple(index)] = True
        grown = ndi.binary_dilation(grown, structure=structure) & limit
    return grown


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def central_component(mask: np.ndarray, centre: np.ndarray, radius_mm: float, sampling: tuple[float, ...]) -> np.ndarray:
    """The connected part of ``mask`` with the most voxels within ``radius_mm`` of ``centre`` (voxel units)."""
    labels, count = ndi.label(mask)
    if count <= 1:
        return mask
    grids = np.ogrid[tuple(slice(0, n) for n in mask.shape)]
    distance2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, sampling))
    near = labels[(distance2 <= radius_mm**2) & (labels > 0)]
    if near.size == 0:
        return _largest(mask)
    return labels == int(np.argmax(np.bincount(near)))


def superior_direction(image: Any) -> tuple[int, int]:
    """The array axis closest to RAS +z (superior) and +1/-1 for whether its index grows superiorly."""
    affine = affine_of(image)
    columns = affine[:3, :3] / np.maximum(np.linalg.norm(affine[:3, :3], axis=0), 1e-12)
    axis = int(np.argmax(np.abs(columns[2])))
    return axis, 1 if columns[2, axis] >= 0 else -1


def cut_stem(mask: np.ndarray, fraction: float, axis: int, sign: int, sampling: tuple[float, ...]) -> tuple[np.ndarray, float | None]:
    """Remove what hangs below the brain through the skull base (brainstem into the spinal cord).

    Walking inferiorly from the widest slice (along the superior axis), the first slice whose
    area is under ``fraction`` of the widest one marks the skull base; it and everything below
    go. A cropped field of view whose slices stay wide is left as it is.
    """
    areas = mask.sum(axis=tuple(i for i in range(mask.ndim) if i != axis)).astype(np.float64)
    if sign < 0:
        areas = areas[::-1]
    widest = int(np.argmax(areas))
    if areas[widest] == 0:
        return mask, None
    below = np.nonzero(areas[:widest] < fraction * areas[widest])[0]
    if below.size == 0:
        return mask, None
    cut = int(below[-1])  # the highest narrow slice under the widest one
    keep = np.zeros(areas.size, dtype=bool)
    keep[cut + 1 :] = True
    if sign < 0:
        keep = keep[::-1]
    shape = [1] * mask.ndim
    shape[axis] = -1
    out = mask & keep.reshape(shape)
    return _largest(out), round((widest - cut) * sampling[axis], 1)


CRANIUM_MM = 130.0  # vertex to below the skull base, over the scalp: the brain's centre lies in this part of a head


def cranium(head: np.ndarray, axis: int, sign: int, sampling: tuple[float, ...], depth_mm: float = CRANIUM_MM) -> np.ndarray:
    """The head's voxels within ``depth_mm`` of its top along the superior axis.

    A field of view that holds the neck and shoulders moves the whole head's centre of mass
    down into the neck; the brain's centre and intensity are looked for in the top part instead.
    """
    rows = np.nonzero(head.any(axis=tuple(i for i in range(head.ndim) if i != axis)))[0]
    if rows.size == 0:
        return head
    depth = max(1, int(round(depth_mm / sampling[axis])))
    keep = np.zeros(head.shape[axis], dtype=bool)
    if sign > 0:
        keep[max(int(rows[-1]) - depth + 1, 0) : int(rows[-1]) + 1] = True
    else:
        keep[int(rows[0]) : int(rows[0]) + depth] = True
    shape = [1] * head.ndim
    shape[axis] = -1
    return head & keep.reshape(shape)


def fill_slices(mask: np.ndarray) -> np.ndarray:
    """Fill holes slice by slice along every axis: dark CSF cut by the field of view is enclosed in its slices.

    One labelling per axis with in-slice connectivity does every slice at once; a background
    part that does not touch its slice's edge is a hole.
    """
    out = mask.copy()
    for axis in range(mask.ndim):
        structure = ndi.generate_binary_structure(mask.ndim, 1)
        index = [slice(None)] * mask.ndim
        for side in (0, 2):
            index[axis] = side
            structure[tuple(index)] = False
        labels, count = ndi.label(~out, structure=structure)
        if count == 0:
            continue
        edge = np.zeros(count + 1, dtype=bool)
        for other in range(mask.ndim):
            if other == axis:
                continue
            for end in (0, -1):
                edge[np.unique(np.take(labels, end, axis=other))] = True
        edge[0] = True
        out |= ~edge[labels]
    return out


def fill_enclosed(mask: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Fill the parts of ``~mask`` that do not reach the air around the head (``~head``).

    Plain 3D hole filling treats the field of view's edge as outside, so ventricles or sulci
    cut by a tight field of view would stay out; what separates a hole from the outside of the
    brain is whether it reaches the air, not the edge of the array.
    """
    labels, count = ndi.label(~mask)
    if count == 0:
        return mask
    reaches_air = np.zeros(count + 1, dtype=bool)
    reaches_air[np.unique(labels[~head])] = True
    if not reaches_air[1:].any():  # no air in view at all: fall back to the field of view's edge
        return ndi.binary_fill_holes(mask)
    reaches_air[0] = True
    return mask | ~reaches_air[labels]


class BrainMask:
    """Write a 0/1 brain mask (uint8, label table {0: background, 1: brain}) and optionally the masked image."""

    def __init__(
        self,
        key: str = "image",
        output_key: str = "brain",
        threshold_fraction: float = 0.4,
        background_fraction: float = 0.1,
        erosion_mm: float = 4.0,
        reconstruct_mm: float = 6.0,
        closing_mm: float = 8.0,
        centre_radius_mm: float = 30.0,
        stem_cut_fraction: float = 0.05,
        fill_holes: bool = True,
        masked_key: str | None = None,
        fill_value: float = 0.0,
    ) -> None:
        self.key, self.output_key = key, output_key
        self.threshold_fraction, self.background_fraction = threshold_fraction, background_fraction
        self.erosion_mm, self.reconstruct_mm, self.closing_mm = erosion_mm, reconstruct_mm, closing_mm
        self.centre_radius_mm, self.fill_holes, self.stem_cut_fraction = centre_radius_mm, fill_holes, stem_cut_fraction
        self.masked_key, self.fill_value = masked_key, fill_value

    def mask(
        self, values: np.ndarray, sampling: tuple[float, ...], superior_axis: int = 2, superior_sign: int = 1
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The brain mask of a spatial array, and the numbers that decided it.

        ``superior_axis``/``superior_sign``: the array axis closest to the patient's
        inferior -> superior direction and whether its index grows superiorly (from the affine).
        """
        finite = values[np.isfinite(values)]
        p2, p98 = (float(v) for v in np.percentile(finite, [2, 98]))
        if not p98 > p2:
            raise StageInputError(f"{STAGE}: image has almost no contrast (2nd and 98th percentiles both {p2:g}); is it a T1 MRI?")
        background = p2 + self.background_fraction * (p98 - p2)
        head = fill_slices(ndi.binary_fill_holes(_largest(values > background)))
        head_ml = float(head.sum()) * float(np.prod(sampling)) / 1000.0
        if not head.any():
            raise StageInputError(f"{STAGE}: no head found above the background threshold {background:g}")
        top = cranium(head, superior_axis, superior_sign, sampling)
        centre = np.array(ndi.center_of_mass(top))
        head_radius_mm = (3.0 * top.sum() * float(np.prod(sampling)) / (4.0 * math.pi)) ** (1.0 / 3.0)
        grids = np.ogrid[tuple(slice(0, n) for n in values.shape)]
        distance2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, sampling))
        core = head & (distance2 <= (0.5 * head_radius_mm) ** 2)
        brain_level = float(np.median(values[core])) if core.any() else float(np.median(values[head]))
        lower = background + self.threshold_fraction * (brain_level - background)
        candidate = head & (values >= lower)
        seed = erode_mm(candidate, self.erosion_mm, sampling)
        if not seed.any():
            raise StageInputError(
                f"{STAGE}: nothing is left after an erosion of {self.erosion_mm:g} mm; lower erosion_mm or threshold_fraction"
            )
        seed = central_component(seed, centre, self.centre_radius_mm, sampling)
        brain = geodesic_dilate(seed, candidate, self.reconstruct_mm, sampling)
        if self.closing_mm > 0:
            closed = within_mm(brain, self.closing_mm, sampling)
            brain = erode_mm(closed, self.closing_mm, sampling) | brain
        brain &= head
        cut_mm = None
        if self.stem_cut_fraction > 0:
            brain, cut_mm = cut_stem(brain, self.stem_cut_fraction, superior_axis, superior_sign, sampling)
        if self.fill_holes:
            brain = fill_enclosed(brain, head)
        info = {
            "background_threshold": round(background, 4),
            "brain_level": round(brain_level, 4),
            "lower_threshold": round(lower, 4),
            "head_ml": round(head_ml, 1),
            "stem_cut_mm_below_widest": cut_mm,
        }
        return brain, info

    def __call__(self, case: dict) -> dict:
        image = case[self.key]
        values = intensity(image, STAGE)
        if values.ndim != 3:
            raise StageInputError(f"{STAGE}: expected a 3D head volume, got a {values.ndim}D image")
        sampling = spacing(image)
        axis, sign = superior_direction(image)
        brain, info = self.mask(values, sampling, axis, sign)
        volume_ml = float(brain.sum()) * float(np.prod(sampling)) / 1000.0
        out = dict(case)
        out[self.output_key] = to_label(image, brain.astype(np.uint8), {0: "background", 1: "brain"})
        if self.masked_key is not None:
            from voxpipe_plugins.enhance.util import rewrap

            data = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float32)
            masked = np.where(brain[None], data, np.float32(self.fill_value)).astype(np.float32)
            out[self.masked_key] = rewrap(image, masked)
        record(out, STAGE, output_key=self.output_key, volume_ml=round(volume_ml, 1), **info)
        report_metric(out, "brain_mask.volume_ml", round(volume_ml, 1), unit="mL", label="brain volume")
        return out

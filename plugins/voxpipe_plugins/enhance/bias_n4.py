"""N4 bias-field correction through SimpleITK (Tustison et al. 2010), on the image's physical grid.

N4 itself is SimpleITK's: this module only moves the data in and out. Two things matter there:
the B-spline that models the field lives in physical space, so the SimpleITK image gets the
spacing and direction of the MetaTensor's affine (MONAI's RAS turned into ITK's LPS); and the
fit runs on a shrunk copy (most of N4's time), while the field is evaluated and divided out at
full resolution with ``GetLogBiasFieldAsImage``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from voxpipe.stage import record
from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.common.tensors import affine_of, spacing_of
from voxpipe_plugins.enhance.util import build_mask, checked_float, plain, refuse_constant, rewrap, source_device

STAGE = "enhance.bias_n4"
_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS -> LPS: x and y change sign
MIN_SHRUNK_VOXELS = 8


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A spatial array ``[i, j(, k)]`` and its RAS affine -> SimpleITK image with ITK index (i, j(, k)).

    3D: spacing, direction and origin come from the affine in LPS, so that
    ``TransformIndexToPhysicalPoint(i, j, k)`` is the LPS form of ``affine @ (i, j, k, 1)``.
    2D: the spacing of the first two axes; the direction stays the identity (a plane's place in
    3D cannot be written in a 2D ITK image, and N4's result does not depend on it).
    """
    dims = array.ndim
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, dtype=np.float32).T))
    image.SetSpacing(spacing_from(affine, dims))
    if dims == 3:
        lps = _LPS @ np.asarray(affine, dtype=np.float64)[:3, :]
        columns = lps[:, :3] / np.asarray(spacing_from(affine, 3))
        image.SetDirection(tuple(float(v) for v in columns.ravel()))
        image.SetOrigin(tuple(float(v) for v in lps[:, 3]))
    return image


def spacing_from(affine: np.ndarray, dims: int) -> tuple[float, ...]:
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :dims], axis=0)
    return tuple(float(n) if n > 0 else 1.0 for n in norms)


def from_sitk(image: sitk.Image) -> np.ndarray:
    """SimpleITK image -> array indexed like the array given to :func:`to_sitk`."""
    return sitk.GetArrayFromImage(image).T


def shrink_factors(shrink: int | list[int], spacing: tuple[float, ...], shape: tuple[int, ...]) -> list[int]:
    """Per-axis shrink factors: a scalar is scaled by the finest spacing over each axis's spacing.

    A 1 x 1 x 3 mm volume with shrink 4 gets (4, 4, 1): the shrunk voxels are about 4 mm on
    every axis instead of 4 x 4 x 12 mm. Each factor is capped so that at least
    ``MIN_SHRUNK_VOXELS`` voxels remain along its axis (fewer than the B-spline needs breaks the fit).
    """
    if isinstance(shrink, list):
        if len(shrink) == 1:
            wanted = shrink * len(shape)
        elif len(shrink) == len(shape):
            wanted = list(shrink)
        else:
            raise StageInputError(
                f"{STAGE}: shrink_factor has {len(shrink)} values, the image {len(shape)} spatial axes; give one per axis"
            )
    else:
        finest = min(spacing)
        wanted = [max(1, round(shrink * finest / s)) for s in spacing]
    return [int(max(1, min(f, n // MIN_SHRUNK_VOXELS))) for f, n in zip(wanted, shape)]


def control_point_counts(
    distance_mm: float | None, points: int | list[int] | None, order: int, spacing: tuple[float, ...], shape: tuple[int, ...]
) -> list[int]:
    """Control points per axis at the first level: from the knot distance (ANTs' rule) or as given."""
    dims = len(shape)
    if distance_mm is None:
        values = points if isinstance(points, list) else [points] * dims
        if len(values) == 1:
            values = values * dims
        if len(values) != dims:
            raise StageInputError(f"{STAGE}: control_points has {len(values)} values, the image {dims} spatial axes; give one per axis")
        return [int(v) for v in values]
    return [max(1, math.ceil(s * (n - 1) / distance_mm)) + order for s, n in zip(spacing, shape)]


class BiasN4:
    """Divide each channel by a smooth multiplicative field estimated by N4 (float32 out)."""

    def __init__(
        self,
        key: str = "image",
        mask_key: str | None = None,
        mask_labels: list[int] | None = None,
        mask_threshold: float | None = None,
        shrink_factor: int | list[int] = 4,
        iterations: list[int] | None = None,
        convergence_threshold: float = 0.001,
        spline_distance_mm: float | None = 200.0,
        control_points: int | list[int] | None = None,
        spline_order: int = 3,
        histogram_bins: int = 200,
        bias_fwhm: float = 0.15,
        wiener_noise: float = 0.01,
        auto_mask: str = "otsu",
        bias_key: str | None = None,
    ) -> None:
        self.key, self.mask_key, self.mask_labels, self.mask_threshold = key, mask_key, mask_labels, mask_threshold
        self.shrink_factor, self.iterations = shrink_factor, list(iterations or [50, 50, 50, 50])
        self.convergence_threshold, self.spline_distance_mm, self.control_points = convergence_threshold, spline_distance_mm, control_points
        self.spline_order, self.histogram_bins, self.bias_fwhm, self.wiener_noise = spline_order, histogram_bins, bias_fwhm, wiener_noise
        self.auto_mask, self.bias_key = auto_mask, bias_key

    def _mask(self, case: dict, image: torch.Tensor) -> tuple[np.ndarray, str]:
        """Fitting mask per channel (C, spatial...) and how it was made; voxels <= 0 are always left out."""
        given = build_mask(case, image, STAGE, self.mask_key, self.mask_labels, self.mask_threshold)
        positive = plain(image).detach().cpu().numpy() > 0
        if given is not None:
            source = "mask_key" if self.mask_key else "mask_threshold"
            return positive & given.detach().cpu().numpy(), source
        if self.auto_mask == "none":
            return positive, "all positive voxels"
        masks = []
        for channel in plain(image).detach().cpu().numpy():
            values = channel[channel > 0]
            threshold = _otsu(values) if values.size else 0.0
            masks.append(channel > threshold)
        return np.stack(masks), "otsu"

    def __call__(self, case: dict) -> dict:
        image, low, high = checked_float(case[self.key], STAGE)
        refuse_constant(low, high, STAGE, "bias-field correction")
        if high <= 0:
            raise StageInputError(
                f"{STAGE}: image has no positive voxels (max {high:g}); N4 models a multiplicative field on positive intensities"
            )
        affine = affine_of(image)
        spacing = spacing_of(image)
        shape = tuple(int(n) for n in image.shape[1:])
        factors = shrink_factors(self.shrink_factor, spacing, shape)
        shrunk_shape = tuple(math.ceil(n / f) for n, f in zip(shape, factors))
        shrunk_spacing = tuple(s * f for s, f in zip(spacing, factors))
        points = control_point_counts(self.spline_distance_mm, self.control_points, self.spline_order, shrunk_spacing, shrunk_shape)
        masks, mask_source = self._mask(case, image)
        data = plain(image).detach().cpu().numpy()
        corrected, fields, details = [], [], []
        for c in range(data.shape[0]):
            count = int(masks[c].sum())
            if count < 2 * self.histogram_bins:
                raise StageInputError(
                    f"{STAGE}: the fitting mask ({mask_source}) holds {count} voxels in channel {c}; "
                    f"N4 needs at least {2 * self.histogram_bins} (set `mask_key`, `mask_threshold` or auto_mask: none)"
                )
            out, log_field, info = self._correct(data[c], masks[c], affine, factors, points)
            corrected.append(out)
            fields.append(log_field)
            details.append(info)
        device = source_device(image)  # SimpleITK runs on the CPU; the result goes back where the image was
        out = dict(case)
        out[self.key] = rewrap(image, torch.from_numpy(np.stack(corrected).astype(np.float32, copy=False)).to(device))
        if self.bias_key is not None:
            out[self.bias_key] = rewrap(image, torch.from_numpy(np.stack(fields).astype(np.float32, copy=False)).to(device))
        record(
            out,
            STAGE,
            shrink_factors=factors,
            control_points=points,
            iterations=self.iterations,
            convergence_threshold=self.convergence_threshold,
            mask=mask_source,
            channels=details,
        )
        return out

    def _correct(
        self, channel: np.ndarray, mask: np.ndarray, affine: np.ndarray, factors: list[int], points: list[int]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        full = to_sitk(channel, affine)
        mask_image = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8).T))
        mask_image.CopyInformation(full)
        if any(f > 1 for f in factors):
            small = sitk.Shrink(full, factors)
            small_mask = sitk.Shrink(mask_image, factors)
        else:
            small, small_mask = full, mask_image
        corrector = sitk.N4BiasFieldCorrectionImageFilter()
        corrector.SetMaximumNumberOfIterations([int(i) for i in self.iterations])
        corrector.SetConvergenceThreshold(float(self.convergence_threshold))
        corrector.SetNumberOfControlPoints([int(p) for p in points])
        corrector.SetSplineOrder(int(self.spline_order))
        corrector.SetNumberOfHistogramBins(int(self.histogram_bins))
        corrector.SetBiasFieldFullWidthAtHalfMaximum(float(self.bias_fwhm))
        corrector.SetWienerFilterNoise(float(self.wiener_noise))
        corrector.SetMaskLabel(1)
        try:
            corrector.Execute(small, small_mask)
            log_field = from_sitk(corrector.GetLogBiasFieldAsImage(full)).astype(np.float32)
        except RuntimeError as error:  # ITK exceptions carry multi-line C++ context: keep its last line
            last = [line.strip() for line in str(error).splitlines() if line.strip()][-1:] or ["unknown error"]
            raise StageInputError(f"{STAGE}: SimpleITK's N4 failed ({last[0][:200]}); check the mask and shrink_factor") from None
        # N4 leaves the field's overall scale free (its mean log drifts with the fit): centre it on the
        # mask so the corrected image keeps the input's intensity scale (thresholds set on it stay valid).
        log_field -= np.float32(log_field[mask].mean())
        corrected = (channel / np.exp(log_field)).astype(np.float32)
        inside = log_field[mask]
        info = {
            "mask_voxels": int(mask.sum()),
            "iterations_run": int(corrector.GetElapsedIterations()),
            "convergence": round(float(corrector.GetCurrentConvergenceMeasurement()), 6),
            "field_range": [round(float(np.exp(inside.min())), 4), round(float(np.exp(inside.max())), 4)],
        }
        return corrected, log_field, info


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of the positive intensities (scikit-image)."""
    from skimage.filters import threshold_otsu

    if values.min() == values.max():
        return float(values.min()) - 1.0
    return float(threshold_otsu(values))

"""Registers the `denoise.*` stages: gaussian, median, bilateral, nlm, tv, wavelet.

Light on purpose (pydantic + voxpipe only): the implementations, and torch, MONAI and
scikit-image with them, are imported when a pipeline is built. Spatial extents are in mm
(pixels for 2D photos without spacing) and converted per axis with the voxel spacing.
Strengths are multiples of the noise level σ, estimated from each image unless `sigma`
is given (see docs/denoising.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe_plugins.common.params import ImageKeyParams
from voxpipe_plugins.denoise.cnn_spec import register_cnn_stage, register_cnn_trainer

Backend = Literal["auto", "torch", "skimage"]

SIGMA_FIELD = dict(
    gt=0,
    le=1e6,
    description="Noise standard deviation in image intensity units; unset: estimated from each image "
    "(robust MAD of the finest Haar wavelet detail).",
)
BACKEND_DESCRIPTION = (
    "`torch`: the built-in torch implementation (CPU threads, or CUDA when the run's device is a GPU); "
    "`skimage`: scikit-image's (CPU); `auto`: torch on CUDA, otherwise the one measured faster on CPU (torch)."
)


class GaussianParams(ImageKeyParams):
    sigma_mm: float = Field(
        1.0,
        gt=0,
        le=50,
        description="Standard deviation in millimetres (pixels for 2D photos), converted per axis using the voxel spacing.",
    )
    truncated: float = Field(4.0, gt=0, le=10, description="Kernel half-width in standard deviations.")
    backend: Literal["auto", "scipy", "torch"] = Field(
        "auto",
        description="`auto`: torch (MONAI separable convolution) on CUDA, "
        "scipy.ndimage on the CPU (4x faster and 20x less memory there); both give the same values.",
    )


class MedianParams(ImageKeyParams):
    radius_mm: float = Field(
        1.0,
        gt=0,
        le=20,
        description="Window half-width in mm (pixels for 2D photos); the nearest whole number of voxels per axis (halves down), so 1 mm on 0.7 x 0.7 x 5 mm voxels is a 3 x 3 x 1 window.",
    )


class BilateralParams(ImageKeyParams):
    sigma_spatial_mm: float = Field(
        1.0, gt=0, le=20, description="Standard deviation of the spatial Gaussian in mm, converted per axis with the spacing."
    )
    truncated: float = Field(
        2.0, gt=0, le=5, description="Window half-width in spatial standard deviations (rounded to whole voxels per axis)."
    )
    sigma_color: float | None = Field(
        None, gt=0, description="Standard deviation of the intensity Gaussian (intensity units); unset: color_factor x noise sigma."
    )
    color_factor: float = Field(
        2.5, gt=0, le=20, description="Intensity Gaussian width as a multiple of the noise sigma (used when sigma_color is unset)."
    )
    sigma: float | None = Field(None, **SIGMA_FIELD)
    backend: Backend = Field("auto", description=BACKEND_DESCRIPTION + " scikit-image's filter is 2D only.")


class NLMParams(ImageKeyParams):
    patch_radius_mm: float | None = Field(
        None,
        gt=0,
        le=20,
        description="Patch half-width in mm, the nearest whole number of voxels per axis (halves down); unset: two voxels of the finest axis (5x5(x5) patches).",
    )
    search_radius_mm: float | None = Field(
        None,
        gt=0,
        le=50,
        description="Search-window half-width in mm (at most 15 voxels per axis); unset, in voxels of the finest axis: 3 for 2D images "
        "and thick-slice volumes (an axis of twice the finest spacing or more), 1 for volumes fine on every axis "
        "(the sizes measured best on real brain MR, CT and MR slices; piecewise-flat phantoms prefer larger windows).",
    )
    h_factor: float = Field(
        0.8,
        gt=0,
        le=10,
        description="Filtering strength: h = h_factor x noise sigma. Higher smooths more (0.8 measured best on real MR and CT).",
    )
    sigma: float | None = Field(None, **SIGMA_FIELD)
    noise: Literal["gaussian", "rician"] = Field(
        "gaussian",
        description="`rician`: magnitude MR; sigma from bright blocks (Rician-aware), weighted average of squared intensities "
        "minus 2 sigma^2 (E[M^2] = A^2 + 2 sigma^2), square root: removes the noise floor in dark regions (torch backend).",
    )
    aggregation: Literal["patch", "pixel"] = Field(
        "patch",
        description="`patch`: every patch containing a voxel votes for it (blockwise NLM, better PSNR); `pixel`: each voxel only from its own patch (classic fast NLM).",
    )
    backend: Backend = Field(
        "auto",
        description=BACKEND_DESCRIPTION + " scikit-image uses one patch size and distance for all axes (the largest), pixel aggregation.",
    )

    @model_validator(mode="after")
    def _rician_needs_torch(self):
        if self.noise == "rician" and self.backend == "skimage":
            raise ValueError("noise `rician` needs backend `torch` or `auto` (scikit-image has no Rician mode)")
        return self


class TVParams(ImageKeyParams):
    weight: float | None = Field(
        None, gt=0, description="Regularisation weight (intensity units; larger is flatter); unset: weight_factor x noise sigma."
    )
    weight_factor: float = Field(0.7, gt=0, le=20, description="Weight as a multiple of the noise sigma (used when weight is unset).")
    sigma: float | None = Field(None, **SIGMA_FIELD)
    eps: float = Field(2.0e-4, gt=0, le=0.1, description="Stop when the energy changes by less than eps x the initial energy.")
    max_iter: int = Field(200, ge=1, le=5000, description="Maximum number of Chambolle iterations.")
    backend: Backend = Field(
        "auto",
        description=BACKEND_DESCRIPTION
        + " The torch version weighs finite differences by min_spacing / spacing per axis; scikit-image treats voxels as cubes.",
    )


class WaveletParams(ImageKeyParams):
    wavelet: Literal["haar", "db1", "db2", "db4", "sym4", "sym8", "coif1", "coif3", "bior2.2", "bior4.4"] = Field(
        "db1", description="PyWavelets wavelet; db1 (Haar) measured best on the test images when cycle-spun."
    )
    mode: Literal["soft", "hard"] = Field("soft", description="Thresholding of the detail coefficients.")
    method: Literal["BayesShrink", "VisuShrink"] = Field(
        "BayesShrink", description="`BayesShrink`: one threshold per sub-band; `VisuShrink`: the universal threshold (smoother)."
    )
    levels: int | None = Field(
        None,
        ge=1,
        le=10,
        description="Decomposition levels (dyadic scales in voxels); unset: the maximum for the image size minus 3, at least 1.",
    )
    sigma: float | None = Field(None, **SIGMA_FIELD)
    cycle_spins: int = Field(
        1,
        ge=0,
        le=4,
        description="Average over shifts of 0..cycle_spins voxels per axis (translation invariance); cost (cycle_spins + 1)^ndim transforms.",
    )


def _spec(id: str, summary: str, params: type, factory: str, description: str) -> StageSpec:
    return StageSpec(
        id=id,
        kind=StageKind.DENOISER,
        summary=summary,
        params=params,
        factory=factory,
        reads=("{key}",),
        writes=("{key}",),
        description=description,
    )


COMMON = (
    "Works on channel-first 2D (C x X x Y) and 3D (C x X x Y x Z) images, each channel on its own; "
    "integer images become float32; NaN/Inf voxels and other shapes are refused with one line; constant "
    "channels pass through unchanged. Keeps the affine and metadata and records what it did (sigma, sizes "
    "in mm and voxels, backend, device)."
)


@hookimpl
def voxpipe_register_stages(register):
    register(
        _spec(
            "denoise.gaussian",
            "Gaussian smoothing with sigma in mm, respecting anisotropic spacing (scipy on the CPU, MONAI separable convolution on the GPU).",
            GaussianParams,
            "voxpipe_plugins.denoise.gaussian:GaussianDenoise",
            "The baseline: removes noise and blurs edges alike. " + COMMON,
        )
    )
    register(
        _spec(
            "denoise.median",
            "Median filter with the window radius in mm, converted per axis with the spacing (MONAI MedianSmooth, CPU or GPU).",
            MedianParams,
            "voxpipe_plugins.denoise.median:MedianDenoise",
            "Removes impulse noise and keeps straight edges; rounds corners and thin lines. " + COMMON,
        )
    )
    register(
        _spec(
            "denoise.bilateral",
            "Bilateral filter: Gaussian in space (mm) x Gaussian in intensity (a multiple of the estimated noise); torch 2D/3D or scikit-image 2D.",
            BilateralParams,
            "voxpipe_plugins.denoise.bilateral:BilateralDenoise",
            "Averages neighbours that are both near and similar in intensity, so edges stronger than the intensity "
            "width survive. " + COMMON,
        )
    )
    register(
        _spec(
            "denoise.nlm",
            "Non-local means (fast, patch-wise), patch and search radii in mm, h from the estimated noise; torch on CPU threads or CUDA, or scikit-image.",
            NLMParams,
            "voxpipe_plugins.denoise.nlm:NLMDenoise",
            "Averages voxels whose surrounding patches look alike, wherever they are in the search window: the "
            "strongest classical denoiser here for CT and MR. The torch implementation sums squared patch "
            "differences with separable box filters, one search offset at a time over cache-sized tiles (see "
            "docs/denoising.md). " + COMMON,
        )
    )
    register(
        _spec(
            "denoise.tv",
            "Total-variation (ROF) denoising, Chambolle's algorithm, weight from the estimated noise; torch (CPU/CUDA) or scikit-image.",
            TVParams,
            "voxpipe_plugins.denoise.tv:TVDenoise",
            "Finds the image closest to the input with the least total variation: flat regions become flat, "
            "edges stay sharp, fine texture is lost (staircasing on ramps). " + COMMON,
        )
    )
    register(
        _spec(
            "denoise.wavelet",
            "Wavelet shrinkage (BayesShrink or VisuShrink, cycle-spun), threshold from the estimated noise (scikit-image + PyWavelets, CPU).",
            WaveletParams,
            "voxpipe_plugins.denoise.wavelet:WaveletDenoise",
            "Shrinks the detail coefficients of an orthogonal wavelet transform. " + COMMON,
        )
    )
    register_cnn_stage(register)


@hookimpl
def voxpipe_register_trainers(register):
    register_cnn_trainer(register)

"""Noise simulation for training ``denoise.cnn``, and the intensity scaling shared with inference.

Three noise models, each applied to a clean image (NumPy, float):

- ``gaussian``: additive white noise of standard deviation σ;
- ``rician``: magnitude MR, ``|x + n₁ + i n₂|`` with n₁, n₂ ~ N(0, σ²): Gaussian-like on
  tissue, a positive Rayleigh floor on the background;
- ``ct-lowdose``: quantum noise where it arises, in the projections. The image (HU) becomes
  attenuation (μ = μ_water (1 + HU/1000)), scikit-image's ``radon`` gives line integrals p,
  the detector counts ``N ~ Poisson(I₀ · dose · e^{-p})``, and ``-log(N / (I₀ · dose))``
  is the noisy sinogram. Only the difference of the noisy and clean sinograms is
  reconstructed (``iradon``, ramp filter) and added to the clean image, so the target stays
  the clean image and the noise keeps CT's streaky, correlated, dose- and path-dependent
  texture without the reconstruction's own blur entering the training pair.

The network sees images scaled by a robust range (:func:`robust_range`): percentiles of the
noisy input for MR and photos (the scale of an MR image is arbitrary), a fixed HU window
for CT (HU are absolute, so the model learns what air, fat and bone look like).
"""

from __future__ import annotations

import math

import numpy as np

NOISE_MODELS = ("gaussian", "rician", "ct-lowdose")

CT_LOW_HU, CT_HIGH_HU = -1000.0, 1000.0
"""CT models work on (HU + 1000) / 2000: air 0, water 0.5, dense bone 1."""

PERCENTILES = (0.5, 99.5)
"""Robust range of MR / photo inputs: the scale maps the 0.5th..99.5th percentiles to 0..1."""

MU_WATER_PER_MM = 0.0192
"""Linear attenuation of water at ~70 keV effective energy (1/mm)."""

FULL_DOSE_PHOTONS = 1.0e5
"""Incident photons per detector bin at full dose (a typical value in low-dose CT simulation studies)."""


def robust_range(image: np.ndarray, noise: str) -> tuple[float, float]:
    """(low, scale) such that ``(image - low) / scale`` is what the network sees."""
    if noise == "ct-lowdose":
        return CT_LOW_HU, CT_HIGH_HU - CT_LOW_HU
    values = np.asarray(image, dtype=np.float32).ravel()
    if values.size > 1 << 21:  # a strided sample is as good for percentiles and much faster
        values = values[:: values.size // (1 << 21) + 1]
    low, high = (float(v) for v in np.percentile(values, PERCENTILES))
    if noise == "rician":
        low = min(0.0, low)  # magnitude images: keep 0 at 0, the Rician floor is relative to it
    scale = high - low
    if not math.isfinite(scale) or scale <= 0:
        scale = float(values.max() - values.min()) or 1.0
    return low, scale


def add_gaussian(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return (clean + rng.normal(0.0, sigma, clean.shape)).astype(np.float32)


def add_rician(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    real = clean + rng.normal(0.0, sigma, clean.shape)
    imag = rng.normal(0.0, sigma, clean.shape)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


def lowdose_ct(clean_hu: np.ndarray, dose: float, rng: np.random.Generator, pixel_mm: float = 0.8, angles: int | None = None) -> np.ndarray:
    """A 2D CT slice (HU) as it would look at ``dose`` (fraction of :data:`FULL_DOSE_PHOTONS`).

    Poisson counts on the projections, reconstructed by filtered back-projection; see the
    module docstring. ``pixel_mm`` sets the path lengths (and so how many photons get through).
    """
    from skimage.transform import iradon, radon

    image = np.asarray(clean_hu, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"low-dose CT is simulated on 2D slices, got shape {image.shape}")
    size = max(image.shape)
    square = np.full((size, size), CT_LOW_HU)
    y0, x0 = (size - image.shape[0]) // 2, (size - image.shape[1]) // 2
    square[y0 : y0 + image.shape[0], x0 : x0 + image.shape[1]] = image
    mu = np.clip(MU_WATER_PER_MM * (1.0 + square / 1000.0), 0.0, None) * pixel_mm
    theta = np.linspace(0.0, 180.0, angles or size, endpoint=False)
    sinogram = radon(mu, theta=theta, circle=False)
    photons = FULL_DOSE_PHOTONS * dose
    counts = rng.poisson(photons * np.exp(-sinogram)).astype(np.float64)
    noisy_sinogram = -np.log(np.maximum(counts, 1.0) / photons)
    delta_mu = iradon(noisy_sinogram - sinogram, theta=theta, circle=False, filter_name="ramp", output_size=size)
    delta_hu = delta_mu / pixel_mm / MU_WATER_PER_MM * 1000.0
    return (image + delta_hu[y0 : y0 + image.shape[0], x0 : x0 + image.shape[1]]).astype(np.float32)


def simulate(clean: np.ndarray, noise: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy copy of ``clean``: ``level`` is σ (image units) for gaussian/rician, the dose fraction for ct-lowdose."""
    if noise == "gaussian":
        return add_gaussian(clean, level, rng)
    if noise == "rician":
        return add_rician(clean, level, rng)
    if noise == "ct-lowdose":
        if clean.ndim == 2:
            return lowdose_ct(clean, level, rng)
        return np.stack([lowdose_ct(s, level, rng) for s in clean])
    raise ValueError(f"unknown noise model `{noise}`; choose one of {', '.join(NOISE_MODELS)}")

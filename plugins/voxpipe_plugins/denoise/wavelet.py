"""Wavelet shrinkage (scikit-image + PyWavelets, CPU), optionally cycle-spun.

The image is decomposed with an orthogonal wavelet, the detail coefficients are shrunk
(BayesShrink: a threshold per sub-band from σ² / σ_signal; VisuShrink: the universal
threshold σ·sqrt(2 log n)) and the image is rebuilt. Cycle spinning averages the result
over shifted copies (``cycle_spins`` voxels per axis), which removes the blocky artefacts
of the decimated transform at the cost of ``(cycle_spins + 1)^ndim`` transforms.

Wavelet levels are dyadic scales in voxels: there is no physical-unit parameter here. On
a CUDA device the data is moved to the CPU and back (PyWavelets is CPU only); the
history records ``device: cpu``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from voxpipe_plugins.denoise.base import Denoiser, rounded


class WaveletDenoise(Denoiser):
    op = "denoise.wavelet"

    def __init__(
        self,
        key: str = "image",
        wavelet: str = "db1",
        mode: str = "soft",
        method: str = "BayesShrink",
        levels: int | None = None,
        sigma: float | None = None,
        cycle_spins: int = 1,
        device: str = "cpu",
    ) -> None:
        super().__init__(key, device)
        self.wavelet, self.mode, self.method, self.levels = wavelet, mode, method, levels
        self.sigma, self.cycle_spins = sigma, cycle_spins

    def denoise_channel(self, x: torch.Tensor, spacing: tuple[float, ...]) -> tuple[torch.Tensor, dict]:
        import pywt
        from skimage.restoration import cycle_spin, denoise_wavelet

        sigma, how = self.noise_sigma(x, self.sigma)
        array = x.detach().cpu().numpy().astype(np.float32)
        max_levels = pywt.dwtn_max_level(array.shape, self.wavelet)
        levels = max(1, min(self.levels if self.levels is not None else max(1, max_levels - 3), max(1, max_levels)))
        info = {
            "sigma": rounded(sigma),
            "sigma_source": how,
            "wavelet": self.wavelet,
            "mode": self.mode,
            "method": self.method,
            "levels": levels,
            "cycle_spins": self.cycle_spins,
            "backend": "skimage",
            "device": "cpu",
        }
        if sigma <= 0:
            return x.clone(), {**info, "skipped": "no noise detected (sigma 0)"}
        kwargs = dict(sigma=sigma, wavelet=self.wavelet, mode=self.mode, wavelet_levels=levels, method=self.method, rescale_sigma=True)
        with warnings.catch_warnings():
            # PyWavelets warns that a 1-level transform of a tiny image has boundary effects: expected.
            warnings.simplefilter("ignore", UserWarning)
            if self.cycle_spins > 0:
                result = cycle_spin(array, denoise_wavelet, max_shifts=self.cycle_spins, func_kw=kwargs, workers=1)
            else:
                result = denoise_wavelet(array, **kwargs)
        return torch.from_numpy(np.ascontiguousarray(result, dtype=np.float32)).to(x.device), info

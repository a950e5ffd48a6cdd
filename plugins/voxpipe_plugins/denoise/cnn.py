"""``denoise.cnn``: a learned residual denoiser run through MONAI's sliding-window inferer.

Each channel is scaled to the range the model was trained on (:func:`noise_models.robust_range`),
given to the network with its noise level (σ given, or estimated by the family's MAD
estimator, in the scaled units), and scaled back. A 2D model denoises a 3D image slice by
slice (the slices go through the inferer as one batch); a 3D model needs a 3D image.
A hybrid model (three input channels) also gets ``denoise.nlm``'s estimate of the scaled
image, computed once on the whole image (in 3D for a volume) with the settings it was
trained with (:mod:`.cnn_guide`), and sliced like the image.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from voxpipe.stage import StageContext
from voxpipe_plugins.common.checks import StageInputError
from voxpipe_plugins.denoise.base import Denoiser, rounded
from voxpipe_plugins.denoise.cnn_guide import nlm_guide
from voxpipe_plugins.denoise.cnn_weights import load_model, shipped_path
from voxpipe_plugins.denoise.noise_models import NOISE_MODELS, robust_range

DEFAULT_ROI = {2: 128, 3: 64}

WHOLE_IMAGE_BATCH = 32
"""Images (slices) per network call when each fits in one window."""


ISOTROPIC_RATIO = 1.5
"""``slice_axis: auto`` on voxels whose spacings differ by at most this factor: slice along all three
axes and average (the 2D model then sees the volume's 3D redundancy from three sides); on thicker
slices, only across the thickest axis (in-plane slices are what the model was trained on)."""


class CNNDenoise(Denoiser):
    op = "denoise.cnn"

    def __init__(
        self,
        key: str = "image",
        model: str | None = None,
        weights: str | None = None,
        noise: str = "auto",
        sigma: float | None = None,
        strength: float = 1.0,
        slice_axis: str | int = "auto",
        roi_size: list[int] | None = None,
        overlap: float = 0.25,
        sw_batch_size: int = 8,
        amp: bool = True,
        device: str = "cpu",
        context: StageContext | None = None,
    ) -> None:
        super().__init__(key, device)
        if (model is None) == (weights is None):
            raise ValueError("give exactly one of `model` or `weights`")
        path = shipped_path(model) if model else (context.resolve_path(weights) if context else Path(weights))
        self.network, card = load_model(path)
        self.network.to(self.device)
        self.source = f"shipped:{model}" if model else "local file"
        self.arch = self.network.arch
        trained_for = card.get("noise")
        self.noise = noise if noise != "auto" else (trained_for if trained_for in NOISE_MODELS else "gaussian")
        self.trained_for = trained_for
        self.sigma, self.strength, self.slice_axis = sigma, strength, slice_axis
        dims = self.arch.spatial_dims
        roi = list(roi_size) if roi_size else [DEFAULT_ROI[dims]] * dims
        if len(roi) != dims:
            raise ValueError(f"roi_size {roi} has {len(roi)} values but the model is {dims}D")
        self.roi, self.overlap, self.sw_batch_size = roi, overlap, sw_batch_size
        self.amp = bool(amp and self.device.type == "cuda")

    def _axes(self, spacing: tuple[float, ...]) -> list[int]:
        """The slicing axes of a 2D model on a 3D image (several: the results are averaged)."""
        if self.slice_axis == "all":
            return [0, 1, 2]
        if self.slice_axis != "auto":
            return [int(self.slice_axis)]
        largest = max(spacing)
        if largest <= ISOTROPIC_RATIO * min(spacing):
            return [0, 1, 2]
        return [max(i for i, s in enumerate(spacing) if s >= largest * (1 - 1e-6))]

    def _net(self, t: torch.Tensor, level: float) -> torch.Tensor:
        """The network on (B, 1 or 2, ...): channel 1, when there, is the NLM guide."""
        return self.network(t[:, :1], level, t[:, 1:] if t.shape[1] > 1 else None)

    def _infer(self, batch: torch.Tensor, level: float) -> torch.Tensor:
        from monai.inferers import SlidingWindowInferer

        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        if all(n <= r for r, n in zip(self.roi, batch.shape[2:])):
            # each image fits in one window: what the inferer would do, without its per-image loop
            with torch.inference_mode(), autocast:
                return torch.cat([self._net(chunk, level).float() for chunk in batch.split(WHOLE_IMAGE_BATCH)])
        roi = [min(r, n) for r, n in zip(self.roi, batch.shape[2:])]  # no padding of short axes up to the window
        inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=self.sw_batch_size, overlap=self.overlap, mode="gaussian")
        with torch.inference_mode(), autocast:
            out = inferer(batch, lambda t: self._net(t, level))
        return out.float() if isinstance(out, torch.Tensor) else torch.as_tensor(out).float()

    def denoise_channel(self, x: torch.Tensor, spacing: tuple[float, ...]) -> tuple[torch.Tensor, dict[str, Any]]:
        dims = self.arch.spatial_dims
        if dims == 3 and x.ndim == 2:
            raise StageInputError(f"{self.op}: this is a 3D model and the image is 2D; use a 2D model (the shipped ones are 2D)")
        low, scale = robust_range(x.detach().cpu().numpy(), self.noise)
        sigma, how = self.noise_sigma(x, self.sigma, rician=self.noise == "rician")
        info: dict[str, Any] = {
            "weights": self.source,
            "trained_for": self.trained_for,
            "noise": self.noise,
            "model_dims": dims,
            "sigma": rounded(sigma),
            "sigma_source": how,
            "scale": [rounded(low, 4), rounded(scale, 4)],
        }
        if sigma <= 0:
            return x.clone(), {**info, "skipped": "no noise detected (sigma 0)"}
        level = self.strength * sigma / scale
        scaled = ((x.float() - low) / scale).contiguous()
        stack = scaled[None]
        if self.arch.guide == "nlm":
            stack = torch.stack([scaled, nlm_guide(scaled, level, spacing, self.noise)])
            info["guide"] = "denoise.nlm"
        if dims == 2 and x.ndim == 3:
            axes = self._axes(spacing)
            out = sum(self._infer(stack.movedim(a + 1, 0), level)[:, 0].movedim(0, a) for a in axes) / len(axes)
            info["slice_axis"] = axes[0] if len(axes) == 1 else axes
        else:
            out = self._infer(stack[None], level)[0, 0]
        info.update(level=rounded(level), strength=self.strength, roi_size=self.roi, device=str(x.device), amp=self.amp)
        return out * scale + low, info

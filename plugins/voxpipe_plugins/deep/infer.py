"""`segment.deep`: a MONAI network with local weights, run with MONAI's SlidingWindowInferer."""

from __future__ import annotations

import itertools
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

from voxpipe.stage import StageContext, record
from voxpipe_plugins.common.checks import StageInputError, float_image
from voxpipe_plugins.common.tensors import like
from voxpipe_plugins.deep.sidecar import DeepSidecar, read_deep_sidecar
from voxpipe_plugins.deep.weights import bound_args, describe, fit_weights, make_network, read_state_dict

STAGE = "segment.deep"


def resolve(device: str | None, default: str) -> torch.device:
    """``None`` -> the run's device; ``auto`` -> CUDA when there is one; CUDA that is absent -> clear error."""
    name = device or default
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device `{name}` requested but CUDA is not available; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device `{name}` does not exist ({torch.cuda.device_count()} CUDA devices)")
    return dev


def default_label_names(out_channels: int, output: str) -> dict[int, str]:
    if output == "threshold":
        if out_channels == 1:
            return {0: "background", 1: "foreground"}
        return {0: "background", **{c + 1: f"class_{c + 1}" for c in range(out_channels)}}
    return {0: "background", **{c: f"class_{c}" for c in range(1, out_channels)}}


def count_windows(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> int:
    """Windows MONAI's sliding window visits (after padding a small image up to the roi)."""
    total = 1
    for size, r in zip(shape, roi):
        if size <= r:
            continue
        interval = max(int(r * (1 - overlap)), 1)
        total *= math.ceil((size - r) / interval) + 1
    return total


class DeepSegmenter:
    """Callable ``case -> case`` (a MONAI dictionary transform) that writes a label map on the image grid."""

    def __init__(
        self,
        *,
        network: str,
        roi_size: list[int],
        key: str = "image",
        output_key: str = "label",
        args: dict[str, Any] | None = None,
        weights: str | Path | None = None,
        overlap: float = 0.25,
        mode: str = "gaussian",
        sigma_scale: float = 0.125,
        sw_batch_size: int = 1,
        sw_device: str | None = None,
        device: str | None = None,
        amp: bool = True,
        flip_axes: list[int] | tuple[int, ...] = (),
        output: str = "argmax",
        threshold: float = 0.5,
        label_names: dict[int, str] | None = None,
        activation: str = "auto",
        padding_mode: str = "constant",
        invert_to: str | None = None,
        invert: str = "probabilities",
        invert_interp: str = "bilinear",
        invert_padding: str = "border",
        channel_values: list[list[int]] | None = None,
        keep_largest: list[int] | None = None,
        keep_largest_after_invert: bool = False,
        drop_key: bool = False,
        context: StageContext | None = None,
        model: torch.nn.Module | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        context = context or StageContext()
        self.key, self.output_key = key, output_key
        self.network_name, self.args = network, dict(args or {})
        arguments = bound_args(network, self.args)
        self.in_channels = int(arguments.get("in_channels", 1))
        self.out_channels = int(arguments.get("out_channels", arguments.get("num_classes", 1)))
        self.spatial_dims = int(arguments.get("spatial_dims", 3))
        if len(roi_size) != self.spatial_dims:
            raise ValueError(f"roi_size {list(roi_size)} has {len(roi_size)} values but {network} is {self.spatial_dims}D")
        self.roi_size = tuple(int(r) for r in roi_size)
        self.overlap, self.mode, self.sw_batch_size = overlap, mode, sw_batch_size
        self.output, self.threshold = output, threshold
        if output == "argmax" and self.out_channels < 2:
            raise ValueError(f"output `argmax` needs out_channels >= 2 (got {self.out_channels}); use output: threshold for one channel")
        self.flip_axes = tuple(int(a) for a in flip_axes)
        self.activation = {"auto": "softmax" if output == "argmax" else "sigmoid"}.get(activation, activation)
        self.invert_to, self.invert, self.invert_interp, self.invert_padding = invert_to, invert, invert_interp, invert_padding
        self.channel_values = [(int(c), int(v)) for c, v in (channel_values or [])]
        self.keep_largest = list(keep_largest) if keep_largest else None
        self.keep_largest_after_invert = keep_largest_after_invert
        self.drop_key = drop_key
        self.sw_device = resolve(sw_device, context.device)
        self.device = resolve(device, context.device)
        self.amp = bool(amp and self.sw_device.type == "cuda")
        self.weights_name = None
        sidecar = DeepSidecar()
        if model is None:
            if weights is None:
                raise ValueError("`weights` is not set: name the weights file (.safetensors, .pt) to run this network with")
            path = context.resolve_path(weights)
            sidecar = read_deep_sidecar(path)  # validated before anything is built
            model = make_network(network, self.args)
            what = describe(network, self.args)
            if sidecar.network and (sidecar.network, sidecar.args) != (network, self.args):
                said = describe(sidecar.network, sidecar.args or {})
                what += f" (the file's sidecar says {said if len(said) <= 200 else said[:197] + '...'})"
            fit_weights(model, read_state_dict(path, weights_sha256), what, path.name)
            self.weights_name = path.name
        self.model = model.to(self.sw_device).eval().requires_grad_(False)
        names = label_names or {int(k): v for k, v in (sidecar.label_names or {}).items()}
        self.label_names = dict(names) if names else default_label_names(self.out_channels, output)
        self.inferer = SlidingWindowInferer(
            roi_size=self.roi_size,
            sw_batch_size=sw_batch_size,
            overlap=overlap,
            mode=mode,
            sigma_scale=sigma_scale,
            padding_mode=padding_mode,
            sw_device=self.sw_device,
            device=self.device,
            progress=False,
        )

    def _forward(self, window: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext():
            out = self.model(window)
        return out.float() if out.dtype != torch.float32 else out

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.activation == "softmax":
            return torch.softmax(logits, dim=1)
        return torch.sigmoid(logits) if self.activation == "sigmoid" else logits

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """(1, C_in, *spatial) -> (1, C_out, *spatial) on ``device``: logits (no TTA) or mean probabilities (TTA)."""
        if not self.flip_axes:
            return self.inferer(x, self._forward), False
        total = None
        combos = [c for n in range(len(self.flip_axes) + 1) for c in itertools.combinations(self.flip_axes, n)]
        for combo in combos:
            dims = [a + 2 for a in combo]
            xi = torch.flip(x, dims) if dims else x
            p = self._activate(self.inferer(xi, self._forward))
            p = torch.flip(p, dims) if dims else p
            total = p if total is None else total.add_(p)
        return total.div_(len(combos)), True

    def to_label(self, out: torch.Tensor, probabilities: bool) -> torch.Tensor:
        """Network output (1, C, ...) -> label map (1, ...) or (C, ...) uint8, chunked along the first axis to save memory."""
        out = out[0]
        if self.output == "argmax":
            label = torch.empty((1, *out.shape[1:]), dtype=torch.uint8 if self.out_channels <= 256 else torch.int32, device=out.device)
            step = max(1, (1 << 24) // max(1, out[0, 0].numel()))
            for i in range(0, out.shape[1], step):
                label[0, i : i + step] = out[:, i : i + step].argmax(dim=0).to(label.dtype)
            return label
        cut = self.threshold if probabilities or self.activation == "none" else math.log(self.threshold / (1 - self.threshold))
        label = (out > cut).to(torch.uint8)
        if self.channel_values:  # a bundle's `torch.where(x[[c]] > 0, v, ...)` lambda: the first channel set wins
            merged = torch.zeros((1, *label.shape[1:]), dtype=torch.uint8 if max(v for _, v in self.channel_values) < 256 else torch.int32)
            merged = merged.to(label.device)
            for channel, value in reversed(self.channel_values):
                merged[0][label[channel] > 0] = value
            label = merged
        return label

    def _keep_largest(self, label: torch.Tensor) -> torch.Tensor:
        from monai.transforms import KeepLargestConnectedComponent

        return torch.as_tensor(KeepLargestConnectedComponent(applied_labels=self.keep_largest, is_onehot=False)(label)).to(label.dtype)

    def _to_grid(self, data: torch.Tensor, source, reference, mode: str) -> torch.Tensor:
        """``data`` on ``source``'s grid resampled onto ``reference``'s (MONAI SpatialResample, as Invertd does for Spacingd)."""
        from monai.data import MetaTensor
        from monai.transforms import SpatialResample

        src_affine = torch.as_tensor(source.affine, dtype=torch.float64)
        dst_affine = torch.as_tensor(reference.affine, dtype=torch.float64)
        shape = tuple(reference.shape[1:])
        if tuple(data.shape[1:]) == shape and torch.allclose(src_affine, dst_affine, atol=1e-6):
            return data
        moving = MetaTensor(data.to(torch.float64 if mode != "nearest" else torch.float32), affine=src_affine)
        resample = SpatialResample(mode=mode, padding_mode=self.invert_padding, align_corners=False, dtype=torch.float64)
        out = resample(moving, dst_affine=dst_affine, spatial_size=shape)
        return out.as_tensor().to(torch.float32 if mode != "nearest" else data.dtype)

    def __call__(self, case: dict) -> dict:
        start = time.perf_counter()
        image = case[self.key]
        raw = image.as_tensor() if hasattr(image, "as_tensor") else image  # plain tensor: no MetaTensor overhead
        data = float_image(raw, STAGE)
        if data.ndim - 1 != self.spatial_dims:
            raise StageInputError(
                f"{STAGE}: {self.network_name} is {self.spatial_dims}D but the image has shape {tuple(data.shape)} "
                f"(channel-first, {data.ndim - 1} spatial axes)"
            )
        if data.shape[0] != self.in_channels:
            raise StageInputError(
                f"{STAGE}: the image has {data.shape[0]} channels but {self.network_name} expects in_channels={self.in_channels}"
            )
        x = data
        home = x.device
        reference = case[self.invert_to] if self.invert_to else None
        with torch.inference_mode():
            out, probabilities = self.predict(x.unsqueeze(0))
            if reference is not None and self.invert == "probabilities":
                if not probabilities:
                    out, probabilities = self._activate(out), self.activation != "none"
                out = self._to_grid(out[0].to(home), image, reference, self.invert_interp).unsqueeze(0)
            label = self.to_label(out, probabilities)
            del out
            label = label.to(home)
            if self.keep_largest and not (reference is not None and self.keep_largest_after_invert):
                label = self._keep_largest(label)
            if reference is not None and self.invert == "labels":
                label = self._to_grid(label, image, reference, "nearest")
            if self.keep_largest and reference is not None and self.keep_largest_after_invert:
                label = self._keep_largest(label)
        result = like(reference if reference is not None else image, label, label_names=dict(self.label_names))
        counts = torch.bincount(label.reshape(-1).to(torch.int64)).tolist() if self.output == "argmax" or self.out_channels == 1 else []
        out_case = dict(case)
        out_case[self.output_key] = result
        if self.drop_key and self.key != self.output_key:
            del out_case[self.key]
        record(
            out_case,
            STAGE,
            network=self.network_name,
            args=self.args,
            weights=self.weights_name,
            roi_size=list(self.roi_size),
            overlap=self.overlap,
            mode=self.mode,
            sw_batch_size=self.sw_batch_size,
            sw_device=str(self.sw_device),
            device=str(self.device),
            amp=self.amp,
            windows=count_windows(tuple(x.shape[1:]), self.roi_size, self.overlap) * (2 ** len(self.flip_axes)),
            tta_flips=list(self.flip_axes),
            output=self.output,
            voxels={self.label_names.get(i, str(i)): int(c) for i, c in enumerate(counts) if c},
            seconds=round(time.perf_counter() - start, 4),
        )
        return out_case


def build(context: StageContext, **params: Any) -> DeepSegmenter:
    """The factory `build_stage` calls: ``device`` here is the stage's own parameter, ``context.device`` the run's."""
    return DeepSegmenter(context=context, **params)

"""`features.vgg`: VGG activations pooled to one vector per case, from 2D images, slices or volumes."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from voxpipe.stage import StageContext, record
from voxpipe_plugins.deep.infer import resolve
from voxpipe_plugins.features.architectures import FC_LAYERS
from voxpipe_plugins.features.inputs import prepare
from voxpipe_plugins.features.vgg import VGG
from voxpipe_plugins.features.weights import fit_vgg, read_vgg_state

STAGE = "features.vgg"


def global_pool(x: torch.Tensor, pooling: str) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C) by average or max over space, or (N, 2C) for both; fc outputs pass through."""
    if x.ndim == 2:
        return x
    dims = tuple(range(2, x.ndim))
    if pooling == "avg":
        return x.mean(dims)
    if pooling == "max":
        return x.amax(dims)
    return torch.cat([x.mean(dims), x.amax(dims)], 1)


def autocast(device: torch.device, amp: bool):
    """float16 autocast on CUDA when asked; a no-op on CPU (bfloat16 on CPU is slower for VGG on most CPUs)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


class VGGExtractor:
    """Runs a VGG on a case's image and stores the pooled activations in ``case["features"][name]``.

    Planes (a 2D image or a volume's slices) go through the network ``batch_size`` at a time
    under ``torch.inference_mode``, in channels-last memory format, with float16 autocast on
    CUDA. Per-slice vectors are aggregated by mean or max; native 3D runs the volume at once.
    """

    def __init__(
        self,
        key: str = "image",
        name: str | None = None,
        arch: str = "vgg16",
        weights: str | None = None,
        layers: list[str] = ("pool5",),
        pooling: str = "avg",
        mode: str = "auto",
        slice_axis: int = 2,
        aggregate: str = "mean",
        in_channels: int = 3,
        width: float = 1.0,
        normalise: str = "auto",
        intensity: str = "minmax",
        size: list[int] | None = None,
        inflate: str = "mean",
        batch_size: int = 16,
        amp: bool = True,
        channels_last: bool = True,
        seed: int = 0,
        keep_slices: bool = False,
        device: str = "cpu",
        context: StageContext | None = None,
    ) -> None:
        self.key, self.name, self.arch = key, name or arch, arch
        self.layers, self.pooling, self.mode, self.slice_axis, self.aggregate = list(layers), pooling, mode, slice_axis, aggregate
        self.in_channels, self.intensity, self.size, self.batch_size = in_channels, intensity, size, batch_size
        self.amp, self.channels_last, self.keep_slices = amp, channels_last, keep_slices
        self.device = resolve(None, device)
        self.notes: list[str] = []
        self.weights = weights
        self.normalise = normalise == "imagenet" or (normalise == "auto" and weights is not None and in_channels == 3)
        self._models: dict[int, VGG] = {}
        self._state: dict[str, torch.Tensor] | None = None
        self._context = context or StageContext()
        self._width, self._inflate, self._seed = width, inflate, seed
        self.need_fc = any(layer in FC_LAYERS for layer in self.layers)
        if weights is not None:
            path = self._context.resolve_path(weights)
            self._state = read_vgg_state(path)
            self._source = path.name
        if mode in ("2d", "slices", "auto"):
            self.model(2)  # build (and check the weights) now: a bad file fails the run before any case
        if mode == "3d":
            self.model(3)

    def model(self, spatial_dims: int) -> VGG:
        """The network for 2D planes or 3D volumes, built once and kept."""
        if spatial_dims not in self._models:
            torch.manual_seed(self._seed)  # a network without weights is the same network every run
            net = VGG(
                self.arch,
                spatial_dims=spatial_dims,
                in_channels=self.in_channels,
                width=self._width,
                classifier=self.need_fc and spatial_dims == 2,
            )
            if self._state is not None:
                self.notes += fit_vgg(net, self._state, self._source, need_classifier=self.need_fc, inflate=self._inflate)
            net.eval().to(self.device)
            if self.channels_last:
                net = net.to(memory_format=torch.channels_last if spatial_dims == 2 else torch.channels_last_3d)
            self._models[spatial_dims] = net
        return self._models[spatial_dims]

    def resolved_mode(self, image: torch.Tensor) -> str:
        dims = image.ndim - 1
        if dims not in (2, 3):
            raise ValueError(f"{STAGE}: expected a channel-first 2D or 3D image, got shape {tuple(image.shape)}")
        mode = self.mode if self.mode != "auto" else ("2d" if dims == 2 else "slices")
        if dims == 2 and mode != "2d":
            raise ValueError(f"{STAGE}: mode `{mode}` needs a volume, this image is 2D; use mode 2d or auto")
        if dims == 3 and mode == "2d":
            raise ValueError(f"{STAGE}: this image is a volume; use mode slices (2D per slice) or 3d")
        return mode

    @torch.inference_mode()
    def vectors(self, x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
        """Network input (N, C, ...) -> pooled features (N, F) on the CPU, ``batch_size`` at a time."""
        net = self.model(spatial_dims)
        fmt = (torch.channels_last if spatial_dims == 2 else torch.channels_last_3d) if self.channels_last else torch.contiguous_format
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            batch = x[start : start + self.batch_size].to(self.device, non_blocking=True).contiguous(memory_format=fmt)
            with autocast(self.device, self.amp):
                acts = net.forward_layers(batch, self.layers)
            out.append(torch.cat([global_pool(acts[layer].float(), self.pooling) for layer in self.layers], 1).cpu())
        return torch.cat(out, 0)

    def feature_names(self, per_layer: list[int]) -> list[str]:
        names = []
        pools = ["avg", "max"] if self.pooling == "avgmax" else [self.pooling]
        for layer, size in zip(self.layers, per_layer):
            if layer in FC_LAYERS:
                names += [f"{layer}.{i}" for i in range(size)]
            else:
                channels = size // len(pools)
                names += [f"{layer}.{p}.{i}" for p in pools for i in range(channels)]
        return names

    def __call__(self, case: dict) -> dict:
        image = case[self.key]
        mode = self.resolved_mode(image)
        dims = 3 if mode == "3d" else 2
        x = prepare(
            image,
            mode=mode,
            slice_axis=self.slice_axis,
            in_channels=self.in_channels,
            intensity=self.intensity,
            normalise=self.normalise,
            size=self.size,
            what=STAGE,
        )
        if dims == 3:
            pools = sum(
                1
                for m in self.model(3).features[: max(self.model(3).layer_index[n] for n in self.layers) + 1]
                if isinstance(m, torch.nn.MaxPool3d)
            )
            if min(x.shape[2:]) < 2**pools:
                raise ValueError(
                    f"{STAGE}: the volume {tuple(x.shape[2:])} is too small for {pools} poolings "
                    f"(at least {2**pools} voxels per axis); use mode slices or an earlier layer"
                )
        per_plane = self.vectors(x, dims)
        if per_plane.shape[0] == 1:
            vector = per_plane[0]
        else:
            vector = per_plane.mean(0) if self.aggregate == "mean" else per_plane.amax(0)
        vector_np = vector.numpy().astype(np.float32)
        out = dict(case)
        out["features"] = {**case.get("features", {}), self.name: vector_np}
        sizes = self._layer_sizes(per_plane.shape[1], dims)
        out["feature_names"] = {**case.get("feature_names", {}), self.name: self.feature_names(sizes)}
        if self.keep_slices and dims == 2:
            out["slice_features"] = {**case.get("slice_features", {}), self.name: per_plane.numpy().astype(np.float32)}
        details: dict[str, Any] = {
            "name": self.name,
            "arch": self.arch,
            "layers": self.layers,
            "pooling": self.pooling,
            "mode": mode,
            "planes": int(per_plane.shape[0]),
            "length": int(vector_np.shape[0]),
            "weights": self._source if self._state is not None else None,
            "device": str(self.device),
        }
        if mode == "slices":
            details["aggregate"] = self.aggregate
        if self.notes:
            details["notes"] = list(dict.fromkeys(self.notes))
        if self._state is None:
            out["warnings"] = [
                *case.get("warnings", []),
                f"{STAGE}: no `weights` given; features come from a randomly initialised {self.arch} (seed {self._seed})",
            ]
        record(out, STAGE, **details)
        return out

    def _layer_sizes(self, total: int, dims: int) -> list[int]:
        net = self._models[dims]
        sizes = []
        factor = 2 if self.pooling == "avgmax" else 1
        for layer in self.layers:
            if layer in FC_LAYERS:
                sizes.append(net.classifier[FC_LAYERS[layer] - 1].out_features)
            else:
                sizes.append(self._channels_at(net, net.layer_index[layer]) * factor)
        assert sum(sizes) == total, (sizes, total)
        return sizes

    @staticmethod
    def _channels_at(net: VGG, index: int) -> int:
        channels = None
        for module in net.features[: index + 1]:
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
                channels = module.out_channels
        return channels

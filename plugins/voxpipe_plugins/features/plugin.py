"""Registers `features.vgg` (pydantic only: torch is imported when the stage is built)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec
from voxpipe.suggest import did_you_mean
from voxpipe_plugins.common.params import ImageKeyParams
from voxpipe_plugins.features.architectures import ARCHITECTURES, FC_LAYERS, layer_names

FeatureName = str
Arch = Literal[tuple(ARCHITECTURES)]  # type: ignore[valid-type]


class VGGInputParams(ImageKeyParams):
    """How an image becomes network input; shared by `features.vgg` and the `head.vgg*` stages."""

    arch: Arch = Field("vgg16", description="VGG configuration: vgg11/13/16/19, `_bn` with batch norm.")
    width: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Channel multiplier; 1.0 is the published network (needed for "
        "torchvision weights), smaller values give narrow networks for small data and tests.",
    )
    in_channels: Literal[1, 3] = Field(
        3, description="Network input channels: 3 (ImageNet weights; grey images are repeated to 3 channels) or 1."
    )
    slice_axis: int = Field(
        2,
        ge=0,
        le=2,
        description="Volumes: the spatial axis slices are cut along (2: axial slices of a "
        "RAS volume); in 3D mode it becomes the network's depth.",
    )
    intensity: Literal["minmax", "none"] = Field(
        "minmax",
        description="`minmax`: scale each case to [0, 1] (one min/max per case) before ImageNet normalisation; "
        "`none`: use the values as they are (normalise in earlier stages).",
    )
    size: list[int] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="Resize each plane to [rows, cols] (bilinear, antialiased when shrinking); "
        "unset keeps its size. ImageNet weights were trained at [224, 224]; global pooling makes features size-independent.",
    )
    batch_size: int = Field(16, ge=1, le=4096, description="Planes per forward pass.")
    amp: bool = Field(True, description="float16 autocast on CUDA; ignored on CPU.")
    channels_last: bool = Field(True, description="Run convolutions in channels-last memory format (faster on CPU and GPU).")

    @field_validator("size")
    @classmethod
    def _size(cls, value):
        if value is not None and any(v < 32 or v > 4096 for v in value):
            raise ValueError(f"size values must be 32..4096 (VGG pools 5 times), got {value}")
        return value


class VGGFeatureParams(VGGInputParams):
    name: FeatureName | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$",
        description="Feature-set name in case['features']; unset: the architecture (`vgg16`).",
    )
    weights: str | None = Field(
        None,
        description="Local weights file (torchvision .pth/.pt loaded weights-only, or .safetensors), relative to the "
        "config file. Nothing is downloaded; unset: a randomly initialised network (seeded), with a warning.",
    )
    layers: list[str] = Field(
        ["pool5"],
        min_length=1,
        max_length=32,
        description="Layers to extract, by the paper's names: conv3_2, relu4_3, pool5, ... and fc6/fc7 "
        "(2D only, after the ReLU); pooled vectors are concatenated in this order.",
    )
    pooling: Literal["avg", "max", "avgmax"] = Field(
        "avg", description="Global pooling of each layer over space (`avgmax`: both, concatenated)."
    )
    mode: Literal["auto", "2d", "slices", "3d"] = Field(
        "auto",
        description="`2d`: a 2D image; `slices`: a volume slice by slice through the 2D net, then `aggregate`; "
        "`3d`: the 3D network (2D weights inflated); `auto`: 2d for 2D images, slices for volumes.",
    )
    aggregate: Literal["mean", "max"] = Field("mean", description="slices: how per-slice vectors become one per case.")
    normalise: Literal["auto", "imagenet", "none"] = Field(
        "auto", description="ImageNet mean/std normalisation: `auto` applies it when `weights` are given and in_channels is 3."
    )
    inflate: Literal["mean", "center"] = Field(
        "mean",
        description="3d with a 2D checkpoint: `mean` repeats each kernel over 3 depth taps / 3 (I3D); `center` puts it in "
        "the middle tap (each slice then gives its 2D response).",
    )
    keep_slices: bool = Field(False, description="slices: also keep the per-slice vectors in case['slice_features'][name].")
    seed: int = Field(0, ge=0, description="Seed of the random initialisation when no weights are given.")

    @model_validator(mode="after")
    def _layers(self):
        dims = 3 if self.mode == "3d" else 2
        valid = layer_names(self.arch, dims)
        bad = [layer for layer in self.layers if layer not in valid]
        if bad:
            hint = did_you_mean(bad[0], valid) or f" (valid: {valid[0]} ... {valid[-1]})"
            extra = "; fc6/fc7 exist in 2D only" if dims == 3 and any(b in FC_LAYERS for b in bad) else ""
            raise ValueError(f"unknown layer `{bad[0]}` for {self.arch}{hint}{extra}")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers repeat: {self.layers}")
        if self.mode == "3d" and self.size is not None:
            raise ValueError("`size` resizes 2D planes; for mode 3d resample the volume in an earlier stage")
        return self


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="features.vgg",
            kind=StageKind.EXTRACTOR,
            summary="VGG11/13/16/19 (+BN) features, 2D, slice-wise (mean/max) or 3D, from local torchvision-layout weights.",
            description="The network is pure torch/MONAI layers with torchvision's state-dict keys, so a local torchvision VGG "
            "checkpoint loads as it is (weights-only); 3D weights are inflated from 2D. Chosen layers are globally pooled and "
            "concatenated into case['features'][name] (float32). Grey images are repeated to 3 channels and ImageNet-normalised "
            "when pretrained weights are used. See docs/features-and-heads.md.",
            params=VGGFeatureParams,
            factory="voxpipe_plugins.features.extract:VGGExtractor",
            reads=("{key}",),
            writes=("features", "feature_names"),
            content_files=("weights",),
        )
    )

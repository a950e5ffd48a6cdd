"""Registers `segment.deep` and the `segmentation` trainer (pydantic only: no torch here)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec, TrainerSpec
from voxpipe_plugins.common.params import CaseKey, StageParams
from voxpipe_plugins.deep.networks import NETWORKS, check_network

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class DeepSegParams(StageParams):
    key: CaseKey = Field("image", description="Case key of the (already normalised) image.")
    output_key: CaseKey = Field("label", description="Case key for the label map.")
    network: str = Field(description=f"MONAI network class from the allowlist: {', '.join(sorted(NETWORKS))}.")
    args: dict[str, Any] = Field(default_factory=dict, description="The network's constructor arguments (literals only).")
    weights: str | None = Field(
        None,
        description="Weights file (.safetensors, .pt, .pth), relative to the config file. Required by `voxpipe run`; "
        "`voxpipe train` writes it.",
    )
    weights_sha256: str | None = Field(
        None,
        pattern=r"^[0-9A-Fa-f]{64}$",
        description="SHA-256 of the weights file (hex); when set, a file with another digest is refused before it is read.",
    )
    roi_size: list[int] = Field(description="Sliding-window size in voxels, one per spatial axis.", min_length=2, max_length=3)
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="Fraction of overlap between neighbouring windows.")
    mode: Literal["gaussian", "constant"] = Field("gaussian", description="Blending of overlapping windows.")
    sigma_scale: float = Field(0.125, gt=0.0, le=1.0, description="Gaussian blending: sigma as a fraction of roi_size.")
    sw_batch_size: int = Field(1, ge=1, le=1024, description="Windows run through the network at once.")
    sw_device: str | None = Field(None, pattern=DEVICE_PATTERN, description="Where windows run; unset: the run's device.")
    device: str | None = Field(
        None,
        pattern=DEVICE_PATTERN,
        description="Where the stitched output is kept; unset: the run's device. `cpu` with sw_device `cuda` keeps a large "
        "volume in CPU memory while windows run on the GPU.",
    )
    amp: bool = Field(True, description="Automatic mixed precision (float16) when windows run on CUDA; ignored on CPU.")
    flip_axes: list[int] = Field(
        default_factory=list,
        max_length=3,
        description="Test-time augmentation: average the probabilities over every combination of flips of these spatial "
        "axes (0-based; [0, 1, 2] = 8 passes). Empty: no TTA.",
    )
    output: Literal["argmax", "threshold"] = Field(
        "argmax", description="`argmax`: softmax classes -> label 0..C-1; `threshold`: sigmoid per channel > threshold."
    )
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Probability threshold for `output: threshold`.")
    label_names: dict[int, str] | None = Field(
        None, description="Label table {value: name}; unset: background, class_1, ... (from the weights' sidecar when present)."
    )
    activation: Literal["auto", "softmax", "sigmoid", "none"] = Field(
        "auto",
        description="Applied to the network output before inversion and discretisation; `auto`: softmax for argmax, sigmoid "
        "for threshold (`none`: threshold compares the raw output).",
    )
    padding_mode: Literal["constant", "reflect", "replicate", "circular"] = Field(
        "constant", description="How the sliding window pads an image smaller than roi_size (SlidingWindowInferer padding_mode)."
    )
    invert_to: CaseKey | None = Field(
        None,
        description="Case key of the image on the input grid (e.g. a copy made before orientation/spacing): the label map is "
        "resampled onto its grid and affine, as MONAI's Invertd does. Unset: the label stays on `key`'s grid.",
    )
    invert: Literal["probabilities", "labels"] = Field(
        "probabilities",
        description="With invert_to: resample the activated output before discretising (`probabilities`, MONAI's Invertd "
        "before AsDiscreted) or the label map after it (`labels`, nearest).",
    )
    invert_interp: Literal["bilinear", "nearest"] = Field("bilinear", description="Interpolation when inverting probabilities.")
    invert_padding: Literal["border", "zeros", "reflection"] = Field(
        "border", description="Padding when inverting (Spacingd's padding_mode: `border` by default)."
    )
    channel_values: list[Annotated[list[Annotated[int, Field(ge=0, le=65535)]], Field(min_length=2, max_length=2)]] | None = Field(
        None,
        max_length=256,
        description="`output: threshold` only: [[channel, value], ...] merges the thresholded channels into one label map; "
        "the first listed channel that is set wins, 0 elsewhere (a bundle's torch.where label lambda).",
    )
    keep_largest: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(
        None, max_length=1024, description="Labels whose largest connected component alone is kept (MONAI KeepLargestConnectedComponent)."
    )
    drop_key: bool = Field(
        False, description="Remove `key` from the case after inference: a working copy (e.g. an imported bundle's) no later stage needs."
    )
    keep_largest_after_invert: bool = Field(False, description="With invert_to: keep the largest component after inversion, not before.")

    @field_validator("flip_axes")
    @classmethod
    def _axes(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(a < 0 or a > 2 for a in value):
            raise ValueError(f"flip_axes must be distinct spatial axes 0, 1 or 2, got {value}")
        return value

    @field_validator("roi_size")
    @classmethod
    def _roi(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError(f"roi_size values must be positive, got {value}")
        return value

    @model_validator(mode="after")
    def _network(self):
        problems = check_network(self.network, self.args)
        if problems:
            raise ValueError("; ".join(problems))
        spatial = self.args.get("spatial_dims", 2 if self.network == "FlexibleUNet" else 3)
        if isinstance(spatial, int) and len(self.roi_size) != spatial:
            raise ValueError(f"roi_size has {len(self.roi_size)} values but the network is {spatial}D (spatial_dims)")
        if self.channel_values and self.output != "threshold":
            raise ValueError("channel_values needs output: threshold (one channel per class)")
        if any(a >= len(self.roi_size) for a in self.flip_axes):
            raise ValueError(f"flip_axes {self.flip_axes} name an axis beyond the {len(self.roi_size)} spatial axes")
        return self


class TrainParams(StageParams):
    data: str = Field(
        description="Training data: a folder with images/ and labels/ matched by name, or a CSV with "
        "image,label columns (paths relative to the CSV). NIfTI files or DICOM series folders."
    )
    val_data: str | None = Field(None, description="Validation data in the same form; unset: `val_fraction` of `data`.")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Share of `data` held out for validation when val_data is unset.")
    stage: str | None = Field(None, description="Label (`id`) of the segment.deep stage to train; unset: the first one.")
    epochs: int = Field(50, ge=1, le=100000, description="Epochs to train (a resumed run continues up to this number).")
    batch_size: int = Field(2, ge=1, le=1024, description="Volumes per batch (each gives `samples_per_volume` crops).")
    samples_per_volume: int = Field(2, ge=1, le=64, description="Random crops taken from each volume per epoch.")
    crop_size: list[int] | None = Field(None, min_length=2, max_length=3, description="Training crop size; unset: the stage's roi_size.")
    crop: Literal["pos_neg", "random"] = Field("pos_neg", description="`pos_neg`: RandCropByPosNegLabeld; `random`: RandSpatialCropd.")
    pos_fraction: float = Field(0.5, ge=0.0, le=1.0, description="pos_neg crops: share of crops centred on foreground.")
    flip_prob: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a random flip along each spatial axis.")
    intensity_shift: float = Field(0.1, ge=0.0, description="Random intensity offset in [-x, x] (probability 0.5).")
    optimizer: Literal["adam", "adamw"] = Field("adamw", description="Optimizer.")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Learning rate.")
    weight_decay: float = Field(1e-5, ge=0.0, description="Weight decay.")
    lambda_dice: float = Field(1.0, ge=0.0, description="DiceCELoss weight of the Dice term.")
    lambda_ce: float = Field(1.0, ge=0.0, description="DiceCELoss weight of the cross-entropy term.")
    val_every: int = Field(1, ge=1, description="Validate (sliding-window Dice) every N epochs, and after the last.")
    seed: int = Field(0, ge=0, description="Seed for monai.utils.set_determinism, the split and the augmentations.")
    cache_rate: float = Field(1.0, ge=0.0, le=1.0, description="Share of training cases kept in memory (CacheDataset).")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes.")
    amp: bool = Field(True, description="Mixed precision on CUDA; ignored on CPU.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; unset: torch's default.")
    max_minutes: float | None = Field(None, gt=0, description="Stop after the epoch during which this much time has passed.")


@hookimpl
def voxpipe_register_stages(register):
    register(
        StageSpec(
            id="segment.deep",
            kind=StageKind.SEGMENTER,
            summary="Deep segmentation: a MONAI network (UNet, SegResNet, SwinUNETR, ...) with local weights, sliding-window inference.",
            description="The network is chosen by name from an allowlist and built with literal arguments (checked against its "
            "signature). Weights come from a local .safetensors / .pt file. MONAI's SlidingWindowInferer runs windows on "
            "`sw_device` and stitches them on `device`; AMP on CUDA; optional flip TTA; argmax or threshold output. The label "
            "map keeps the image's grid and affine and carries a label table. Normalise the image in earlier stages.",
            params=DeepSegParams,
            factory="voxpipe_plugins.deep.infer:build",
            reads=("{key}", "{invert_to}"),
            writes=("{output_key}",),
            content_files=("weights",),
            check="voxpipe_plugins.deep.weights_check:check_params",
        )
    )


@hookimpl
def voxpipe_register_trainers(register):
    register(
        TrainerSpec(
            task="segmentation",
            summary="Train the config's segment.deep network on image/label pairs (DiceCE, Adam/AdamW, sliding-window Dice).",
            description="Preprocessing is the config's stages between the loader and segment.deep; checkpoints are safetensors "
            "with a JSON sidecar, ready for `voxpipe run` with the same config.",
            params=TrainParams,
            factory="voxpipe_plugins.deep.train:SegmentationTrainer",
        )
    )

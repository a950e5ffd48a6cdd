"""The ``denoise.cnn`` stage spec and the ``denoise`` training task (registered by the denoise family's plugin).

Light on purpose (pydantic + voxpipe only): the network, torch and MONAI are imported when
a pipeline is built or ``voxpipe train`` runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from voxpipe.params import StageParams
from voxpipe.stage import StageKind, StageSpec, TrainerSpec
from voxpipe_plugins.common.params import ImageKeyParams

SHIPPED_MODELS = ("mr-rician", "ct-lowdose")
NoiseModel = Literal["gaussian", "rician", "ct-lowdose"]


class CNNParams(ImageKeyParams):
    model: Literal["mr-rician", "ct-lowdose"] | None = Field(
        None,
        description="Shipped weights (inside the package, no download): `mr-rician` (magnitude MR), `ct-lowdose` (CT in HU). "
        "Give `model` or `weights`, not both.",
    )
    weights: str | None = Field(
        None,
        min_length=1,
        description="Local weights: a .safetensors from `voxpipe train` (its .json card beside it), or a .pt/.pth state dict "
        "(loaded with weights_only=True). Relative to the config file.",
    )
    noise: Literal["auto", "gaussian", "rician", "ct-lowdose"] = Field(
        "auto",
        description="Noise model of the input: `auto` takes the one the weights were trained for (from the card). `rician` "
        "estimates sigma on bright tissue; `ct-lowdose` expects HU.",
    )
    sigma: float | None = Field(
        None, gt=0, le=1e6, description="Noise standard deviation in image units; unset: estimated (robust MAD of Haar detail)."
    )
    strength: float = Field(
        1.0, gt=0, le=4, description="Multiplies the noise level given to the network: above 1 smooths more, below 1 keeps more."
    )
    slice_axis: Literal["auto", "all", 0, 1, 2] = Field(
        "auto",
        description="2D models on 3D images: the axis across slices; `all`: along each axis in turn, averaged; `auto`: `all` "
        "on near-isotropic voxels (spacings within 1.5x), else the axis with the largest spacing (the last on ties).",
    )
    roi_size: list[int] | None = Field(
        None, min_length=2, max_length=3, description="Sliding-window size in voxels; unset: 128 per axis (2D models), 64 (3D)."
    )
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="Sliding-window overlap (windows are blended with a Gaussian).")
    sw_batch_size: int = Field(8, ge=1, le=256, description="Windows per network call.")
    amp: bool = Field(True, description="Mixed precision (float16) on CUDA; ignored on the CPU.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.model is None) == (self.weights is None):
            raise ValueError("give exactly one of `model` (mr-rician, ct-lowdose: shipped) or `weights` (a local file)")
        return self


class DenoiseTrainParams(StageParams):
    data: str = Field(
        description="Clean training images: a folder (NIfTI, DICOM .dcm, PNG/TIFF; searched recursively) or a CSV with an "
        "`image` column (paths relative to the CSV). Noise is added on the fly."
    )
    val_data: str | None = Field(None, description="Validation images in the same form; unset: `val_fraction` of `data`.")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Share of the images held out for validation when val_data is unset.")
    noise: NoiseModel = Field(
        "gaussian", description="Noise to simulate: gaussian, rician (magnitude MR) or ct-lowdose (Poisson on projections)."
    )
    sigma_range: list[float] = Field(
        [0.01, 0.15],
        min_length=2,
        max_length=2,
        description="gaussian/rician: sigma drawn uniformly in this range, as a fraction of each image's robust range.",
    )
    dose_range: list[float] = Field(
        [0.05, 0.5], min_length=2, max_length=2, description="ct-lowdose: dose fraction drawn log-uniformly in this range (1 = full dose)."
    )
    val_level: float | None = Field(
        None, gt=0, description="Noise level of the validation images (sigma fraction or dose); unset: the middle of the range."
    )
    spatial_dims: Literal[2, 3] = Field(2, description="2: a slice-wise model (3D images give their slices); 3: a volumetric model.")
    features: int = Field(32, ge=4, le=256, description="Channels of every hidden convolution.")
    depth: int = Field(8, ge=3, le=30, description="Convolution layers (receptive field 2 x depth + 1 voxels).")
    patch_size: int = Field(48, ge=16, le=256, description="Training patch size per axis.")
    batch_size: int = Field(16, ge=1, le=1024, description="Patches per step.")
    steps_per_epoch: int = Field(100, ge=1, le=100000, description="Optimiser steps per epoch.")
    epochs: int = Field(20, ge=1, le=100000, description="Epochs to train (a resumed run continues up to this number).")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate (cosine decay to 5% over the epochs).")
    guide: Literal["none", "nlm"] = Field(
        "none",
        description="`nlm`: a hybrid model that also gets denoise.nlm's estimate of its input and corrects it "
        "(gaussian/rician noise; see docs/denoising-cnn.md).",
    )
    guide_bank: int = Field(8, ge=1, le=64, description="guide nlm: noisy copies (with their NLM estimate) made once per training image.")
    loss: Literal["mse", "l1"] = Field("mse", description="Pixel loss between the output and the clean patch.")
    adversarial: Literal["none", "wgan-gp"] = Field(
        "none", description="`wgan-gp`: also train against a critic (Wasserstein loss, gradient penalty) with a VGG perceptual loss."
    )
    adv_weight: float = Field(1e-3, ge=0.0, description="wgan-gp: weight of the adversarial term in the generator's loss.")
    perceptual_weight: float = Field(0.1, ge=0.0, description="wgan-gp: weight of the VGG feature (perceptual) loss.")
    gp_lambda: float = Field(10.0, ge=0.0, description="wgan-gp: gradient-penalty weight (10 in Gulrajani et al. 2017).")
    critic_steps: int = Field(4, ge=1, le=20, description="wgan-gp: critic updates per generator update.")
    vgg_weights: str | None = Field(
        None,
        description="wgan-gp: local VGG16 checkpoint (torchvision layout) for the perceptual loss; unset: a fixed, seeded, "
        "randomly initialised VGG16 (see docs/denoising-cnn.md).",
    )
    init_weights: str | None = Field(
        None, description="Start the generator from these weights (e.g. an MSE-trained model before the GAN phase)."
    )
    seed: int = Field(0, ge=0, description="Seed of the split, the noise, the patches and the initial weights.")
    threads: int | None = Field(None, ge=1, le=256, description="torch CPU threads; unset: torch's default.")
    max_minutes: float | None = Field(None, gt=0, description="Stop after the epoch during which this much time has passed.")

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("sigma_range", "dose_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be [low, high] with 0 < low <= high, got {[low, high]}")
        if self.guide == "nlm" and self.noise == "ct-lowdose":
            raise ValueError("guide: nlm is for gaussian or rician noise (the low-dose CT noise bank has no NLM estimates)")
        if self.dose_range[1] > 1:
            raise ValueError("dose_range: a dose fraction is at most 1 (full dose)")
        return self


def register_cnn_stage(register) -> None:
    """Register ``denoise.cnn`` (a learned residual CNN denoiser)."""
    register(
        StageSpec(
            id="denoise.cnn",
            kind=StageKind.DENOISER,
            summary="Learned residual CNN denoiser (DnCNN with a noise-level map): shipped mr-rician / ct-lowdose models or local "
            "weights, 2D slice-wise or 3D, MONAI sliding window, CPU or CUDA (AMP).",
            params=CNNParams,
            factory="voxpipe_plugins.denoise.cnn:CNNDenoise",
            reads=("{key}",),
            writes=("{key}",),
            description="Scales each channel to the range the model was trained on (MR: 0.5..99.5 percentiles; CT: a fixed HU "
            "window), gives the network the noise level (given or estimated) as a second input, and restores the scale. "
            "Train your own with `voxpipe train` task `denoise` (docs/denoising-cnn.md).",
            content_files=("weights",),
        )
    )


def register_cnn_trainer(register) -> None:
    """Register the ``denoise`` task of ``voxpipe train``."""
    register(
        TrainerSpec(
            task="denoise",
            summary="Train a denoise.cnn model on clean images with simulated noise (gaussian, rician, low-dose CT); MSE/L1 or WGAN-GP + VGG.",
            description="Random patches, Adam, validation PSNR/SSIM each epoch, best/last safetensors with a JSON card, resume, "
            "learning curve. The config's denoise.cnn stage (if any) is what runs the result.",
            params=DenoiseTrainParams,
            factory="voxpipe_plugins.denoise.cnn_train:DenoiseTrainer",
        )
    )

"""The two extra losses of the WGAN-VGG recipe (Yang et al. 2018): VGG feature distance and the gradient penalty.

The perceptual loss compares VGG16 activations (up to ``relu3_3``) of the output and of
the clean image, with the features family's VGG (``features.vgg``). VoxPipe ships no
pretrained VGG weights and downloads nothing, so unless a local torchvision checkpoint is
given (``vgg_weights``), the VGG is randomly initialised from the run's seed and frozen.
Random convolutional features are still a fixed bank of multi-scale filters with
nonlinearities: matching them penalises lost local texture and contrast, which MSE does
not, though less selectively than ImageNet features (docs/denoising-cnn.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LAYER = "relu3_3"


class Perceptual(nn.Module):
    """Mean squared distance of frozen VGG16 features (``relu3_3``), 2D or 3D."""

    def __init__(self, spatial_dims: int = 2, seed: int = 0, weights: Path | None = None) -> None:
        super().__init__()
        from voxpipe_plugins.features.vgg import VGG

        if weights is not None:
            from voxpipe_plugins.features.weights import fit_vgg, read_vgg_state

            self.vgg = VGG("vgg16", spatial_dims=spatial_dims, in_channels=3, classifier=False)
            fit_vgg(self.vgg, read_vgg_state(weights), weights.name)
            self.rgb = True
        else:
            generator_state = torch.random.get_rng_state()
            torch.manual_seed(seed + 7919)
            self.vgg = VGG("vgg16", spatial_dims=spatial_dims, in_channels=1, width=0.25, classifier=False)
            torch.random.set_rng_state(generator_state)
            self.rgb = False
        self.vgg.eval()
        for q in self.vgg.parameters():
            q.requires_grad_(False)
        shape = (1, 3) + (1,) * spatial_dims
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(shape))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(shape))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.rgb:
            x = (x.expand(-1, 3, *x.shape[2:]) - self.mean) / self.std
        return self.vgg.forward_layers(x, [LAYER])[LAYER]

    def forward(self, output: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return torch.mean((self.features(output) - self.features(clean)) ** 2)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Gulrajani et al. (2017): (‖∇D(x̂)‖₂ − 1)² at random points between real and generated samples."""
    alpha = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device, dtype=real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()

"""VGG in pure torch with MONAI's layer factories, in 2D or 3D, with torchvision's state-dict layout.

The 2D network's ``state_dict()`` has exactly torchvision's keys and shapes
(``features.0.weight`` ... ``classifier.6.bias``), so a local torchvision checkpoint such as
the ImageNet ``vgg16-397923af.pth`` loads as it is, without torchvision installed. The 3D
network has the same keys with 3x3x3 kernels; :func:`inflate_state_dict` turns 2D weights
into 3D ones.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

from voxpipe_plugins.features.architectures import FC_LAYERS, base_config, layer_index, scaled


class VGG(nn.Module):
    """VGG11/13/16/19 (``_bn``: batch norm after every convolution), torchvision's module layout.

    Args:
        arch: ``vgg11`` ... ``vgg19_bn``.
        spatial_dims: 2 or 3.
        in_channels: 3 for ImageNet weights; 1 for a network trained from scratch on grey images.
        num_classes: outputs of the last classifier layer (1000 for ImageNet checkpoints).
        width: channel multiplier (1.0 is the published network; 0.125 gives a small one for tests).
        classifier: build ``avgpool`` + ``classifier`` (2D only); feature extractors of 3D nets skip it.
        dropout: dropout probability in the classifier.
    """

    def __init__(
        self,
        arch: str = "vgg16",
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 1000,
        width: float = 1.0,
        classifier: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        config, batch_norm = base_config(arch)
        self.arch, self.spatial_dims, self.width = arch, spatial_dims, width
        conv, pool, norm = Conv[Conv.CONV, spatial_dims], Pool[Pool.MAX, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(pool(kernel_size=2, stride=2))
                continue
            out = scaled(int(item), width)
            layers.append(conv(channels, out, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(norm(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        self.features = nn.Sequential(*layers)
        self.out_channels = channels
        self.layer_index = layer_index(arch)
        self.has_classifier = bool(classifier and spatial_dims == 2)
        if self.has_classifier:
            hidden = scaled(4096, width)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(channels * 7 * 7, hidden),
                nn.ReLU(True),
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden),
                nn.ReLU(True),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation, so a network trained from scratch starts the same way."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.constant_(module.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if not self.has_classifier:
            return x
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def forward_layers(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """The activations of the named layers (``pool5``, ``relu4_3``, ``fc7``), running only as far as needed."""
        wanted = {self.layer_index[n]: n for n in names if n in self.layer_index}
        fc = [n for n in names if n in FC_LAYERS]
        if fc and not self.has_classifier:
            raise ValueError(f"{', '.join(fc)}: the fully connected layers exist in the 2D network only")
        last = len(self.features) - 1 if fc else max(wanted, default=-1)
        out: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.features):
            if index > last:
                break
            x = module(x)
            if index in wanted:
                out[wanted[index]] = x.clone() if isinstance(self.features[min(index + 1, last)], nn.ReLU) else x
        if fc:
            x = torch.flatten(self.avgpool(x), 1)
            stop = max(FC_LAYERS[n] for n in fc)
            by_index = {FC_LAYERS[n]: n for n in fc}
            for index, module in enumerate(self.classifier):
                if index > stop:
                    break
                x = module(x)
                if index in by_index:
                    out[by_index[index]] = x
        return out


def inflate_state_dict(state: dict[str, torch.Tensor], mode: str = "mean") -> dict[str, torch.Tensor]:
    """2D VGG weights -> 3D ones (I3D-style inflation, Carreira & Zisserman 2017).

    ``mean``: each 3x3 kernel is repeated over 3 depth taps and divided by 3, so a volume that
    is constant along depth gives the 2D response (away from the first and last slices, where
    zero padding differs). ``center``: the 2D kernel sits in the middle tap and the others are
    zero, so every slice gives exactly its 2D response. Batch-norm and bias tensors are kept;
    classifier tensors are dropped (the 3D extractor has no classifier).
    """
    if mode not in ("mean", "center"):
        raise ValueError(f"inflation mode must be `mean` or `center`, got {mode!r}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith("features."):
            continue
        if value.ndim == 4:
            if mode == "mean":
                value = value.unsqueeze(2).repeat(1, 1, 3, 1, 1) / 3.0
            else:
                zeros = torch.zeros_like(value)
                value = torch.stack([zeros, value, zeros], dim=2)
        out[key] = value
    return out

"""The seed's model -- a VGG backbone with two fully connected heads -- and its single-task and RNN variants.

The backbone is :class:`voxpipe_plugins.features.vgg.VGG`'s ``features`` (torchvision key
names, so ``backbone.features.*`` can start from a local ImageNet checkpoint). Its last
activation is globally average-pooled, optionally passed through a shared hidden layer, and
fed to a classification layer (``classify``: one logit per class, or one for BCE) and/or a
regression layer (``regress``: one value, in standardised units).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from voxpipe_plugins.features.vgg import VGG


@dataclass(frozen=True)
class HeadArchitecture:
    """Everything that decides the shape of the state dict; stored with every checkpoint."""

    arch: str = "vgg16"
    width: float = 1.0
    in_channels: int = 3
    task: str = "multitask"  # multitask | classification | regression
    logits: int = 2  # classification outputs (classes, or 1 for BCE)
    hidden: int = 0
    dropout: float = 0.0
    rnn: str | None = None  # None | gru | lstm
    rnn_hidden: int = 128
    rnn_layers: int = 1
    bidirectional: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def classifies(self) -> bool:
        return self.task in ("multitask", "classification")

    @property
    def regresses(self) -> bool:
        return self.task in ("multitask", "regression")


class _Heads(nn.Module):
    def __init__(self, features: int, spec: HeadArchitecture) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(spec.dropout)] if spec.dropout > 0 else []
        if spec.hidden:
            layers += [nn.Linear(features, spec.hidden), nn.ReLU(inplace=True)] + ([nn.Dropout(spec.dropout)] if spec.dropout > 0 else [])
            features = spec.hidden
        self.shared = nn.Sequential(*layers)
        self.classify = nn.Linear(features, spec.logits) if spec.classifies else None
        self.regress = nn.Linear(features, 1) if spec.regresses else None

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.shared(z)
        out = {}
        if self.classify is not None:
            out["logits"] = self.classify(z)
        if self.regress is not None:
            out["regression"] = self.regress(z).squeeze(1)
        return out


class VGGHeads(nn.Module):
    """Planes (N, C, H, W) -> {"logits": (N, K), "regression": (N,)}."""

    def __init__(self, spec: HeadArchitecture) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = VGG(spec.arch, spatial_dims=2, in_channels=spec.in_channels, width=spec.width, classifier=False)
        self.heads = _Heads(self.backbone.out_channels, spec)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.embed(x))


class RNNHeads(nn.Module):
    """Slices (B, S, C, H, W) -> per-slice VGG vectors -> GRU/LSTM -> one prediction per volume.

    The volume's vector is the RNN's last hidden state (both directions concatenated when
    bidirectional), so slice order matters, as it does along an anatomical axis.
    """

    def __init__(self, spec: HeadArchitecture) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = VGG(spec.arch, spatial_dims=2, in_channels=spec.in_channels, width=spec.width, classifier=False)
        cell = nn.GRU if spec.rnn == "gru" else nn.LSTM
        self.rnn = cell(
            self.backbone.out_channels, spec.rnn_hidden, num_layers=spec.rnn_layers, batch_first=True, bidirectional=spec.bidirectional
        )
        self.heads = _Heads(spec.rnn_hidden * (2 if spec.bidirectional else 1), spec)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, s = x.shape[:2]
        per_slice = self.backbone.features(x.flatten(0, 1)).mean((2, 3)).view(b, s, -1)
        _, hidden = self.rnn(per_slice)
        if isinstance(hidden, tuple):  # LSTM: (h, c)
            hidden = hidden[0]
        last = hidden[-2:] if self.spec.bidirectional else hidden[-1:]
        return self.heads(last.transpose(0, 1).flatten(1))


def build_model(spec: HeadArchitecture) -> nn.Module:
    return RNNHeads(spec) if spec.rnn else VGGHeads(spec)

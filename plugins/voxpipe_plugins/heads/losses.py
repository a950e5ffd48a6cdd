"""Losses for the heads: MSE (default) / L1 / Huber for regression, CE / BCE / focal for classification, weighted sum."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Multi-class focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true)^gamma, mean over the batch."""
    log_p = F.log_softmax(logits, 1).gather(1, target[:, None]).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


def classification_loss(
    logits: torch.Tensor, target: torch.Tensor, kind: str, gamma: float = 2.0, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``ce``: softmax cross-entropy; ``bce``: one logit for class 1 (two classes); ``focal``."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
    if kind == "focal":
        return focal_loss(logits, target, gamma)
    return F.cross_entropy(logits, target, weight=class_weights)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, delta: float = 1.0) -> torch.Tensor:
    """On standardised targets: ``mse`` (the seed's), ``l1`` or ``huber``."""
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "huber":
        return F.huber_loss(pred, target, delta=delta)
    return F.mse_loss(pred, target)


class MultiTaskLoss:
    """``w_cls * classification + w_reg * regression`` over whichever heads the model has."""

    def __init__(
        self,
        classification: str = "ce",
        regression: str = "mse",
        w_cls: float = 1.0,
        w_reg: float = 1.0,
        gamma: float = 2.0,
        delta: float = 1.0,
    ) -> None:
        self.classification, self.regression, self.w_cls, self.w_reg = classification, regression, w_cls, w_reg
        self.gamma, self.delta = gamma, delta

    def __call__(self, out: dict[str, torch.Tensor], labels: torch.Tensor | None, targets: torch.Tensor | None) -> torch.Tensor:
        total = torch.zeros((), device=next(iter(out.values())).device)
        if "logits" in out and labels is not None:
            total = total + self.w_cls * classification_loss(out["logits"].float(), labels, self.classification, self.gamma)
        if "regression" in out and targets is not None:
            total = total + self.w_reg * regression_loss(out["regression"].float(), targets, self.regression, self.delta)
        return total


def probabilities(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Class probabilities (N, K) from the classification head's output."""
    if kind == "bce":
        p = torch.sigmoid(logits[:, 0].float())
        return torch.stack([1 - p, p], 1)
    return torch.softmax(logits.float(), 1)

"""Learning curves as PNG (matplotlib, Agg): losses on the left, the validation scores on the right.

The segmentation trainer's Pillow plot is drawn for Dice only; the heads need two losses and
two scores (accuracy, R²), which matplotlib draws with a legend in a few lines.
"""

from __future__ import annotations

from pathlib import Path

from voxpipe.atomic import atomic_path


def plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    left.plot(epochs, [h["loss"] for h in history], label="train loss")
    left.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.set_yscale("log")
    left.legend()
    for key, label in (("val_accuracy", "validation accuracy"), ("val_r2", "validation R²")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            right.plot(epochs, [v if v is not None else float("nan") for v in values], label=label)
    right.set_xlabel("epoch")
    right.set_ylim(min(0.0, min((h.get("val_r2") or 0.0) for h in history)), 1.03)  # 1.0 stays visible
    right.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

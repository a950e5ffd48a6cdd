"""Embedding scatter plots (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxpipe.atomic import atomic_path


def scatter(coords: np.ndarray, panels: dict[str, list], target: Path, title: str = "") -> Path:
    """One panel per colouring (``{"cluster": [...], "label": [...]}``), points coloured by category."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    xy = coords[:, :2] if coords.shape[1] >= 2 else np.column_stack([coords[:, 0], np.zeros(len(coords))])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (name, values) in zip(axes[0], panels.items()):
        categories = sorted({str(v) for v in values if v is not None})
        cmap = plt.get_cmap("tab10" if len(categories) <= 10 else "tab20")
        for c, category in enumerate(categories):
            chosen = np.array([str(v) == category for v in values])
            ax.scatter(xy[chosen, 0], xy[chosen, 1], s=28, color=cmap(c % cmap.N), label=category, edgecolors="none")
        unknown = np.array([v is None for v in values])
        if unknown.any():
            ax.scatter(xy[unknown, 0], xy[unknown, 1], s=20, color="lightgrey", label="(none)", edgecolors="none")
        ax.set_title(f"coloured by {name}")
        ax.set_xlabel("dimension 1")
        ax.set_ylabel("dimension 2")
        if len(categories) <= 20:
            ax.legend(fontsize=7, loc="best", frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(Path(target)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(target)

"""The `example.invert` implementation; imported only when a pipeline builds the stage."""

from __future__ import annotations

import torch

from voxpipe.plugin import record


class Invert:
    """Intensity inversion ``out = high + low - image`` as a MONAI-style dictionary transform.

    A callable ``case -> case`` that returns a shallow copy of the case dict, so it works as
    a VoxPipe stage and inside a plain ``monai.transforms.Compose``. Arithmetic on a MONAI
    ``MetaTensor`` returns a ``MetaTensor`` with the same affine and metadata. Integer images
    inverted within their own range keep their type; otherwise the result is floating point.

    Args:
        key: case key of the image to invert.
        low: lower bound; ``None`` uses the image's minimum.
        high: upper bound; ``None`` uses the image's maximum.
    """

    def __init__(self, key: str = "image", low: float | None = None, high: float | None = None) -> None:
        if (low is None) != (high is None):
            raise ValueError("give both low and high, or neither")
        if low is not None and not low < high:
            raise ValueError(f"low ({low}) must be below high ({high})")
        self.key, self.low, self.high = key, low, high

    def __call__(self, case: dict) -> dict:
        out = dict(case)
        image = case[self.key]
        if not isinstance(image, torch.Tensor):
            image = torch.as_tensor(image)
        if self.low is None:
            low, high, source = float(image.min()), float(image.max()), "image"
        else:
            low, high, source = float(self.low), float(self.high), "bounds"
        if image.is_floating_point() or source == "bounds":
            out[self.key] = (high + low) - image
        else:  # integer image inverted within its own range: the result fits its type
            out[self.key] = ((int(high) + int(low)) - image.long()).to(image.dtype)
        record(out, "example.invert", key=self.key, low=low, high=high, range=source)
        return out

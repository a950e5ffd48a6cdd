"""Otsu thresholding: the classical baseline every deep segmenter should beat."""

from __future__ import annotations

import numpy as np
import torch
from skimage.filters import threshold_otsu

from voxpipe.stage import record
from voxpipe_plugins.common.tensors import like, to_numpy


class OtsuSegmenter:
    def __init__(self, key: str = "image", output_key: str = "label", nbins: int = 256, invert: bool = False) -> None:
        self.key, self.output_key, self.nbins, self.invert = key, output_key, nbins, invert

    def __call__(self, case: dict) -> dict:
        image = case[self.key]
        values = to_numpy(image).astype(np.float32)
        intensity = values.mean(axis=0, keepdims=True)  # colour images: threshold the channel mean
        if np.ptp(intensity) == 0:
            raise ValueError("image is constant; Otsu's threshold is undefined")
        threshold = float(threshold_otsu(intensity, nbins=self.nbins))
        mask = intensity <= threshold if self.invert else intensity > threshold
        label = like(image, torch.from_numpy(mask.astype(np.uint8)), label_names={0: "background", 1: "foreground"})
        out = dict(case)
        out[self.output_key] = label
        record(out, "segment.otsu", threshold=round(threshold, 6), foreground_fraction=round(float(mask.mean()), 6))
        return out

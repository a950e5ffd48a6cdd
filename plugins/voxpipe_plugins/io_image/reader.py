"""Read 2D image files into MetaTensors laid out as MONAI's PILReader lays them out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from voxpipe.cases import Discovery, discover_by_suffix
from voxpipe.stage import record

IMAGE_SUFFIXES = {s: "image" for s in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")}


def discover(root: Path, params=None) -> Discovery:
    return discover_by_suffix(root, IMAGE_SUFFIXES)


def read_image2d(path: Path, mode: str = "keep", case_id: str = ""):
    """Load one 2D image as a (C, W, H) float32 MetaTensor with an identity affine."""
    with Image.open(path) as handle:
        handle.load()
        if mode == "gray" and handle.mode not in ("L", "I", "I;16", "F"):
            handle = handle.convert("L")
        elif mode == "rgb" and handle.mode != "RGB":
            handle = handle.convert("RGB")
        elif handle.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
            handle = handle.convert("RGB" if handle.mode not in ("LA", "1") else "L")
        pixels = np.asarray(handle)
    pixels = pixels.astype(np.float32)
    if pixels.ndim == 2:
        array = pixels.T[None]  # (H, W) -> (1, W, H)
    else:
        array = np.transpose(pixels, (2, 1, 0))  # (H, W, C) -> (C, W, H)
    meta = {"filename_or_obj": case_id, "original_channel_dim": "no_channel" if pixels.ndim == 2 else -1, "source_format": "image"}
    from voxpipe_plugins.common.tensors import make_metatensor  # torch + MONAI: not needed for discovery

    return make_metatensor(array, np.eye(4), meta)


class Image2DLoader:
    """Loads ``case["source"]`` into ``case[key]``."""

    def __init__(self, key: str = "image", mode: str = "keep") -> None:
        self.key = key
        self.mode = mode

    def __call__(self, case: dict) -> dict:
        out = dict(case)
        out[self.key] = read_image2d(case["source"].path, self.mode, case.get("case_id", ""))
        record(out, "load.image2d", shape=list(out[self.key].shape))
        return out

"""Read 2D image files into MetaTensors laid out as MONAI's PILReader lays them out.

The size an image will take is checked against the cap from its header, before a pixel is
decoded: a 410 KB PNG can declare 12000 x 12000 pixels and cost gigabytes once decoded.
Pillow is also told which formats it may parse, so a file named ``.png`` that is really
some other format Pillow knows (EPS runs Ghostscript, for one) is refused, not decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from voxpipe.cases import Discovery, discover_by_suffix
from voxpipe.limits import check_declared, max_bytes
from voxpipe.stage import record

IMAGE_SUFFIXES = {s: "image" for s in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")}
FORMATS = ("PNG", "JPEG", "TIFF", "BMP")  # what the suffixes above promise; nothing else is parsed
WHAT = "image file"
TO_RGB = ("P", "PA", "RGBA", "CMYK", "YCbCr")
TO_GRAY = ("LA", "1")


class ImageReadError(ValueError):
    """A 2D image that cannot be read: not one of the accepted formats, truncated or corrupt."""


def discover(root: Path, params=None) -> Discovery:
    return discover_by_suffix(root, IMAGE_SUFFIXES)


def output_channels(mode: str, wanted: str) -> int:
    """Channels of the array ``read_image2d`` returns for an image of Pillow ``mode``."""
    if wanted == "gray":
        return 1
    if wanted == "rgb" or mode in TO_RGB:
        return 3
    if mode in TO_GRAY:
        return 1
    return Image.getmodebands(mode)


def read_image2d(path: Path, mode: str = "keep", case_id: str = "", max_gib: float | None = None):
    """Load one 2D image as a (C, W, H) float32 MetaTensor with an identity affine.

    Refused before decoding: formats other than PNG, JPEG, TIFF and BMP, and images whose
    float32 array (width x height x channels x 4 bytes) would exceed ``max_gib`` (default:
    ``$VOXPIPE_MAX_GIB``, else 16 GiB) or that pass Pillow's own decompression-bomb limit.
    Multi-page files (TIFF) give their first page. Pillow's messages quote the file's
    path, which may name the patient, so its errors are reworded.
    """
    cap = max_bytes(max_gib)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our cap decides; its error still applies
            handle = Image.open(path, formats=FORMATS)
    except FileNotFoundError:
        raise ImageReadError(f"{WHAT} not found (moved or deleted since the input was listed)") from None
    except Image.DecompressionBombError:
        raise ImageReadError(
            f"{WHAT}: refused: more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels, Pillow's "
            "decompression-bomb limit; split or downsample the image"
        ) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for files it cannot identify
        raise ImageReadError(
            f"{WHAT}: not a readable {', '.join(FORMATS)} image ({type(exc).__name__}); convert it to PNG or TIFF"
        ) from None
    with handle:
        width, height = handle.size
        check_declared(f"{WHAT} ({handle.format})", (output_channels(handle.mode, mode), width, height), 4, cap)
        try:
            handle.load()
            if mode == "gray" and handle.mode not in ("L", "I", "I;16", "F"):
                handle = handle.convert("L")
            elif mode == "rgb" and handle.mode != "RGB":
                handle = handle.convert("RGB")
            elif handle.mode in TO_RGB + TO_GRAY:
                handle = handle.convert("RGB" if handle.mode not in TO_GRAY else "L")
            pixels = np.asarray(handle)
        except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error, zlib.error, ...
            raise ImageReadError(
                f"{WHAT}: the {handle.format} data is truncated or corrupt ({type(exc).__name__}); copy or export it again"
            ) from None
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

    def __init__(self, key: str = "image", mode: str = "keep", max_gib: float | None = None) -> None:
        self.key = key
        self.mode = mode
        self.max_gib = max_gib

    def __call__(self, case: dict) -> dict:
        out = dict(case)
        out[self.key] = read_image2d(case["source"].path, self.mode, case.get("case_id", ""), self.max_gib)
        record(out, "load.image2d", shape=list(out[self.key].shape))
        return out

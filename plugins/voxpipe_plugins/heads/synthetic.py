"""A synthetic lesion dataset for trying (and testing) the heads: grey 2D phantoms with or without a lesion.

Each image is a noisy elliptical "organ" on a dark background; half of them carry a bright
round lesion. The class is ``lesion`` / ``absent`` and the regression target is the lesion's
diameter in pixels (0 without a lesion). Two images per synthetic patient, so the
patient-grouped split has something to group. Nothing is downloaded; the same seed gives the
same files.

    python -m voxpipe_plugins.heads.synthetic build/lesions --count 160
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def phantom(rng: np.random.Generator, size: int, diameter: float, noise: float) -> np.ndarray:
    """One (size, size) uint8 image; ``diameter`` 0 means no lesion."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    ry, rx = rng.uniform(0.32, 0.42, 2) * size
    cy, cx = c + rng.uniform(-0.05, 0.05, 2) * size
    image = np.full((size, size), 20.0, np.float32)
    organ = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    image[organ] = rng.uniform(90, 110)
    if diameter > 0:
        r = diameter / 2
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.45)
        ly, lx = cy + dist * (ry - r) * np.sin(angle), cx + dist * (rx - r) * np.cos(angle)
        image[(yy - ly) ** 2 + (xx - lx) ** 2 <= r * r] = rng.uniform(170, 200)
    image += rng.normal(0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_dataset(
    folder: Path,
    count: int = 160,
    size: int = 64,
    seed: int = 0,
    noise: float = 12.0,
    min_diameter: float = 6.0,
    max_diameter: float = 20.0,
) -> Path:
    """Write ``count`` PNGs under ``folder/images`` and ``folder/data.csv`` (image,class,target,patient); returns the CSV."""
    from PIL import Image

    from voxpipe.atomic import atomic_path

    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        has_lesion = i % 2 == 1
        diameter = float(np.round(rng.uniform(min_diameter, max_diameter), 1)) if has_lesion else 0.0
        name = f"img{i:04d}.png"
        with atomic_path(images / name) as tmp:
            Image.fromarray(phantom(rng, size, diameter, noise)).save(tmp, format="PNG")
        rows.append(
            {
                "image": f"images/{name}",
                "class": "lesion" if has_lesion else "absent",
                "target": diameter,
                "patient": f"P{(i // 4) * 2 + (i % 2):04d}",
            }
        )  # two images of one class per patient
    table = folder / "data.csv"
    with atomic_path(table) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "class", "target", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=160)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_dataset(args.folder, args.count, args.size, args.seed))


if __name__ == "__main__":
    main()

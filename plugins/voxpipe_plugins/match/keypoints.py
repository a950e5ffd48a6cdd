"""2D image-to-image matching: keypoints, descriptors and a RANSAC-fitted transform (scikit-image).

ORB (Rublee et al. 2011: FAST corners, oriented BRIEF binary descriptors) is fast;
SIFT (Lowe 2004: difference-of-Gaussians blobs, gradient histograms) is slower and more
robust to scale and contrast. Descriptors are matched both ways (cross-check) with
Lowe's ratio test, and a rigid (rotation + shift) or similarity (plus scale) transform is
fitted to the matches by RANSAC, so wrong matches (outliers) do not bias it.

Coordinates follow scikit-image's transforms: ``(x, y) = (column, row)`` in pixels, and
the transform maps *moving* points onto *fixed* points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxpipe.atomic import atomic_path
from voxpipe.errors import UsageError


@dataclass
class KeypointMatch:
    matrix: np.ndarray  # 3x3, moving (x, y) -> fixed (x, y), pixels
    rotation_deg: float
    translation_px: tuple[float, float]
    scale: float
    keypoints: tuple[int, int]
    matches: int
    inliers: int
    model: object
    fixed_keypoints: np.ndarray
    moving_keypoints: np.ndarray
    pairs: np.ndarray
    inlier_mask: np.ndarray

    def as_dict(self) -> dict:
        return {
            "convention": "fixed_xy = matrix @ [moving_x, moving_y, 1]; x = column, y = row, pixels",
            "matrix": np.round(self.matrix, 8).tolist(),
            "rotation_deg": self.rotation_deg,
            "translation_px": list(self.translation_px),
            "scale": self.scale,
            "keypoints": {"fixed": self.keypoints[0], "moving": self.keypoints[1]},
            "matches": self.matches,
            "inliers": self.inliers,
        }


def grey(image: np.ndarray) -> np.ndarray:
    """2D float image in [0, 1] (colour is averaged, a channel axis of 1 is dropped)."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    elif array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].mean(axis=-1)
    if array.ndim != 2:
        raise UsageError(f"keypoint matching needs 2D images, got shape {array.shape}")
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _detect(image: np.ndarray, detector: str, n_keypoints: int):
    from skimage.feature import ORB, SIFT

    if detector == "orb":
        extractor = ORB(n_keypoints=n_keypoints, fast_threshold=0.05)
    elif detector == "sift":
        extractor = SIFT(n_octaves=4, n_scales=3)
    else:
        raise UsageError(f"unknown detector {detector!r}; use orb or sift")
    try:
        extractor.detect_and_extract(image)
    except RuntimeError as exc:  # skimage raises when it finds nothing
        raise UsageError(f"{detector}: no keypoints found ({exc}); the image may be flat or too small") from None
    keypoints, descriptors = extractor.keypoints, extractor.descriptors
    if detector == "sift" and len(keypoints) > n_keypoints:  # SIFT has no count limit: cap the work of matching
        keypoints, descriptors = keypoints[:n_keypoints], descriptors[:n_keypoints]
    return keypoints, descriptors


def match_images(
    fixed: np.ndarray,
    moving: np.ndarray,
    detector: str = "orb",
    model: str = "rigid",
    n_keypoints: int = 800,
    ratio: float = 0.8,
    residual_px: float = 2.0,
    seed: int = 0,
) -> KeypointMatch:
    """Detect, describe and match keypoints; fit ``model`` (rigid | similarity) moving -> fixed with RANSAC."""
    from skimage.feature import match_descriptors
    from skimage.measure import ransac
    from skimage.transform import EuclideanTransform, SimilarityTransform

    fixed, moving = grey(fixed), grey(moving)
    kp_f, d_f = _detect(fixed, detector, n_keypoints)
    kp_m, d_m = _detect(moving, detector, n_keypoints)
    pairs = match_descriptors(d_m, d_f, cross_check=True, max_ratio=ratio)
    if len(pairs) < 3:
        raise UsageError(f"only {len(pairs)} keypoint matches (need 3); try --detector sift or a larger --ratio")
    src = kp_m[pairs[:, 0]][:, ::-1]  # (row, col) -> (x, y)
    dst = kp_f[pairs[:, 1]][:, ::-1]
    transform = {"rigid": EuclideanTransform, "similarity": SimilarityTransform}.get(model)
    if transform is None:
        raise UsageError(f"unknown model {model!r}; use rigid or similarity")
    fitted, inliers = ransac(
        (src, dst), transform, min_samples=3, residual_threshold=residual_px, max_trials=2000, rng=np.random.default_rng(seed)
    )
    if fitted is None or inliers is None or inliers.sum() < 3:
        raise UsageError("RANSAC found no consistent transform; the images may not overlap")
    m = np.asarray(fitted.params, dtype=np.float64)
    scale = float(math.sqrt(abs(np.linalg.det(m[:2, :2]))))
    return KeypointMatch(
        m,
        float(math.degrees(math.atan2(m[1, 0], m[0, 0]))),
        (float(m[0, 2]), float(m[1, 2])),
        scale,
        (len(kp_f), len(kp_m)),
        int(len(pairs)),
        int(inliers.sum()),
        fitted,
        kp_f,
        kp_m,
        pairs,
        inliers,
    )


def warp_onto_fixed(moving: np.ndarray, result: KeypointMatch, shape: tuple[int, int]) -> np.ndarray:
    """The moving image resampled onto the fixed image's pixel grid (linear interpolation)."""
    from skimage.transform import warp

    return warp(grey(moving), result.model.inverse, output_shape=shape, order=1, preserve_range=True)


def plot_matches(fixed: np.ndarray, moving: np.ndarray, result: KeypointMatch, target: Path) -> Path:
    """Side-by-side PNG of the two images with the RANSAC inliers joined by lines."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from skimage.feature import plot_matched_features

    fig, ax = plt.subplots(figsize=(10, 5))
    inlier_pairs = result.pairs[result.inlier_mask][:, ::-1]  # (fixed index, moving index)
    plot_matched_features(
        grey(fixed),
        grey(moving),
        keypoints0=result.fixed_keypoints,
        keypoints1=result.moving_keypoints,
        matches=inlier_pairs,
        ax=ax,
        only_matches=True,
    )
    ax.set_title(f"{result.inliers} inliers of {result.matches} matches; rotation {result.rotation_deg:.2f} deg")
    ax.axis("off")
    fig.tight_layout()
    with atomic_path(Path(target)) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(target)

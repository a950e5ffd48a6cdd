"""The report checked at a glance: the thumbnail's slice, contours, orientation letters, scale bar,
the volume plot's outliers, failures first, row thumbnails, sortable tables (issue 16, deliverable 5).
"""

from __future__ import annotations

import numpy as np
import pytest

from voxpipe.thumbnail import AXIAL, PALETTE, best_slice, contours, planes, render, scale_length


def _labels() -> np.ndarray:
    """A big label 1 (the body) largest at z=2, a small label 2 largest at z=7."""
    labels = np.zeros((20, 20, 10), dtype=np.int16)
    labels[2:18, 2:18, 0:10] = 1
    labels[2:18, 2:18, 2] = 1
    labels[8:10, 8:10, 6] = 2
    labels[7:12, 7:12, 7] = 2
    labels[8:10, 8:10, 8] = 2
    return labels


@pytest.mark.parametrize("small_value", [2, 1, 7])
def test_slice_is_where_the_smallest_label_is_largest(small_value):
    labels = _labels()
    swap = labels.copy()
    swap[labels == 2] = small_value
    swap[labels == 1] = 3 if small_value != 3 else 4
    assert best_slice(swap, axis=2) == 7
    # the body label alone: its largest slice (the first of equal ones)
    assert best_slice((labels == 1).astype(np.int16), axis=2) == 0
    assert best_slice(np.zeros((4, 4, 6), dtype=np.int16), axis=2) == 3


def test_planes_cut_through_the_smallest_label():
    image = np.random.default_rng(0).normal(size=(1, 20, 20, 10)).astype(np.float32)
    _, plane, _ = planes(image, np.eye(4), _labels(), "largest_label")
    assert plane is not None and (plane == 2).sum() == 25
    _, middle, _ = planes(image, np.eye(4), _labels(), "middle")
    assert (middle == 2).sum() == 0


def test_contours_keep_the_anatomy_inside_visible():
    labels = np.zeros((40, 40), dtype=np.int32)
    labels[10:30, 10:30] = 3
    edges = contours(labels, width=2)
    assert set(np.unique(edges)) == {0, 3}
    assert edges[10, 15] == 3 and edges[11, 15] == 3 and edges[12, 15] == 0
    assert (edges[12:28, 12:28] == 0).all(), "the inside is not filled"
    grey = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (40, 1))
    picture = np.asarray(render(grey, labels, (1.0, 1.0), 0.0, 40))
    plain = np.asarray(render(grey, None, (1.0, 1.0), 0.0, 40))
    assert (picture[20, 20] == plain[20, 20]).all(), "alpha 0: the inside is the anatomy as it is"
    assert (picture[10, 20] == PALETTE[2].astype(np.uint8)).all(), "the contour is drawn in the label's colour"


def test_orientation_letters_and_scale_bar_are_drawn_on_volumes_only():
    grey = np.full((64, 64), 0.5, dtype=np.float32)
    grey[0, 0] = 0.0
    grey[-1, -1] = 1.0
    bare = np.asarray(render(grey, None, (2.0, 2.0), 0.0, 128))
    marked = np.asarray(render(grey, None, (2.0, 2.0), 0.0, 128, AXIAL, True))
    yellow = (marked[..., 0] > 200) & (marked[..., 1] > 200) & (marked[..., 2] < 60)
    h, w = yellow.shape
    for region in (
        yellow[:20, w // 2 - 10 : w // 2 + 10],
        yellow[-20:, w // 2 - 10 : w // 2 + 10],
        yellow[h // 2 - 12 : h // 2 + 12, :16],
        yellow[h // 2 - 12 : h // 2 + 12, -16:],
    ):
        assert region.any(), "a letter at each edge's midpoint"
    white_bar = (marked[-10:-6, :] == 255).all(axis=-1).any(axis=0).sum()
    # 128 mm wide picture at 1 px/mm: a 20 mm bar is 20 px
    assert scale_length(128.0) == 20.0 and abs(white_bar - 20 * bare.shape[1] / 128) <= 2
    assert not ((bare[..., 0] > 200) & (bare[..., 2] < 60)).any(), "no letters unless asked"


@pytest.mark.parametrize(("width", "expected"), [(5.0, 1.0), (100.0, 20.0), (260.0, 50.0), (512.0, 100.0), (0.3, 0.05)])
def test_scale_bar_lengths_are_round(width, expected):
    assert scale_length(width) == pytest.approx(expected)

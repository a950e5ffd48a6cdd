"""value_counts / label_values against np.unique, for every dtype and layout label maps come in."""

from __future__ import annotations

import numpy as np
import pytest

from voxpipe.label_counts import CHUNK, label_values, value_counts


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float32])
@pytest.mark.parametrize("order", ["C", "F"])
def test_counts_match_unique(dtype, order):
    rng = np.random.default_rng(1)
    low = -3 if np.dtype(dtype).kind in "if" else 0
    array = np.asarray(rng.integers(low, 9, size=(60, 100, 200)), dtype=dtype, order=order)  # more than one chunk
    values, counts = value_counts(array)
    expected_values, expected_counts = np.unique(array[array >= 1].astype(np.int64), return_counts=True)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(counts, expected_counts)
    assert label_values(array) == [int(v) for v in expected_values]


def test_more_voxels_than_one_chunk_are_all_counted():
    array = np.zeros(3 * CHUNK + 17, dtype=np.uint8)
    array[::5] = 2
    array[-1] = 7
    values, counts = value_counts(array)
    assert values.tolist() == [2, 7] and counts.tolist() == [int(np.count_nonzero(array == 2)), 1]


def test_booleans_empty_maps_and_instance_maps():
    mask = np.zeros((4, 5), dtype=bool)
    mask[1, 2] = mask[3, 3] = True
    assert [a.tolist() for a in value_counts(mask)] == [[1], [2]]
    assert [a.tolist() for a in value_counts(np.zeros((3, 3), np.uint8))] == [[], []]
    assert [a.tolist() for a in value_counts(np.zeros(0, np.int32))] == [[], []]
    instances = np.array([0, 5_000_000, 3, 3, 5_000_000, -2], dtype=np.int64)  # sparse, large ids
    assert [a.tolist() for a in value_counts(instances)] == [[3, 5_000_000], [2, 2]]
    assert label_values(np.array([0.0, 1.9, 2.0, -1.0], dtype=np.float32)) == [1, 2]

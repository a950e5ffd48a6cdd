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


def test_label_volumes_in_ml_with_names_and_areas_in_pixels():
    """The preview/montage writers record these for the report: mL from the affine's voxel volume, names from the label table."""
    import torch
    from monai.data import MetaTensor

    from voxpipe_plugins.label.volumes import label_volumes, report_label_volumes

    array = np.zeros((1, 10, 10, 4), dtype=np.uint8)
    array[0, :5] = 1
    array[0, 5:7, :3] = 2
    affine = torch.tensor(np.diag([2.0, 1.5, 3.0, 1.0]))  # 9 mm³ a voxel
    label = MetaTensor(torch.as_tensor(array), affine=affine, meta={"label_names": {"1": "lungs"}})
    assert label_volumes({"label": label}) == [("lungs", round(200 * 9 / 1000, 3), "mL"), ("label 2", round(24 * 9 / 1000, 3), "mL")]
    assert label_volumes({"mask": label, "label_names": {1: "left", 2: "right"}}, "mask")[1][0] == "right"
    flat = np.zeros((1, 6, 5), dtype=np.int32)
    flat[0, :2] = 3
    assert label_volumes({"label": flat}) == [("label 3", 10, "px")]
    assert label_volumes({}) == [] and label_volumes({"label": np.zeros((4, 4))}) == []

    case: dict = {"label": label}
    report_label_volumes(case)
    assert [(m["name"], m["unit"], m["label"]) for m in case["report"]["metrics"]] == [
        ("volumes_ml.lungs", "mL", "lungs"),
        ("volumes_ml.label 2", "mL", "label 2"),
    ]


def test_preview_and_montage_record_their_picture_and_the_label_volumes(tmp_path):
    import torch
    from monai.data import MetaTensor

    from voxpipe_plugins.preview.montage import MontageWriter
    from voxpipe_plugins.preview.render import PreviewWriter

    image = MetaTensor(torch.rand(1, 12, 10, 6), affine=torch.eye(4, dtype=torch.float64))
    label = MetaTensor(
        (torch.arange(12)[None, :, None, None] < 4).expand(1, 12, 10, 6).to(torch.uint8), affine=torch.eye(4, dtype=torch.float64)
    )
    for writer, name in ((PreviewWriter(), "preview.png"), (MontageWriter(filename="m.png"), "m.png")):
        case = writer({"image": image, "label": label, "output_dir": tmp_path})
        assert case["report"]["pictures"] == [{"path": name, "caption": ""}] and (tmp_path / name).is_file()
        assert [(m["name"], m["value"]) for m in case["report"]["metrics"]] == [("volumes_ml.label 1", 0.24)]
    assert "report" not in PreviewWriter(label_key=None, filename="n.png")({"image": image, "output_dir": tmp_path}).get("report", {}).get(
        "metrics", {}
    )

"""`voxpipe evaluate`: metrics against hand-computed values, matching, the side-by-side table."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from conftest import REPO, write_nifti

from voxpipe_plugins.evaluate.metrics import mean_std, score_label


def test_dice_and_iou_exact_on_tiny_arrays():
    ref = np.zeros((4, 4), dtype=bool)
    ref[0:2, 0:2] = True  # 4 voxels
    pred = np.zeros((4, 4), dtype=bool)
    pred[0, 0] = pred[0, 1] = pred[3, 3] = True  # 3 voxels, 2 shared
    score = score_label(pred, ref, (1.0, 1.0))
    assert score.dice == pytest.approx(2 * 2 / (4 + 3))
    assert score.iou == pytest.approx(2 / (4 + 3 - 2))
    assert (score.ref_voxels, score.pred_voxels) == (4, 3)


def test_distances_on_parallel_slabs_respect_anisotropic_spacing():
    ref = np.zeros((12, 6, 5), dtype=bool)
    pred = np.zeros_like(ref)
    ref[3] = True
    pred[6] = True  # 3 voxels away along axis 0
    score = score_label(pred, ref, (2.0, 1.0, 1.0))
    assert score.hd95_mm == pytest.approx(6.0) and score.assd_mm == pytest.approx(6.0)
    iso = score_label(pred, ref, (1.0, 1.0, 1.0))
    assert iso.hd95_mm == pytest.approx(3.0)


def _surface(mask):
    from scipy import ndimage

    return np.argwhere(mask & ~ndimage.binary_erosion(mask))


def test_shifted_cube_distances_match_brute_force():
    ref = np.zeros((20, 20, 12), dtype=bool)
    ref[5:13, 5:13, 3:9] = True
    pred = np.roll(ref, 2, axis=0)  # shifted by 2 voxels = 3 mm along axis 0
    spacing = np.array([1.5, 1.0, 2.5])
    a, b = _surface(pred) * spacing, _surface(ref) * spacing
    distances = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    pred_to_ref, ref_to_pred = distances.min(axis=1), distances.min(axis=0)
    hd95 = max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95))
    assd = np.concatenate([pred_to_ref, ref_to_pred]).mean()
    score = score_label(pred, ref, tuple(spacing))
    assert hd95 == pytest.approx(3.0)  # the moved faces are 3 mm from their old place
    assert score.hd95_mm == pytest.approx(hd95, rel=1e-5)
    assert score.assd_mm == pytest.approx(assd, rel=1e-5)
    assert 0 < score.assd_mm < 3.0
    assert score.dice == pytest.approx(2 * 6 / 16)


def test_empty_structures():
    empty = np.zeros((5, 5, 5), dtype=bool)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = True
    both = score_label(empty, empty, (1, 1, 1))
    assert (both.dice, both.iou) == (1.0, 1.0) and math.isnan(both.hd95_mm) and math.isnan(both.assd_mm)
    for pred, ref in ((empty, full), (full, empty)):
        one = score_label(pred, ref, (1, 1, 1))
        assert (one.dice, one.iou) == (0.0, 0.0) and math.isinf(one.hd95_mm) and math.isinf(one.assd_mm)
    assert mean_std([1.0, math.nan, 3.0])[:2] == (2.0, 1.0)
    assert math.isinf(mean_std([1.0, math.inf])[0])


def test_stem_rules():
    from voxpipe_plugins.evaluate.compare import stem

    assert stem("case01.nii.gz") == stem("case01_seg.nii.gz") == stem("Case01_label.nii") == stem("case01-pred.nii.gz") == "case01"
    assert stem("case01_0000.nii.gz") == "case01" and stem("series7") == "series7"


@pytest.fixture
def folders(tmp_path):
    """References for 3 cases (labels 1 and 2) and two prediction folders named differently."""
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    ref_dir, good, worse = tmp_path / "ref", tmp_path / "good", tmp_path / "worse"
    for i in range(3):
        ref = np.zeros((16, 16, 8), dtype=np.uint8)
        ref[2:8, 2:8, 2:6] = 1
        ref[9:14, 9:14, 2:6] = 2
        write_nifti(ref_dir / f"case{i}_label.nii.gz", ref, affine)
        write_nifti(good / f"case{i}_pred.nii.gz", ref, affine)
        shifted = np.roll(ref, i + 1, axis=0)
        if i == 2:
            shifted[shifted == 2] = 0  # label 2 missed entirely in one case
        write_nifti(worse / f"case{i}.nii.gz", shifted, affine)
    (ref_dir / "case0_label.labels.json").write_text(json.dumps({"0": "background", "1": "liver", "2": "kidney"}))
    return ref_dir, good, worse


def test_side_by_side_table(cli, tmp_path, folders):
    ref_dir, good, worse = folders
    out = tmp_path / "eval"
    result = cli("evaluate", "--ref", ref_dir, "--pred", f"unet={good}", "--pred", f"classical={worse}", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "Dice unet" in result.stdout and "Dice classical" in result.stdout and "liver" in result.stdout
    assert {p.name for p in out.iterdir()} == {"per_case.csv", "summary.csv", "evaluation.md"}
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert len(rows) == 2 * 3 * 2  # pipelines x cases x labels
    summary = {(r["pipeline"], r["name"]): r for r in csv.DictReader((out / "summary.csv").open())}
    assert float(summary[("unet", "liver")]["dice_mean"]) == 1.0 and float(summary[("unet", "liver")]["hd95_mm_mean"]) == 0.0
    assert float(summary[("classical", "liver")]["dice_mean"]) < 1.0
    assert summary[("classical", "kidney")]["hd95_mm_mean"] == "inf"  # one case missed it
    missed = [r for r in rows if r["pipeline"] == "classical" and r["case"] == "case2" and r["name"] == "kidney"][0]
    assert float(missed["dice"]) == 0.0 and missed["assd_mm"] == "inf"
    shift1 = [r for r in rows if r["pipeline"] == "classical" and r["case"] == "case0" and r["name"] == "liver"][0]
    assert float(shift1["dice"]) == pytest.approx(2 * 5 / 12)  # 6-voxel-wide box moved by 1 along axis 0
    markdown = (out / "evaluation.md").read_text()
    assert "| 1 liver |" in markdown and "± " in markdown
    again = cli("evaluate", "--ref", ref_dir, "--pred", f"unet={good}", "--pred", f"classical={worse}", "-o", out)
    assert again.exit_code == 2 and "--force" in again.error_lines[0] and (out / "evaluation.md").read_text() == markdown
    as_json = cli("evaluate", "--ref", ref_dir, "--pred", f"unet={good}", "--pred", f"classical={worse}", "--json")
    data = json.loads(as_json.stdout)  # strict JSON: the missed label's infinite distance is null
    assert data["pipelines"] == ["unet", "classical"] and len(data["per_case"]) == len(rows)
    kidney = next(r for r in data["summary"] if r["pipeline"] == "classical" and r["name"] == "kidney")
    assert kidney["hd95_mm_mean"] is None and kidney["dice_mean"] < 1.0


def test_run_output_matched_through_source_map(cli, tmp_path):
    from voxpipe_plugins.segment.phantoms import ct_phantom

    inputs, refs = tmp_path / "in", tmp_path / "ref"
    for i in range(2):
        phantom = ct_phantom(shape=(48, 40, 12), spacing=(4.0, 4.0, 8.0), seed=i)
        write_nifti(inputs / f"patient{i}.nii.gz", phantom.image, phantom.affine)
        write_nifti(refs / f"patient{i}_seg.nii.gz", phantom.truth["bone"].astype(np.uint8), phantom.affine)
    source_map = tmp_path / "private" / "map.tsv"
    run = cli("run", REPO / "configs" / "ct-bone.yaml", "-i", inputs, "-o", tmp_path / "run", "--source-map", source_map)
    assert run.exit_code == 0, run.stderr
    no_map = cli("evaluate", "--ref", refs, "--pred", tmp_path / "run")
    assert no_map.exit_code == 2 and len(no_map.error_lines) == 1 and "--source-map" in no_map.error_lines[0]
    result = cli("evaluate", "--ref", refs, "--pred", f"bone={tmp_path / 'run'}", "--source-map", source_map)
    assert result.exit_code == 0, result.stderr
    assert "patient0" in result.stdout and "patient1" in result.stdout and "1 bone" in result.stdout


def test_grid_mismatch_and_usage_errors(cli, tmp_path, folders):
    ref_dir, good, _ = folders
    bad = tmp_path / "bad"
    write_nifti(bad / "case1.nii.gz", np.zeros((8, 8, 8), dtype=np.uint8))
    result = cli("evaluate", "--ref", ref_dir, "--pred", bad)
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "case1" in result.error_lines[0]
    moved = tmp_path / "moved"
    write_nifti(moved / "case1.nii.gz", np.zeros((16, 16, 8), dtype=np.uint8), np.diag([1.0, 1.0, 3.0, 1.0]))
    result = cli("evaluate", "--ref", ref_dir, "--pred", moved)
    assert result.exit_code == 2 and "affines differ" in result.error_lines[0]
    result = cli("evaluate", "--ref", tmp_path / "nowhere", "--pred", good)
    assert result.exit_code == 2 and len(result.error_lines) == 1
    unrelated = tmp_path / "unrelated"
    write_nifti(unrelated / "other.nii.gz", np.zeros((16, 16, 8), dtype=np.uint8))
    result = cli("evaluate", "--ref", ref_dir, "--pred", unrelated)
    assert result.exit_code == 2 and "match" in result.error_lines[0]


def test_empty_prediction_folder_cases_do_not_crash(cli, tmp_path, folders):
    ref_dir, _, _ = folders
    empty = tmp_path / "empty"
    for i in range(3):
        write_nifti(empty / f"case{i}.nii.gz", np.zeros((16, 16, 8), dtype=np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]))
    result = cli("evaluate", "--ref", ref_dir, "--pred", empty)
    assert result.exit_code == 0, result.stderr
    assert "inf" in result.stdout

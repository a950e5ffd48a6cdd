"""The heads really learn: the seed's multi-task VGG (class + lesion diameter) on synthetic phantoms, then test and run.

One short CPU training run (a narrow vgg11_bn on 64² images) is shared by the tests in this
module; the bad-input tests use tiny tables and never reach training.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from voxpipe_plugins.heads.synthetic import write_dataset

CONFIG = """\
version: 1
name: heads-synthetic
device: cpu
stages:
  - use: load.image2d
    with: {{mode: gray}}
  - use: head.vgg
    id: lesion
    with: {{arch: {arch}, width: 0.125, in_channels: 1, weights: run/best.safetensors}}
  - use: write.predictions
training:
  task: heads
  data: {data}
  epochs: {epochs}
  batch_size: 16
  lr: 0.002
  patience: 4
  threads: 2
"""


def write_config(folder: Path, data: str = "data/data.csv", epochs: int = 8, arch: str = "vgg11_bn", name: str = "c.yaml") -> Path:
    path = folder / name
    path.write_text(CONFIG.format(data=data, epochs=epochs, arch=arch))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from voxpipe.cli import main

    folder = tmp_path_factory.mktemp("heads")
    write_dataset(folder / "data", count=160, size=64, seed=0)
    config = write_config(folder)
    threads = torch.get_num_threads()
    try:
        main(["train", str(config), "-o", str(folder / "run")])
    except SystemExit as exc:
        assert exc.code in (0, None), f"voxpipe train exited {exc.code}"
    finally:
        torch.set_num_threads(threads)
    return folder, config


def test_it_really_learns(trained):
    folder, _ = trained
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    assert metrics["split"] == "test"
    cls, reg = metrics["classification"], metrics["regression"]
    assert cls["n"] >= 20 and cls["accuracy"] >= 0.9, cls
    assert reg["r2"] is not None and reg["r2"] >= 0.8, reg
    assert sum(map(sum, cls["confusion_matrix"])) == cls["n"]
    assert {"balanced_accuracy", "roc_auc", "f1"} <= set(cls) and {"mae", "rmse"} <= set(reg)
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.state.pt", "learning_curve.png", "log.jsonl"):
        assert (folder / "run" / name).is_file(), name
    sidecar = json.loads((folder / "run" / "best.json").read_text())
    assert sidecar["classes"] == ["absent", "lesion"] and sidecar["architecture"]["arch"] == "vgg11_bn"


def test_voxpipe_test_reproduces_the_held_out_metrics(trained, cli):
    folder, config = trained
    out = folder / "test-metrics.json"
    result = cli("test", config, "--checkpoint", folder / "run" / "best.safetensors", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "accuracy" in result.stdout and "R²" in result.stdout and "confusion matrix" in result.stdout
    again, saved = json.loads(out.read_text()), json.loads((folder / "run" / "metrics.json").read_text())
    assert again["classification"]["accuracy"] == pytest.approx(saved["classification"]["accuracy"])
    assert again["regression"]["r2"] == pytest.approx(saved["regression"]["r2"], abs=1e-6)
    out.write_text("mine")
    refused = cli("test", config, "--checkpoint", folder / "run" / "best.safetensors", "-o", out)
    assert refused.exit_code == 2 and "--force" in refused.error_lines[0] and out.read_text() == "mine"
    as_json = cli("test", config, "--checkpoint", folder / "run" / "best.safetensors", "-o", out, "--force", "--json")
    assert as_json.exit_code == 0, as_json.stderr
    assert json.loads(as_json.stdout) == json.loads(out.read_text()) == again


def test_trained_head_runs_in_voxpipe_run(trained, cli):
    """`voxpipe run` with the training config writes predictions.json per case, and they are right."""
    import shutil

    folder, config = trained
    with (folder / "data" / "data.csv").open() as handle:
        rows = list(csv.DictReader(handle))[:24]
    inputs = folder / "run-input"
    inputs.mkdir()
    for row in rows:
        shutil.copy(folder / "data" / row["image"], inputs)
    result = cli("run", config, "-i", inputs, "-o", folder / "out", "--source-map", folder / "map.tsv")
    assert result.exit_code == 0, result.stderr
    source = dict(line.split("\t")[:2] for line in (folder / "map.tsv").read_text().splitlines() if "\t" in line)
    truth = {row["image"].split("/")[-1]: row for row in rows}
    right, errors = 0, []
    for case_id, path in source.items():
        if case_id not in {p.parent.name for p in (folder / "out").glob("*/predictions.json")}:
            continue
        outputs = json.loads((folder / "out" / case_id / "predictions.json").read_text())["outputs"]
        assert set(outputs) == {"class", "class_name", "probabilities", "regression"}
        assert abs(sum(outputs["probabilities"]) - 1) < 1e-4
        row = truth[Path(path.strip()).name]
        right += outputs["class_name"] == row["class"]
        errors.append(abs(outputs["regression"] - float(row["target"])))
    assert len(errors) == 24
    assert right / 24 >= 0.9 and float(np.mean(errors)) < 3.0, (right, np.mean(errors))


def test_wrong_architecture_checkpoint_is_one_line(trained, cli, tmp_path):
    folder, _ = trained
    other = write_config(folder, arch="vgg13_bn", name="other.yaml")
    result = cli("test", other, "--checkpoint", folder / "run" / "best.safetensors")
    assert result.exit_code == 2
    assert len(result.error_lines) == 1 and "trained as a different head: arch 'vgg11_bn' (stage: 'vgg13_bn')" in result.error_lines[0]


# ---------------------------------------------------------------- bad input: clear lines, nothing written


def small_table(folder: Path, rows: list[dict]) -> Path:
    from PIL import Image

    (folder / "img").mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(folder / "img" / f"{i}.png")
    with (folder / "t.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "class", "target", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "t.csv"


GOOD = [{"image": f"img/{i % 4}.png", "class": "ab"[i % 2], "target": i, "patient": f"p{i}"} for i in range(8)]


@pytest.mark.parametrize(
    "change,expected",
    [
        ({3: {"image": "img/missing.png"}}, "t.csv row 5: image img/missing.png does not exist"),
        ({2: {"class": ""}}, "t.csv row 4: empty `class`"),
        ({6: {"target": "nan"}}, "t.csv row 8: `target` is nan; regression targets must be finite numbers"),
        ({1: {"target": "big"}}, "t.csv row 3: `target` is 'big', not a number"),
        ({7: {"class": "c"}}, "class 'c' has one sample (row 9)"),
    ],
)
def test_bad_tables_name_the_row_and_write_nothing(tmp_path, cli, change, expected):
    rows = [dict(r, **change.get(i, {})) for i, r in enumerate(GOOD)]
    small_table(tmp_path, rows)
    config = write_config(tmp_path, data="t.csv", epochs=1)
    result = cli("train", config, "-o", tmp_path / "run")
    assert result.exit_code == 2, result.stderr
    assert len(result.error_lines) == 1 and expected in result.error_lines[0], result.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*"))


def test_missing_column_is_named(tmp_path, cli):
    small_table(tmp_path, [{k: v for k, v in r.items()} for r in GOOD])
    text = (tmp_path / "t.csv").read_text().replace("target", "diameter", 1)
    (tmp_path / "t.csv").write_text(text)
    result = cli("train", write_config(tmp_path, data="t.csv", epochs=1), "-o", tmp_path / "run")
    assert result.exit_code == 2 and "column(s) target missing" in result.error_lines[0]


# ---------------------------------------------------------------- pieces


def test_split_keeps_patients_together_and_is_reproducible(tmp_path):
    from voxpipe_plugins.heads.table import Columns, read_table, split_rows

    table = write_dataset(tmp_path / "d", count=80, size=32, seed=1)
    rows = read_table(table, Columns())
    a, b = split_rows(rows, 0.2, 0.2, 7, "d"), split_rows(rows, 0.2, 0.2, 7, "d")
    assert [r.row for r in a.test] == [r.row for r in b.test]
    parts = [{r.patient for r in part} for part in (a.train, a.val, a.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(map(len, (a.train, a.val, a.test))) == 80
    for part in (a.val, a.test):  # stratified: both classes in every part
        assert {r.label for r in part} == {"absent", "lesion"}


def test_losses():
    from voxpipe_plugins.heads.losses import MultiTaskLoss, focal_loss, regression_loss

    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    assert focal_loss(logits, target, gamma=0.0).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, target).item())
    assert focal_loss(logits, target, gamma=2.0) < focal_loss(logits, target, gamma=0.0)
    p, t = torch.tensor([0.0, 3.0]), torch.tensor([0.0, 0.0])
    assert regression_loss(p, t, "mse").item() == pytest.approx(4.5)
    assert regression_loss(p, t, "l1").item() == pytest.approx(1.5)
    assert regression_loss(p, t, "huber", 1.0).item() == pytest.approx(1.25)
    loss = MultiTaskLoss("ce", "mse", w_cls=0.0, w_reg=2.0)
    assert loss({"logits": logits, "regression": p}, target, t).item() == pytest.approx(9.0)


def test_metrics_against_hand_counts():
    from voxpipe_plugins.heads.metrics import classification_metrics, regression_metrics

    y = np.array([0, 0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    m = classification_metrics(y, proba, ["a", "b"])
    assert m["accuracy"] == pytest.approx(0.6) and m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2) and m["f1"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(5 / 6)
    r = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert r["mae"] == pytest.approx(2 / 3) and r["rmse"] == pytest.approx(np.sqrt(4 / 3)) and r["r2"] == pytest.approx(-1.0)


def test_rnn_head_reads_slices_in_order():
    from voxpipe_plugins.heads.models import HeadArchitecture, build_model

    torch.manual_seed(0)
    model = build_model(HeadArchitecture(arch="vgg11", width=0.125, in_channels=1, rnn="lstm", rnn_hidden=8, logits=3)).eval()
    x = torch.rand(2, 5, 1, 32, 32)
    with torch.inference_mode():
        out, flipped = model(x), model(x.flip(1))
    assert out["logits"].shape == (2, 3) and out["regression"].shape == (2,)
    assert not torch.allclose(out["logits"], flipped["logits"])  # order matters, unlike a mean over slices


# ---------------------------------------------------------------- RNN head on volumes, resume, ImageNet-style start


RNN_CONFIG = """\
version: 1
name: rnn-synthetic
device: cpu
stages:
  - use: load.nifti
  - use: head.vgg_rnn
    with: {arch: vgg11, width: 0.125, in_channels: 3, cell: gru, rnn_hidden: 16, weights: run/best.safetensors,
           backbone_weights: vgg11.pth, freeze_backbone: true}
  - use: write.predictions
training:
  task: heads
  data: vols.csv
  epochs: 2
  batch_size: 4
  lr: 0.001
  threads: 2
"""


def test_rnn_head_trains_resumes_and_runs_on_volumes(tmp_path, cli):
    """head.vgg_rnn end to end on tiny NIfTI volumes: a torchvision-layout backbone file, frozen; resume continues the run."""
    import nibabel as nib

    from voxpipe_plugins.features.vgg import VGG

    torch.manual_seed(0)
    backbone = VGG("vgg11", width=0.125)
    torch.save(backbone.state_dict(), tmp_path / "vgg11.pth")
    rng = np.random.default_rng(0)
    (tmp_path / "vols").mkdir()
    rows = []
    for i in range(12):
        volume = rng.normal(0, 1, (32, 32, 4)).astype(np.float32) + (3.0 if i % 2 else 0.0)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "vols" / f"v{i}.nii.gz"))
        rows.append({"image": f"vols/v{i}.nii.gz", "class": "ab"[i % 2], "target": float(i % 2), "patient": f"p{i}"})
    with (tmp_path / "vols.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "class", "target", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    config = tmp_path / "rnn.yaml"
    config.write_text(RNN_CONFIG)
    first = cli("train", config, "-o", tmp_path / "run")
    assert first.exit_code == 0, first.stderr
    final = first.stdout.splitlines()  # the final metrics on stdout, as `voxpipe test` prints its own
    assert final and all(": " in line for line in final)
    again = cli("train", config, "-o", tmp_path / "run")
    assert again.exit_code == 2 and "--resume" in again.error_lines[0]
    resumed = cli("train", config, "-o", tmp_path / "run", "--resume", "--set", "training.epochs=3", "--json")
    assert resumed.exit_code == 0 and "resuming after epoch 2" in resumed.stderr, resumed.stderr
    assert set(json.loads(resumed.stdout)) == {line.split(": ")[0] for line in final}
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3]
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "run" / "last.safetensors"))
    torch.testing.assert_close(state["backbone.features.0.weight"], backbone.state_dict()["features.0.weight"])  # frozen
    result = cli("run", config, "-i", tmp_path / "vols", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    predictions = list((tmp_path / "out").glob("*/predictions.json"))
    assert len(predictions) == 12
    assert {"class", "class_name", "probabilities", "regression"} == set(json.loads(predictions[0].read_text())["outputs"])


def test_head_without_weights_and_writer_without_predictions_say_what_to_do(tmp_path):
    from voxpipe.stage import StageContext
    from voxpipe_plugins.heads.infer import HeadStage
    from voxpipe_plugins.heads.plugin import VGGHeadParams
    from voxpipe_plugins.heads.writer import PredictionsWriter

    with pytest.raises(ValueError, match="`weights` is not set; train with `voxpipe train"):
        HeadStage(context=StageContext(stage_id="head.vgg"), **dict(VGGHeadParams()))
    with pytest.raises(ValueError, match="head checkpoint not found"):
        HeadStage(context=StageContext(config_dir=tmp_path, stage_id="head.vgg"), **dict(VGGHeadParams(weights="run/best.safetensors")))
    with pytest.raises(ValueError, match="no predictions"):
        PredictionsWriter()({"output_dir": tmp_path, "case_id": "case-1"})
    assert not any(tmp_path.iterdir())

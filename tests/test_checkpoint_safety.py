"""Checkpoints from elsewhere (issue 14 §5 sidecars, §6 refusals): refused in VoxPipe's words, before anything is built.

- Every pickle that needs more than tensors is refused with VoxPipe's reason and advice,
  never PyTorch's (which ends by suggesting ``weights_only=False``, i.e. running the pickle),
  in every place a checkpoint is read: weights, VGG backbones, training state.
- Every sidecar value that decides what gets built is bounded like a stage parameter; the
  whole family of bad values (huge, negative, wrong type, float for a count, string for a
  number, boolean, nested, unknown keys, non-finite, inconsistent) is refused in one line
  naming the sidecar and the field, and the refusal's peak memory is measured.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.peak_memory import peak_of
from voxpipe_plugins.deep.weights import WeightsError, load_torch_file, read_state_dict

torch = pytest.importorskip("torch")

BUDGET = 64 * 2**20
TORCH_ADVICE = ("weights_only", "torch.load", "Re-running", "trusted source", "add_safe_globals", "safe_globals", "pytorch.org")


def _clean_refusal(exc: BaseException, name: str) -> str:
    text = str(exc)
    assert "\n" not in text and text.startswith(name), text
    assert not any(advice in text for advice in TORCH_ADVICE), text
    return text


# --- §6: pickles beyond tensors --------------------------------------------------------------------
class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Plain:
    pass


PAYLOADS = {
    "os.system": lambda marker: _Touch(marker),
    "class instance": lambda marker: _Plain(),
    "numpy array": lambda marker: np.zeros(3),
    "functools.partial": lambda marker: functools.partial(print, 1),
    "nested in a list": lambda marker: [torch.zeros(1), {"deeper": _Touch(marker)}],
}
RAW_PICKLES = {  # written by hand: what torch.save would never write
    "builtins.eval": b"\x80\x04cbuiltins\neval\nX\x08\x00\x00\x00__import__\x85R.",
    "posix.system": b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R.",
}


def _evil(tmp_path: Path, payload: str, layout: str, name: str) -> tuple[Path, Path]:
    marker = tmp_path / f"MARKER-{payload.replace(' ', '_')}-{layout}"
    path = tmp_path / name
    if payload in RAW_PICKLES:
        path.write_bytes(RAW_PICKLES[payload])
    else:
        torch.save({"weight": torch.zeros(2), "payload": PAYLOADS[payload](marker)}, path, _use_new_zipfile_serialization=layout == "zip")
    return path, marker


@pytest.mark.parametrize("name", ["evil.pt", "evil.pth", "EVIL.PT", "last.state.pt"])
@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("payload", sorted([*PAYLOADS, *RAW_PICKLES]))
def test_every_pickle_beyond_tensors_is_refused_in_voxpipes_words(tmp_path, payload, layout, name):
    from voxpipe_plugins.features.weights import read_vgg_state

    if payload in RAW_PICKLES and layout == "zip":
        pytest.skip("a hand-written pickle has no zip layout")
    path, marker = _evil(tmp_path, payload, layout, name)
    for reader in (read_state_dict, read_vgg_state, load_torch_file):  # weights, VGG backbones, training state
        with pytest.raises(WeightsError) as caught:
            reader(path)
        text = _clean_refusal(caught.value, name)
        assert "refused" in text and "VoxPipe loads only tensors" in text and "safetensors" in text
    disguised = tmp_path / "evil.safetensors"
    disguised.write_bytes(path.read_bytes())
    with pytest.raises(WeightsError) as caught:
        read_state_dict(disguised)
    _clean_refusal(caught.value, "evil.safetensors")
    assert not marker.exists()


def test_training_state_as_voxpipe_train_writes_it_loads(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    torch.save({"optimizer": optimizer.state_dict(), "scaler": {}, "history": json.dumps([{"epoch": 1}])}, tmp_path / "last.state.pt")
    state = load_torch_file(tmp_path / "last.state.pt")
    torch.optim.Adam(model.parameters()).load_state_dict(state["optimizer"])
    assert json.loads(state["history"]) == [{"epoch": 1}]


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"PK\x03\x04" + b"\0" * 40, b"\x80\x02"])
@pytest.mark.parametrize("name", ["w.pt", "w.safetensors"])
def test_damaged_checkpoints_are_one_line_in_voxpipes_words(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(WeightsError) as caught:
        read_state_dict(path)
    _clean_refusal(caught.value, name)


def test_a_refused_payload_costs_little_memory(tmp_path):
    path, marker = _evil(tmp_path, "os.system", "zip", "evil.pt")
    delta, error = peak_of(
        f"from pathlib import Path\nfrom voxpipe_plugins.deep.weights import read_state_dict\npath = Path({str(path)!r})",
        "read_state_dict(path)",
        warmups=1,
    )
    assert error and error[0] == "WeightsError" and "refused" in error[1]
    assert delta < BUDGET and not marker.exists()


def test_segment_deep_run_refuses_a_pickle_in_one_line(tmp_path, write_config, cli, sample_inputs):
    path, marker = _evil(tmp_path, "os.system", "zip", "evil.pt")
    config = write_config(
        "version: 1\nname: x\ndevice: cpu\nstages:\n  - use: load.nifti\n  - use: segment.deep\n    with:\n"
        "      network: UNet\n      args: {spatial_dims: 3, in_channels: 1, out_channels: 2, channels: [4, 8], strides: [2]}\n"
        f"      roi_size: [16, 16, 16]\n      weights: {path}\n"
    )
    result = cli("run", config, "-i", sample_inputs, "-o", tmp_path / "out")
    text = result.stdout + result.stderr
    assert result.exit_code != 0 and "refused" in text and "Traceback" not in text
    assert not any(advice in text for advice in TORCH_ADVICE) and not marker.exists()


# --- §5: head sidecars -------------------------------------------------------------------------------
def _head(tmp_path: Path, rnn: str | None = None) -> Path:
    from voxpipe_plugins.heads import checkpoint
    from voxpipe_plugins.heads.models import HeadArchitecture, build_model

    spec = HeadArchitecture(arch="vgg11", width=0.125, in_channels=1, logits=2, rnn=rnn, rnn_hidden=8)
    path = tmp_path / "best.safetensors"
    info = {
        "architecture": spec.as_dict(),
        "stage": "head.vgg_rnn" if rnn else "head.vgg",
        "classes": ["absent", "lesion"],
        "target_mean": 1.5,
        "target_std": 0.5,
        "target_name": "size",
        "classification_loss": "ce",
        "input": {
            "mode": "slices" if rnn else "2d",
            "slice_axis": 2,
            "in_channels": 1,
            "intensity": "minmax",
            "normalise": False,
            "size": None,
        },
        "epoch": 3,
        "best_val_loss": float("inf"),
        "best_epoch": 0,
        "seed": 0,
        "split": {"train": 6, "val": 2, "test": 2},
        "config": "x.yaml",
        "task": "heads",
        "notes": [],
        "saved": "2026-01-01T00:00:00",
    }
    checkpoint.save(build_model(spec), path, info)
    return path


def _edit(path: Path, change) -> None:
    sidecar = path.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    change(data)
    sidecar.write_text(json.dumps(data))


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(data):
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value

    return change


def _drop(*keys):
    def change(data):
        for key in keys[:-1]:
            data = data[key]
        del data[keys[-1]]

    return change


BAD_ARCHITECTURE = {  # field: values a config could not hold either
    "logits": [4000000, 10**30, 0, -1, 2.0, "2", True, [2], {"n": 2}, None],
    "hidden": [10**9, -1, 1.5, "0", False],
    "width": [1e9, 0.0, -0.5, "1.0", [1.0]],
    "in_channels": [2, 1000, "3", 3.0],
    "rnn_hidden": [10**6, 0, "128"],
    "rnn_layers": [1000, 0, 1.0],
    "dropout": [5.0, -0.1, 1.0, "0"],
    "arch": ["vgg99", "", 16, None, "vgg16; rm -rf /"],
    "task": ["everything", 1],
    "rnn": ["transformer", 1, True],
    "bidirectional": [1, "yes"],
}
BAD_SIDECARS = {
    **{
        f"architecture.{field} = {value!r}": _set("architecture", field, value)
        for field, values in BAD_ARCHITECTURE.items()
        for value in values
    },
    "architecture.extra key": _set("architecture", "evil", 1),
    "architecture missing": _drop("architecture"),
    "architecture as a list": _set("architecture", [1, 2]),
    "top-level extra key": _set("__import__", "os"),
    "args differs from architecture": _set("args", "logits", 3),
    "args.logits huge": _set("args", "logits", 4000000),
    "input.size huge": _set("input", "size", [100000, 100000]),
    "input.size one value": _set("input", "size", [64]),
    "input.slice_axis 7": _set("input", "slice_axis", 7),
    "input extra key": _set("input", "device", "cuda"),
    "input.mode 3d": _set("input", "mode", "3d"),
    "input.in_channels differs": _set("input", "in_channels", 3),
    "target_std 0": _set("target_std", 0.0),
    "target_std negative": _set("target_std", -1.0),
    "target_std string": _set("target_std", "1"),
    "target_mean huge": _set("target_mean", 1e300),
    "target_name with a slash": _set("target_name", "../x"),
    "classes 5000": _set("classes", [f"c{i}" for i in range(5000)]),
    "classes of ints": _set("classes", [0, 1]),
    "classes do not fit logits": _set("classes", ["a", "b", "c"]),
    "classes one long name": _set("classes", ["a" * 10000, "b"]),
    "classification_loss mse": _set("classification_loss", "mse"),
    "epoch negative": _set("epoch", -5),
    "notes huge list": _set("notes", ["x"] * 1000),
    "split extra key": _set("split", "evil", 1),
}


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory) -> Path:
    return _head(tmp_path_factory.mktemp("head")).parent


@pytest.mark.parametrize("case", sorted(BAD_SIDECARS))
def test_every_bad_head_sidecar_is_refused_before_building(head_dir, tmp_path, case, monkeypatch):
    import shutil

    from voxpipe_plugins.heads import checkpoint

    for name in ("best.safetensors", "best.json"):
        shutil.copy(head_dir / name, tmp_path / name)
    path = tmp_path / "best.safetensors"
    _edit(path, BAD_SIDECARS[case])
    built = []
    monkeypatch.setattr(checkpoint, "build_model", lambda spec: built.append(spec))
    with pytest.raises(WeightsError) as caught:
        checkpoint.load(path)
    text = str(caught.value)
    assert text.startswith("checkpoint sidecar best.json: refused before building the network: `") and "\n" not in text, text
    assert len(text) < 400 and not built


@pytest.mark.parametrize(
    "content",
    [
        b"[1, 2]",
        b'"x"',
        b"7",
        b"null",
        b"{not json",
        b"\xff\xfe",
        b"[" * 100000 + b"]" * 100000,
        b'{"architecture": {"logits": NaN}}',
        b'{"architecture": {"logits": 1e400}}',
        b'{"target_std": Infinity, "architecture": {}}',
        b'{"a": 1, "a": 2, "architecture": {}}',
    ],
)
def test_sidecars_that_are_not_a_plain_object_are_refused(head_dir, tmp_path, content):
    import shutil

    from voxpipe_plugins.heads import checkpoint

    shutil.copy(head_dir / "best.safetensors", tmp_path / "best.safetensors")
    (tmp_path / "best.json").write_bytes(content)
    with pytest.raises(WeightsError) as caught:
        checkpoint.load(tmp_path / "best.safetensors")
    assert str(caught.value).startswith("checkpoint sidecar best.json: refused") and "\n" not in str(caught.value)


def test_an_oversized_sidecar_is_refused_before_parsing(head_dir, tmp_path):
    import shutil

    from voxpipe_plugins.heads import checkpoint

    shutil.copy(head_dir / "best.safetensors", tmp_path / "best.safetensors")
    (tmp_path / "best.json").write_text(json.dumps({"notes": ["x" * 100] * 30000}))
    with pytest.raises(WeightsError, match="above the 1048576 allowed"):
        checkpoint.load(tmp_path / "best.safetensors")


@pytest.mark.parametrize("rnn", [None, "gru"])
def test_a_sidecar_as_voxpipe_train_writes_it_loads(tmp_path, rnn):
    from voxpipe_plugins.heads import checkpoint

    model, info = checkpoint.load(_head(tmp_path, rnn))
    assert info["classes"] == ["absent", "lesion"] and info["architecture"]["logits"] == 2 and info["target_std"] == 0.5
    assert info["input"]["mode"] == ("slices" if rnn else "2d") and model.spec.rnn == rnn


def test_the_4000000_logits_sidecar_costs_little_memory(tmp_path):
    """Issue 14: `logits: 4000000` built a 1.45 GiB classifier before anything was checked."""
    path = _head(tmp_path)
    _edit(path, _set("architecture", "logits", 4000000))
    _edit(path, _set("args", "logits", 4000000))
    delta, error = peak_of(
        f"from pathlib import Path\nfrom voxpipe_plugins.heads import checkpoint\npath = Path({str(path)!r})",
        "checkpoint.load(path)",
        warmups=1,
    )
    assert error and error[0] == "WeightsError" and "architecture.logits" in error[1], error
    assert delta < BUDGET, f"{delta / 2**20:.0f} MiB"


def test_head_stage_refuses_a_bad_sidecar_in_one_line(tmp_path, cli, write_config, sample_inputs):
    path = _head(tmp_path)
    _edit(path, _set("input", "size", [100000, 100000]))
    config = write_config(
        "version: 1\nname: x\ndevice: cpu\nstages:\n  - use: load.image2d\n  - use: head.vgg\n    with:\n"
        f"      arch: vgg11\n      width: 0.125\n      in_channels: 1\n      weights: {path}\n"
    )
    result = cli("run", config, "-i", sample_inputs, "-o", tmp_path / "out")
    text = result.stdout + result.stderr
    assert result.exit_code != 0 and "input.size" in text and "Traceback" not in text


# --- §5: segment.deep sidecars ------------------------------------------------------------------------
DEEP_ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]}
BAD_DEEP = {
    "label_names key not a number": {"label_names": {"x": "a"}},
    "label_names value not text": {"label_names": {"1": 5}},
    "label_names 5000 entries": {"label_names": {str(i): "a" for i in range(5000)}},
    "label_names long name": {"label_names": {"1": "a" * 1000}},
    "network not a name": {"network": 5},
    "network with a path": {"network": "monai.networks.nets.UNet"},
    "args not an object": {"args": "UNet(...)"},
    "epoch negative": {"epoch": -1},
    "best_dice 7": {"best_dice": 7.0},
    "best_dice NaN": {"best_dice": float("nan")},
    "roi_size huge": {"roi_size": [100000, 16, 16]},
    "output other": {"output": "softmax"},
    "extra key": {"__class__": "x"},
}


@pytest.mark.parametrize("case", sorted(BAD_DEEP))
def test_every_bad_segment_deep_sidecar_is_refused_before_building(tmp_path, case, monkeypatch):
    from monai.networks.nets import UNet
    from safetensors.torch import save_file

    from voxpipe.stage import StageContext
    from voxpipe_plugins.deep import infer

    model = UNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in DEEP_ARGS.items()})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    (tmp_path / "w.json").write_text(json.dumps({"network": "UNet", "args": DEEP_ARGS, **BAD_DEEP[case]}))
    built = []
    monkeypatch.setattr(infer, "make_network", lambda *a: built.append(a))
    with pytest.raises(WeightsError) as caught:
        infer.DeepSegmenter(
            network="UNet", args=DEEP_ARGS, roi_size=[16, 16, 16], weights="w.safetensors", context=StageContext(config_dir=tmp_path)
        )
    text = str(caught.value)
    assert text.startswith("checkpoint sidecar w.json: refused before building the network: `") and "\n" not in text, text
    assert len(text) < 400 and not built


def test_segment_deep_sidecar_label_names_still_apply(tmp_path):
    from monai.networks.nets import UNet
    from safetensors.torch import save_file

    from voxpipe.stage import StageContext
    from voxpipe_plugins.deep.infer import DeepSegmenter

    model = UNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in DEEP_ARGS.items()})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    (tmp_path / "w.json").write_text(
        json.dumps(
            {
                "network": "UNet",
                "args": DEEP_ARGS,
                "epoch": 2,
                "best_dice": -1.0,
                "val_dice": None,
                "label_names": {"0": "background", "1": "liver"},
                "roi_size": [16, 16, 16],
                "output": "argmax",
                "config": "/x/y.yaml",
                "task": "segmentation",
                "saved": "2026-01-01T00:00:00",
            }
        )
    )
    stage = DeepSegmenter(
        network="UNet", args=DEEP_ARGS, roi_size=[16, 16, 16], weights="w.safetensors", context=StageContext(config_dir=tmp_path)
    )
    assert stage.label_names == {0: "background", 1: "liver"}

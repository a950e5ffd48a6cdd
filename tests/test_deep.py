"""`segment.deep`: allowlist and argument checks, weights files, the inferer options, and the error lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2]}

BASE = """\
version: 1
name: deep
device: cpu
stages:
  - use: load.nifti
  - use: segment.deep
    with:
{with_}
  - use: write.nifti
    with: {{keys: [label]}}
"""


def config_text(with_: str) -> str:
    return BASE.format(with_="\n".join("      " + line for line in with_.strip().splitlines()))


def unet(args=ARGS, seed=0):
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    return UNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}).eval()


def image(shape=(1, 20, 24, 18), seed=0):
    from voxpipe_plugins.common.tensors import make_metatensor

    rng = np.random.default_rng(seed)
    return make_metatensor(rng.random(shape, dtype=np.float32), np.diag([1.5, 1.0, 2.0, 1.0]))


def stage(tmp_path: Path, weights: str, **params):
    from voxpipe.stage import StageContext
    from voxpipe_plugins.deep.infer import DeepSegmenter

    params.setdefault("network", "UNet")
    params.setdefault("args", ARGS)
    params.setdefault("roi_size", [16, 16, 16])
    return DeepSegmenter(weights=weights, context=StageContext(config_dir=tmp_path), **params)


def bare(model, img, roi=(16, 16, 16), overlap=0.25):
    import torch
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        return sliding_window_inference(img.as_tensor()[None], roi, 1, model, overlap=overlap, mode="gaussian")


# ------------------------------------------------------------------ validation (no torch)


@pytest.mark.parametrize(
    "with_, expected",
    [
        ("network: Unet\nroi_size: [16, 16, 16]", "network `Unet` is not in the allowlist; did you mean `UNet`?"),
        ("network: ResNet\nroi_size: [16, 16, 16]", "not in the allowlist"),
        (
            "network: UNet\nargs: {spatial_dims: 3, in_channel: 1, out_channels: 2, channels: [4, 8], strides: [2]}\nroi_size: [16, 16, 16]",
            "UNet has no argument `in_channel`; did you mean `in_channels`?",
        ),
        (
            "network: UNet\nargs: {spatial_dims: 3, in_channels: 1, out_channels: 2, channels: '4,8', strides: [2]}\nroi_size: [16, 16, 16]",
            "UNet argument `channels` must be a list of integers, got '4,8'",
        ),
        (
            "network: UNet\nargs: {spatial_dims: 3, in_channels: 1.5, out_channels: 2, channels: [4, 8], strides: [2]}\nroi_size: [16, 16, 16]",
            "UNet argument `in_channels` must be an integer",
        ),
        (
            "network: UNet\nargs: {spatial_dims: 3, in_channels: 1, channels: [4, 8], strides: [2]}\nroi_size: [16, 16, 16]",
            "UNet needs argument `out_channels`",
        ),
        (
            "network: UNet\nargs: {spatial_dims: 2, in_channels: 1, out_channels: 2, channels: [4, 8], strides: [2]}\nroi_size: [16, 16, 16]",
            "roi_size has 3 values but the network is 2D",
        ),
        ("network: UNet\nroi_size: [16, 16, 16]\nflip_axes: [0, 4]", "flip_axes must be distinct spatial axes"),
        ("network: UNet\nroi_size: [16, 16, 16]\nmode: linear", "mode"),
    ],
)
def test_validate_rejects_bad_networks_and_arguments(write_config, cli, with_, expected):
    result = cli("validate", write_config(config_text(with_)))
    assert result.exit_code == 2
    assert any(expected in line for line in result.error_lines), result.stderr
    assert all("stage 2" in line for line in result.error_lines)


def test_validate_accepts_a_good_config_and_the_shipped_one(write_config, cli):
    text = config_text(
        "network: SegResNet\nargs: {spatial_dims: 3, in_channels: 1, out_channels: 2, init_filters: 8}\n"
        "roi_size: [32, 32, 32]\nweights: w.safetensors"
    )
    assert cli("validate", write_config(text)).exit_code == 0
    assert cli("validate", Path(__file__).parents[1] / "configs" / "unet-train.yaml").exit_code == 0


def test_registration_is_light():
    import subprocess
    import sys

    code = (
        "import sys; from voxpipe.registry import Registry; r = Registry.load(); assert 'segment.deep' in r.stages; "
        "assert 'segmentation' in r.trainers; print(sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ weights


@pytest.mark.parametrize("kind", ["safetensors", "pt-raw", "pt-state_dict", "pt-model"])
def test_weights_round_trip(tmp_path, kind):
    import torch
    from safetensors.torch import save_file

    model = unet()
    state = model.state_dict()
    if kind == "safetensors":
        name = "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / name))
    else:
        name = "w.pt"
        payload = {"pt-raw": state, "pt-state_dict": {"state_dict": state, "epoch": 3}, "pt-model": {"model": state}}[kind]
        torch.save(payload, tmp_path / name)
    img = image()
    out = stage(tmp_path, name)({"image": img})
    label = out["label"]
    expected = bare(model, img).argmax(1).to(torch.uint8)
    assert torch.equal(label.as_tensor(), expected)
    assert label.shape == img.shape and label.dtype == torch.uint8
    assert np.allclose(label.affine.numpy(), img.affine.numpy())
    assert label.meta["label_names"] == {0: "background", 1: "class_1", 2: "class_2"}
    entry = out["history"][-1]
    assert entry["op"] == "segment.deep" and entry["weights"] == name and entry["windows"] >= 1


def test_weights_for_another_network_is_one_line(tmp_path, write_config, cli, sample_inputs):
    from safetensors.torch import save_file

    other = dict(ARGS, channels=[8, 16])
    save_file(unet(other).state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError) as info:
        stage(tmp_path, "w.safetensors")
    message = str(info.value)
    assert "\n" not in message and "does not fit UNet(" in message and "shape mismatches" in message
    assert "(8, 1, 3, 3, 3) vs (4, 1, 3, 3, 3)" in message
    # through the CLI: the build fails before any case runs, one line, exit 2
    text = config_text(f"network: UNet\nargs: {ARGS}\nroi_size: [16, 16, 16]\nweights: w.safetensors".replace("'", ""))
    result = cli("run", write_config(text), "-i", sample_inputs, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert len(result.error_lines) == 1 and "cannot build" in result.error_lines[0] and "does not fit" in result.error_lines[0]


def test_weights_with_missing_keys(tmp_path):
    import torch

    state = unet().state_dict()
    state.pop(next(iter(state)))
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"1 missing keys \(.*\); 1 unexpected keys \(extra.weight\)"):
        stage(tmp_path, "w.pth")


def test_missing_weights_file(tmp_path):
    with pytest.raises(ValueError, match="weights file not found: .*nope.safetensors"):
        stage(tmp_path, "nope.safetensors")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported type `.bin`"):
        stage(tmp_path, "w.bin")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot be read"):
        stage(tmp_path, "bad.safetensors")


# ------------------------------------------------------------------ inference options


@pytest.fixture
def weights(tmp_path):
    from safetensors.torch import save_file

    save_file(unet().state_dict(), str(tmp_path / "w.safetensors"))
    return "w.safetensors"


def test_roi_larger_than_image_is_padded(tmp_path, weights):
    import torch

    img = image((1, 10, 12, 9))
    out = stage(tmp_path, weights, roi_size=[32, 32, 32])({"image": img})
    assert out["label"].shape == img.shape
    assert torch.equal(out["label"].as_tensor(), bare(unet(), img, roi=(32, 32, 32)).argmax(1).to(torch.uint8))


def test_flip_tta_averages_flipped_passes(tmp_path, weights):
    import torch

    img = image()
    out = stage(tmp_path, weights, flip_axes=[0, 2])({"image": img})
    model = unet()
    probs = []
    for dims in ([], [2], [4], [2, 4]):
        x = torch.flip(img, [d - 1 for d in dims]) if dims else img
        p = torch.softmax(bare(model, x), 1)
        probs.append(torch.flip(p, dims) if dims else p)
    expected = torch.stack(probs).mean(0).argmax(1).to(torch.uint8)
    assert (out["label"].as_tensor() == expected).float().mean() > 0.999
    assert out["history"][-1]["tta_flips"] == [0, 2]


def test_threshold_mode(tmp_path):
    import torch
    from safetensors.torch import save_file

    args = dict(ARGS, out_channels=1)
    model = unet(args)
    save_file(model.state_dict(), str(tmp_path / "b.safetensors"))
    img = image()
    out = stage(tmp_path, "b.safetensors", args=args, output="threshold", threshold=0.6)({"image": img})
    expected = (torch.sigmoid(bare(model, img)) > 0.6)[0].to(torch.uint8)
    assert torch.equal(out["label"].as_tensor(), expected)
    assert out["label"].meta["label_names"] == {0: "background", 1: "foreground"}
    with pytest.raises(ValueError, match="argmax` needs out_channels >= 2"):
        stage(tmp_path, "b.safetensors", args=args)


def test_label_names_from_config_and_input_checks(tmp_path, weights):
    seg = stage(tmp_path, weights, label_names={0: "bg", 1: "liver", 2: "kidney"})
    out = seg({"image": image()})
    assert out["label"].meta["label_names"] == {0: "bg", 1: "liver", 2: "kidney"}
    with pytest.raises(ValueError, match="2 channels but UNet expects in_channels=1"):
        seg({"image": image((2, 16, 16, 16))})
    with pytest.raises(ValueError, match="3D but the image has shape"):
        seg({"image": image((1, 16, 16))})


def test_stage_inside_monai_compose(tmp_path, weights):
    from monai.transforms import Compose, ScaleIntensityd

    img = image()
    pipeline = Compose([ScaleIntensityd(keys="image"), stage(tmp_path, weights)])
    out = pipeline({"image": img})
    assert out["label"].shape == img.shape


def test_build_stage_through_the_registry(tmp_path, weights, registry):
    from voxpipe.stage import StageContext, build_stage

    spec = registry.stages["segment.deep"]
    params = spec.params.model_validate(
        {"network": "UNet", "args": ARGS, "roi_size": [16, 16, 16], "weights": weights, "device": "cpu", "sw_device": "cpu"}
    )
    built = build_stage(spec, params, StageContext(device="cpu", config_dir=tmp_path))
    assert str(built.device) == "cpu" and str(built.sw_device) == "cpu"
    from voxpipe_plugins.deep.weights import bound_args

    with pytest.raises(ValueError, match="UNet has no argument `zzz`"):
        bound_args("UNet", {**ARGS, "zzz": 1})
    assert bound_args("UNet", ARGS)["num_res_units"] == 0  # defaults from the real signature


def test_cuda_matches_cpu(tmp_path, weights):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    img = image((1, 40, 40, 40))
    cpu = stage(tmp_path, weights)({"image": img})["label"]
    gpu = stage(tmp_path, weights, sw_device="cuda", device="cpu", amp=False)({"image": img})["label"]
    assert gpu.device.type == "cpu"
    assert (cpu.as_tensor() == gpu.as_tensor()).float().mean() > 0.999
    amp = stage(tmp_path, weights, sw_device="cuda", device="cuda")({"image": img})
    assert amp["history"][-1]["amp"] is True
    assert (cpu.as_tensor() == amp["label"].as_tensor()).float().mean() > 0.99


def test_config_hash_follows_the_weights_file_contents(tmp_path, registry):
    """Retrained weights saved under the same name change the config hash, so `voxpipe run`
    redoes its cases instead of skipping them as complete; a missing file counts by name."""
    from safetensors.torch import save_file

    from voxpipe.config import load_config

    path = tmp_path / "seg.yaml"
    path.write_text(config_text(f"network: UNet\nargs: {ARGS}\nroi_size: [16, 16, 16]\nweights: w.safetensors".replace("'", "")))
    missing = load_config(path, registry).hash
    save_file(unet(seed=0).state_dict(), str(tmp_path / "w.safetensors"))
    first = load_config(path, registry).hash
    assert first != missing and load_config(path, registry).hash == first
    save_file(unet(seed=1).state_dict(), str(tmp_path / "w.safetensors"))
    assert load_config(path, registry).hash not in (first, missing)

"""`features.vgg`: torchvision-compatible VGG state dicts, weights-only loading, clear refusals, 3D inflation, the stage."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from voxpipe_plugins.deep.weights import WeightsError
from voxpipe_plugins.features.architectures import guess_architecture, state_dict_shapes
from voxpipe_plugins.features.extract import VGGExtractor
from voxpipe_plugins.features.vgg import VGG, inflate_state_dict

# torchvision.models.vgg, written out by hand (torchvision is not installed and must not be):
# the index in `features` of every convolution, and its output channels. With batch norm a
# convolution takes three slots (conv, bn, relu), without it two; each "M" pool takes one.
TORCHVISION_CONVS = {
    "vgg11": [(0, 64), (3, 128), (6, 256), (8, 256), (11, 512), (13, 512), (16, 512), (18, 512)],
    "vgg11_bn": [(0, 64), (4, 128), (8, 256), (11, 256), (15, 512), (18, 512), (22, 512), (25, 512)],
    "vgg13": [(0, 64), (2, 64), (5, 128), (7, 128), (10, 256), (12, 256), (15, 512), (17, 512), (20, 512), (22, 512)],
    "vgg13_bn": [(0, 64), (3, 64), (7, 128), (10, 128), (14, 256), (17, 256), (21, 512), (24, 512), (28, 512), (31, 512)],
    "vgg16": [
        (0, 64),
        (2, 64),
        (5, 128),
        (7, 128),
        (10, 256),
        (12, 256),
        (14, 256),
        (17, 512),
        (19, 512),
        (21, 512),
        (24, 512),
        (26, 512),
        (28, 512),
    ],
    "vgg16_bn": [
        (0, 64),
        (3, 64),
        (7, 128),
        (10, 128),
        (14, 256),
        (17, 256),
        (20, 256),
        (24, 512),
        (27, 512),
        (30, 512),
        (34, 512),
        (37, 512),
        (40, 512),
    ],
    "vgg19": [
        (0, 64),
        (2, 64),
        (5, 128),
        (7, 128),
        (10, 256),
        (12, 256),
        (14, 256),
        (16, 256),
        (19, 512),
        (21, 512),
        (23, 512),
        (25, 512),
        (28, 512),
        (30, 512),
        (32, 512),
        (34, 512),
    ],
    "vgg19_bn": [
        (0, 64),
        (3, 64),
        (7, 128),
        (10, 128),
        (14, 256),
        (17, 256),
        (20, 256),
        (23, 256),
        (27, 512),
        (30, 512),
        (33, 512),
        (36, 512),
        (40, 512),
        (43, 512),
        (46, 512),
        (49, 512),
    ],
}


def torchvision_table(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``vgg*(num_classes=1000).state_dict()``."""
    table: dict[str, tuple[int, ...]] = {}
    channels = 3
    for index, out in TORCHVISION_CONVS[arch]:
        table[f"features.{index}.weight"] = (out, channels, 3, 3)
        table[f"features.{index}.bias"] = (out,)
        if arch.endswith("_bn"):
            for name in ("weight", "bias", "running_mean", "running_var"):
                table[f"features.{index + 1}.{name}"] = (out,)
            table[f"features.{index + 1}.num_batches_tracked"] = ()
        channels = out
    table.update(
        {
            "classifier.0.weight": (4096, 25088),
            "classifier.0.bias": (4096,),
            "classifier.3.weight": (4096, 4096),
            "classifier.3.bias": (4096,),
            "classifier.6.weight": (1000, 4096),
            "classifier.6.bias": (1000,),
        }
    )
    return table


@pytest.mark.parametrize("arch", sorted(TORCHVISION_CONVS))
def test_state_dict_matches_torchvision(arch):
    with torch.device("meta"):
        model = VGG(arch)
    state = model.state_dict()
    expected = torchvision_table(arch)
    assert list(state) == list(expected), "key names or their order differ from torchvision"
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert state_dict_shapes(arch) == expected  # the light table used for error hints agrees
    assert guess_architecture(expected) == arch


def tiny(arch="vgg11", **kw) -> VGG:
    torch.manual_seed(1)
    return VGG(arch, width=0.125, **kw).eval()


def image2d(rng, size=48) -> torch.Tensor:
    from monai.data import MetaTensor

    return MetaTensor(torch.as_tensor(rng.uniform(0, 255, (1, size, size)).astype(np.float32)))


def test_weights_only_round_trip(tmp_path):
    """A torch.save'd state dict loads weights-only and gives the same activations as the network it came from."""
    source = tiny("vgg11_bn")
    with torch.no_grad():  # non-trivial batch-norm statistics
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "vgg11_bn.pth"
    torch.save(source.state_dict(), path)
    stage = VGGExtractor(arch="vgg11_bn", width=0.125, weights=str(path), layers=["pool5"], normalise="none", intensity="none")
    x = image2d(np.random.default_rng(0))
    case = stage({"image": x, "features": {"radiomics": np.zeros(3, np.float32)}})
    with torch.inference_mode():
        expected = source.features(x.as_tensor().transpose(1, 2)[None].expand(-1, 3, -1, -1)).mean((2, 3))[0].numpy()
    vector = case["features"]["vgg11_bn"]
    assert vector.dtype == np.float32 and vector.shape == (64,)
    np.testing.assert_allclose(vector, expected, rtol=1e-4, atol=1e-5)
    assert "radiomics" in case["features"]  # other feature sets are left alone
    assert len(case["feature_names"]["vgg11_bn"]) == 64


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with path.open("wb") as handle:
        pickle.dump({"features.0.weight": Payload()}, handle, protocol=2)
    with pytest.raises(WeightsError, match="refused: the checkpoint holds Python objects"):
        VGGExtractor(arch="vgg11", width=0.125, weights=str(path))


def test_wrong_architecture_is_one_clear_line(tmp_path):
    path = tmp_path / "vgg11.pth"
    torch.save(tiny("vgg11").state_dict(), path)
    with pytest.raises(WeightsError) as info:
        VGGExtractor(arch="vgg16", width=0.125, weights=str(path))
    message = str(info.value)
    assert "\n" not in message and "vgg11.pth does not fit vgg16" in message and "missing keys" in message


def test_a_torchvision_vgg11_file_for_vgg16_names_vgg11(tmp_path):
    path = tmp_path / "vgg11-8a719046.pth"
    torch.save({k: torch.zeros(v) for k, v in state_dict_shapes("vgg11", classifier=False).items()}, path)
    with pytest.raises(WeightsError, match="looks like a full-width vgg11 checkpoint"):
        VGGExtractor(arch="vgg16", weights=str(path))


def test_missing_weights_file_says_what_to_do(tmp_path):
    with pytest.raises(WeightsError, match="never downloaded"):
        VGGExtractor(weights=str(tmp_path / "vgg16-397923af.pth"))


def test_architecture_hint_names_the_right_variant():
    shapes = state_dict_shapes("vgg13_bn", classifier=False)
    assert guess_architecture(shapes) == "vgg13_bn"
    assert guess_architecture({"features.0.weight": (7, 3, 3, 3)}) is None


def test_inflation_mean_gives_the_2d_response_on_a_depth_constant_volume():
    net2d = tiny("vgg11")
    net3d = VGG("vgg11", spatial_dims=3, width=0.125, classifier=False).eval()
    net3d.load_state_dict(inflate_state_dict(net2d.state_dict(), "mean"))
    plane = torch.rand(1, 3, 32, 32)
    volume = plane[:, :, None].repeat(1, 1, 12, 1, 1)  # (N, C, depth, rows, cols), constant along depth
    with torch.inference_mode():
        a2, a3 = net2d.forward_layers(plane, ["relu1_1", "relu2_1"]), net3d.forward_layers(volume, ["relu1_1", "relu2_1"])
    for d in range(1, 11):  # zero padding differs on the first and last slice only
        torch.testing.assert_close(a3["relu1_1"][:, :, d], a2["relu1_1"], rtol=1e-4, atol=1e-5)
    for d in range(1, 5):  # after one pool and one more 3-tap convolution
        torch.testing.assert_close(a3["relu2_1"][:, :, d], a2["relu2_1"], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a3["relu1_1"][:, :, 0], a2["relu1_1"], atol=1e-3)  # the edge slice really differs


def test_stage_3d_center_inflation_equals_slices(tmp_path):
    """Through the stage: a depth-constant volume gives the same pool5 vector in 3D (center inflation) and slice-wise."""
    path = tmp_path / "w.pth"
    torch.save(tiny("vgg11").state_dict(), path)
    from monai.data import MetaTensor

    plane = torch.rand(1, 40, 36)
    vol = MetaTensor(plane[..., None].repeat(1, 1, 1, 32))  # (C, X, Y, Z): constant along z
    common = dict(arch="vgg11", width=0.125, weights=str(path), pooling="avg")
    v3 = VGGExtractor(mode="3d", inflate="center", **common)({"image": vol})["features"]["vgg11"]
    vs = VGGExtractor(mode="slices", **common)({"image": vol})["features"]["vgg11"]
    np.testing.assert_allclose(v3, vs, rtol=1e-4, atol=1e-5)


def test_slices_aggregate_and_pooling():
    from monai.data import MetaTensor

    rng = np.random.default_rng(3)
    vol = MetaTensor(torch.as_tensor(rng.normal(size=(1, 40, 40, 5)).astype(np.float32)))
    base = dict(arch="vgg11", width=0.125, layers=["relu4_2", "pool5"], keep_slices=True)
    mean_case = VGGExtractor(aggregate="mean", **base)({"image": vol})
    max_case = VGGExtractor(aggregate="max", **base)({"image": vol})
    per_slice = mean_case["slice_features"]["vgg11"]
    assert per_slice.shape == (5, 128)
    np.testing.assert_allclose(mean_case["features"]["vgg11"], per_slice.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(max_case["features"]["vgg11"], per_slice.max(0), rtol=1e-5, atol=1e-6)
    both = VGGExtractor(pooling="avgmax", name="vgg_both", arch="vgg11", width=0.125)({"image": vol})
    assert both["features"]["vgg_both"].shape == (128,)
    assert both["feature_names"]["vgg_both"][64] == "pool5.max.0"
    assert any("randomly initialised" in w for w in both["warnings"])


def test_fc_layers_need_the_classifier(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(tiny("vgg11").state_dict(), path)
    case = VGGExtractor(arch="vgg11", width=0.125, weights=str(path), layers=["fc7"])({"image": image2d(np.random.default_rng(1))})
    assert case["features"]["vgg11"].shape == (512,)
    torch.save({k: v for k, v in tiny("vgg11").state_dict().items() if k.startswith("features.")}, path)
    with pytest.raises(WeightsError, match="missing keys \\(classifier.0.weight"):
        VGGExtractor(arch="vgg11", width=0.125, weights=str(path), layers=["fc7"])


def test_parameters_are_checked_before_anything_runs():
    from pydantic import ValidationError

    from voxpipe_plugins.features.plugin import VGGFeatureParams

    with pytest.raises(ValidationError, match="unknown layer `pool6` for vgg16; did you mean `pool5`"):
        VGGFeatureParams(layers=["pool6"])
    with pytest.raises(ValidationError, match="fc6/fc7 exist in 2D only"):
        VGGFeatureParams(layers=["fc7"], mode="3d")
    assert VGGFeatureParams(arch="vgg19_bn", layers=["conv5_4", "bn5_4"]).layers == ["conv5_4", "bn5_4"]


def test_imagenet_inputs():
    from voxpipe_plugins.features.inputs import prepare

    grey = torch.full((1, 8, 6), 0.5)
    x = prepare(grey, mode="2d", slice_axis=2, in_channels=3, intensity="none", normalise=True, size=[64, 64], what="t")
    assert x.shape == (1, 3, 64, 64)
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[0, :, 10, 10], expected)
    rgb = torch.rand(4, 10, 10)
    with pytest.raises(ValueError, match="4 channels"):
        prepare(rgb, mode="2d", slice_axis=2, in_channels=3, intensity="none", normalise=False, size=None, what="t")


def test_bad_weights_through_the_cli_is_one_line(tmp_path, cli):
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "in" / "a.png")
    torch.save(tiny("vgg11").state_dict(), tmp_path / "w.pth")
    (tmp_path / "c.yaml").write_text(
        "version: 1\nname: f\ndevice: cpu\nstages:\n  - use: load.image2d\n"
        "  - use: features.vgg\n    with: {arch: vgg13, width: 0.125, weights: w.pth}\n"
    )
    result = cli("run", tmp_path / "c.yaml", "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert len(result.error_lines) == 1 and "w.pth does not fit vgg13" in result.error_lines[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_features_close_to_cpu():
    x = image2d(np.random.default_rng(2), 64)
    cpu = VGGExtractor(arch="vgg11_bn", width=0.25, device="cpu")({"image": x})["features"]["vgg11_bn"]
    gpu = VGGExtractor(arch="vgg11_bn", width=0.25, device="cuda", amp=True)({"image": x})["features"]["vgg11_bn"]
    np.testing.assert_allclose(gpu, cpu, rtol=0.05, atol=0.02)


def test_stages_and_trainer_are_registered(registry):
    for stage_id, kind in (("features.vgg", "extractor"), ("head.vgg", "head"), ("head.vgg_rnn", "head"), ("write.predictions", "writer")):
        assert registry.stages[stage_id].kind.value == kind
    assert "heads" in registry.trainers

"""Each `$` form docs/bundles.md lists is read to its value; everything else is refused (no torch, no bundle run)."""

from __future__ import annotations

import pytest

from voxpipe_plugins.bundle.expressions import ArchCode, ArchItem, BundleError, Component, Device, Dtype, Expression, LabelRule

REFS = {
    "bundle_root": ".",
    "a": 2,
    "b": 8,
    "flags#highres": True,
    "flags#lowres": False,
    "labels": ["background", "liver", "spleen"],
    "network_def": Component("UNet", {}, "network_def"),
    "device": Device("auto"),
    "arch_ckpt": ArchCode("./models/search_code.pt"),
    "arch_ckpt_path": "./models/search_code.pt",
}


def read(text: str, key: str = "key"):
    return Expression(key, text, REFS.__getitem__).value()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')", Device("auto")),
        ("$torch.device('cpu')", Device("cpu")),
        ("$@network_def.to(@device)", REFS["network_def"]),
        ("$@bundle_root + '/models/model.pt'", "./models/model.pt"),
        ("$os.path.join(@bundle_root, 'models', 'model.pt')", "./models/model.pt"),
        ("$numpy.float32", Dtype("float32")),
        ("$torch.uint8", Dtype("uint8")),
        ("$np.int16", Dtype("int16")),
        ("$[1.5, 1.5, 1.5] if @flags#highres else [3.0, 3.0, 3.0]", [1.5, 1.5, 1.5]),
        ("$'model.pt' if @flags#lowres else 'model_lowres.pt'", "model_lowres.pt"),
        ("$1 - float(@a) / float(@b)", 0.75),
        ("$@a * 3 + 1", 7),
        ("$-@a", -2),
        ("$len(@labels)", 3),
        ("$int(@b) // 3", 2),
        ("$monai.utils.CommonKeys.IMAGE", "image"),
        ("$torch.load(@arch_ckpt_path, map_location=torch.device('cuda'))", ArchCode("./models/search_code.pt")),
        ("$@arch_ckpt['arch_code_a']", ArchItem(ArchCode("./models/search_code.pt"), "arch_code_a")),
        ("$torch.from_numpy(@arch_ckpt['node_a'])", ArchItem(ArchCode("./models/search_code.pt"), "node_a")),
        ("$@labels[1]", "liver"),
        ("${'a': 1, 'b': [1, 2]}", {"a": 1, "b": [1, 2]}),
    ],
)
def test_allowed_forms_are_read(text, value):
    assert read(text) == value


def test_label_lambdas_become_channel_rules():
    rule = read("$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))")
    assert rule == LabelRule(((2, 0.0, 4), (0, 0.0, 1), (1, 0.0, 2)), 0)
    assert read("$lambda y: torch.where(y[[0]] > 0.5, 1, 0)") == LabelRule(((0, 0.5, 1),), 0)


@pytest.mark.parametrize(
    "text",
    [
        "$__import__('os').system('touch MARKER')",
        "$exec('x')",
        "$eval('1')",
        "$open('x')",
        "$getattr(torch, 'load')",
        "$torch.hub.load('a', 'b')",
        "$monai.bundle.run()",
        "$os.system('x')",
        "$os.path.join(@bundle_root, 'x').__class__",
        "$().__class__",
        "$[x for x in @labels]",
        "${k: 1 for k in @labels}",
        "$@network_def.cuda()",
        "$@network_def.to(@device).forward(1)",
        "$lambda x: x",
        "$lambda x: os.system('x')",
        "$lambda x: torch.where(x[[0]] > 0, y, 0)",
        "$lambda x: torch.where(x[[0]] > 0, 1, 0) + 1",
        "$lambda x, y: torch.where(x[[0]] > 0, 1, 0)",
        "$lambda x: torch.where(z[[0]] > 0, 1, 0)",
        "$torch.where(@a > 0, 1, 0)",
        "$'a' * 10000000",
        "$10 ** 100",
        "$@a / 0",
        "$@labels if @network_def else 1",
        "$import os",
        "$x := 1",
        "$f'{@a}'",
        "$b'bytes'",
        "$@a.__class__",
        "$numpy.load('x')",
        "$torch.tensor(1).numpy()",
        "$*@labels",
    ],
)
def test_other_forms_are_refused_with_the_key(text):
    with pytest.raises(BundleError) as caught:
        read(text, key="network_def#channels")
    assert str(caught.value).startswith("`network_def#channels`: ") and "refused" in str(caught.value)

"""Six real MONAI Model Zoo bundles imported as data reproduce MONAI's own inference, voxel for voxel.

Each bundle's configs are the Model Zoo's (tests/data/bundles, see NOTICE.md); the weights
are random with a fixed seed; the input is a small synthetic NIfTI (oblique, flipped,
single- and multi-channel). MONAI's side runs the bundle with its ConfigParser (which
executes the bundle: fine here, the bundle is ours); VoxPipe's side runs `voxpipe bundle
import` then `voxpipe run`. The overrides that keep this fast (a 32-voxel window, a
narrower network, a reader installed here) are written into the copied bundle, so both
sides read the same config; `reference` entries change only how MONAI's side loads
(CPU instead of CUDA, numpy arrays unpickled by MONAI's own torch.load).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from bundle_support import DROP, copy_bundle, dints_arch_code, monai_reference, oblique_affine, phantom, write_nifti, write_random_weights

ROI = [32, 32, 32]
CASES = {
    "spleen_ct_segmentation": {
        "overrides": {"inferer#roi_size": ROI},
        "shape": (40, 36, 28),
        "affine": oblique_affine((1.5, 1.5, 2.0), flip=True),
    },
    "wholeBody_ct_segmentation": {
        "overrides": {"inferer#roi_size": ROI, "network_def#init_filters": 8},
        "shape": (30, 28, 24),
        "affine": np.diag([-1.6, 1.5, 1.4, 1.0]),
    },
    "brats_mri_segmentation": {
        "overrides": {"inferer#roi_size": ROI, "network_def#init_filters": 8},
        "shape": (36, 32, 28),
        "affine": oblique_affine((1.0, 1.0, 1.0), degrees=20),
        "channels": 4,
    },
    "swin_unetr_btcv_segmentation": {
        "overrides": {
            "inferer#roi_size": [64, 64, 64],  # Swin's five halvings need 64 (at 32 its bottleneck is one voxel)
            "network_def#feature_size": 12,
            "preprocessing#transforms#0#reader": "NibabelReader",
        },
        "reference": {"network_def#img_size": DROP},  # MONAI 1.6's SwinUNETR refuses it; VoxPipe drops it with a note
        "shape": (32, 30, 24),
        "affine": np.diag([1.5, 1.5, 2.0, 1.0]),
    },
    "pancreas_ct_dints_segmentation": {
        "overrides": {
            "inferer#roi_size": ROI,
            "dints_space#num_blocks": 4,
            "dints_space#num_depths": 3,
            "dints_space#channel_mul": 0.5,
            "dints_space#device": "$torch.device('cpu')",
            "arch_ckpt": "$torch.load(@arch_ckpt_path, map_location=torch.device('cpu'))",
        },
        "reference": {"arch_ckpt": "$torch.load(@arch_ckpt_path, map_location='cpu', weights_only=False)"},
        "shape": (34, 30, 26),
        "affine": np.diag([-1.0, -1.0, 1.0, 1.0]),
    },
    "prostate_mri_anatomy": {
        "overrides": {"inferer#roi_size": ROI, "network_def#channels": [8, 16, 16, 32, 32, 64], "network_def#num_res_units": 2},
        "shape": (36, 36, 24),
        "affine": oblique_affine((0.5, 0.5, 0.5), degrees=15, flip=True),
        "low": 0.0,
        "high": 800.0,
    },
}


def _prepare(name: str, tmp: Path, source: str | None = None) -> tuple[Path, Path, str | list[str]]:
    case = CASES[name]
    bundle = copy_bundle(source or name, tmp, case["overrides"])
    if name.startswith("pancreas_ct_dints"):
        dints_arch_code(bundle, num_blocks=4, num_depths=3)
    write_random_weights(bundle, seed=7, extra=case.get("reference"))
    channels = case.get("channels", 0)
    volume = phantom(case["shape"], seed=3, low=case.get("low", -100.0), high=case.get("high", 300.0), channels=channels)
    image = write_nifti(tmp / "input" / "scan.nii.gz", volume, case["affine"]) if (tmp / "input").mkdir() is None else None
    reference_input: str | list[str] = str(image)
    if channels:  # MONAI's bundle stacks one file per channel; VoxPipe reads the same data as one 4D NIfTI
        parts = [write_nifti(tmp / f"channel{c}.nii.gz", volume[..., c], case["affine"]) for c in range(channels)]
        reference_input = [str(p) for p in parts]
    return bundle, image, reference_input


SLOW: set[str] = set()  # all six run in CI (Swin UNETR's 64-voxel window is the longest, ~15 s a side on a busy machine)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(CASES)])
def test_imported_bundle_reproduces_monai(name, tmp_path, cli):
    if name.startswith("swin"):
        pytest.importorskip("einops", reason="MONAI's SwinUNETR needs einops (a dependency to add: see docs/bundles.md)")
    bundle, image, reference_input = _prepare(name, tmp_path)
    expected = monai_reference(bundle, reference_input, CASES[name].get("reference"))

    config = tmp_path / "imported.yaml"
    result = cli("bundle", "import", str(bundle), "-o", str(config))
    assert result.exit_code == 0, result.stderr
    text = config.read_text()
    assert "$" not in text.replace("# ", "") and "_target_" not in text  # registry ids and literals only
    assert cli("validate", str(config)).exit_code == 0
    out = tmp_path / "out"
    result = cli("run", str(config), "-i", str(image.parent), "-o", str(out), "--workers", "0", "--device", "cpu")  # as the reference
    assert result.exit_code == 0, result.stdout + result.stderr
    (label_file,) = out.glob("*/label.nii.gz")
    label = nib.load(label_file)
    got = np.asarray(label.dataobj)
    want = np.rint(expected[0]) if expected.shape[0] == 1 else expected.argmax(0)
    assert got.shape == want.shape
    np.testing.assert_allclose(label.affine, nib.load(image).affine, atol=1e-4)  # the input's grid
    agreement = float((got == want).mean())
    assert agreement >= 0.999, f"{name}: voxel agreement {agreement:.5f}"
    assert len(np.unique(want)) > 1, f"{name}: the reference is one class; the comparison would prove little"


def test_import_writes_literals_and_pins_the_weights(tmp_path, cli):
    pytest.importorskip("einops", reason="MONAI's SwinUNETR needs einops")
    bundle = copy_bundle("swin_unetr_btcv_segmentation", tmp_path, {"network_def#feature_size": 12})
    write_random_weights(bundle, seed=1, extra={"network_def#img_size": DROP})
    config = tmp_path / "swin.yaml"
    result = cli("bundle", "import", "-i", str(bundle), "-o", str(config))
    assert result.exit_code == 0, result.stderr
    assert "img_size" in result.stderr and "dropped" in result.stderr  # MONAI 1.6's SwinUNETR has no img_size
    data = yaml.safe_load(config.read_text())
    deep = next(s["with"] for s in data["stages"] if s["use"] == "segment.deep")
    assert deep["network"] == "SwinUNETR" and "img_size" not in deep["args"]
    assert deep["roi_size"] == [96, 96, 96] and deep["sw_batch_size"] == 4 and deep["overlap"] == 0.5
    assert deep["label_names"][1] == "spleen" and len(deep["weights_sha256"]) == 64
    # again without --force: refused, one line, exit 2; with --force: rewritten
    again = cli("bundle", "import", str(bundle), "-o", str(config))
    assert again.exit_code == 2 and len(again.error_lines) == 1 and "--force" in again.stderr
    assert cli("bundle", "import", str(bundle), "-o", str(config), "--force").exit_code == 0


def test_validate_reports_missing_and_changed_weights(tmp_path, cli):
    bundle = copy_bundle("spleen_ct_segmentation", tmp_path, {})
    weights = write_random_weights(bundle, seed=1)
    config = tmp_path / "spleen.yaml"
    assert cli("bundle", "import", str(bundle), "-o", str(config)).exit_code == 0
    assert cli("validate", str(config)).exit_code == 0
    write_random_weights(bundle, seed=2)  # another file under the same name
    result = cli("validate", str(config))
    assert result.exit_code == 2 and "SHA-256" in result.stderr and "model.pt" in result.stderr
    weights.unlink()
    result = cli("validate", str(config))
    assert result.exit_code == 2 and "not found" in result.stderr and len(result.error_lines) == 1


def test_import_refuses_weights_that_do_not_fit(tmp_path, cli):
    bundle = copy_bundle("spleen_ct_segmentation", tmp_path, {})
    write_random_weights(bundle, seed=1)
    config = bundle / "configs" / "inference.json"
    config.write_text(config.read_text().replace('"out_channels": 2', '"out_channels": 3'))
    result = cli("bundle", "import", str(bundle), "-o", str(tmp_path / "c.yaml"))
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "does not fit" in result.stderr
    assert not (tmp_path / "c.yaml").exists()


def test_info_describes_a_bundle_without_weights(tmp_path, cli):
    bundle = copy_bundle("brats_mri_segmentation", tmp_path, {})
    result = cli("bundle", "info", str(bundle), "--json")
    assert result.exit_code == 0, result.stderr
    import json

    info = json.loads(result.stdout)
    assert info["name"] == "BraTS MRI segmentation" and info["network"] == "SegResNet" and info["importable"]
    assert info["inputs"]["image"]["channels"] == 4 and info["outputs"]["pred"]["labels"]["0"]
    assert "segment.deep" in info["stages"] and any("model.pt not found" in n for n in info["notes"])
    text = cli("bundle", "info", "-i", str(bundle))
    assert text.exit_code == 0 and "SegResNet" in text.stdout and "import would write" in text.stdout


def test_label_transforms_after_inversion_become_monai_stages(tmp_path, cli):
    """A reviewed MONAI transform of the label map after Invertd (here MapLabelValued) runs as a monai stage, same output."""
    name = "spleen_ct_segmentation"
    remap = {"_target_": "MapLabelValued", "keys": "pred", "orig_labels": [0, 1], "target_labels": [0, 6]}
    CASES["_remap"] = {**CASES[name], "overrides": {**CASES[name]["overrides"], "postprocessing#transforms#3": remap}}
    try:
        bundle, image, reference_input = _prepare("_remap", tmp_path, source=name)
    finally:
        del CASES["_remap"]
    expected = monai_reference(bundle, reference_input)
    config = tmp_path / "imported.yaml"
    assert cli("bundle", "import", str(bundle), "-o", str(config)).exit_code == 0
    stages = [s["use"] for s in yaml.safe_load(config.read_text())["stages"]]
    assert stages[stages.index("segment.deep") + 1] == "monai.MapLabelValued"
    out = tmp_path / "out"
    assert cli("run", str(config), "-i", str(image.parent), "-o", str(out), "--workers", "0", "--device", "cpu").exit_code == 0
    got = np.asarray(nib.load(next(out.glob("*/label.nii.gz"))).dataobj)
    assert set(np.unique(got)) == {0, 6} and float((got == np.rint(expected[0])).mean()) >= 0.999
    # the same transform before the inversion cannot be a stage on the input grid: refused, naming the key
    data = json.loads((bundle / "configs" / "inference.json").read_text())
    post = data["postprocessing"]["transforms"]
    post.insert(1, post.pop(3))  # MapLabelValued right after Activationsd, before Invertd
    (bundle / "configs" / "inference.json").write_text(json.dumps(data))
    result = cli("bundle", "import", str(bundle), "-o", str(config), "--force")
    assert result.exit_code == 2 and "postprocessing#transforms#1" in result.stderr

"""The case contract is checked after every stage, and a violation names the stage at fault.

Unit tests walk every violation kind through :func:`voxpipe.contract.violation`; the
integration tests install a real plugin (module + dist-info with a ``voxpipe`` entry point)
whose stage breaks the contract on one case out of three, and run it through ``voxpipe run``:
the guilty stage is named, the run exits 1, the other cases finish, and nothing is written for
the broken case (before the contract, ``write.nifti`` wrote a NumPy image with an identity
affine, and a declared but missing ``label`` failed later in ``write.nifti`` with ``KeyError``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from tests import crash_plugin
from voxpipe.contract import violation
from voxpipe.metatensors import as_image, as_label, make_metatensor

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def image3d(shape=(6, 5, 4)) -> MetaTensor:
    return make_metatensor(np.random.default_rng(0).random((1, *shape), dtype=np.float32), AFFINE)


def label_of(image: MetaTensor, names=None) -> MetaTensor:
    data = (image.as_tensor() > 0.5).to(torch.uint8)
    return as_label(data, image, names if names is not None else {0: "background", 1: "object"})


def after(before: dict, declared=(), **changes) -> str | None:
    case = {**before, **changes}
    return violation(case, dict(before), declared)


@pytest.fixture
def base() -> dict:
    return {"case_id": "case-x", "history": [], "image": image3d()}


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    "make, shown",
    [
        (lambda im: im.numpy(), "numpy.ndarray"),
        (lambda im: im.as_tensor(), "torch.Tensor"),
        (lambda im: im.numpy().tolist(), "list"),
        (lambda im: None, "NoneType"),
    ],
)
def test_an_image_that_is_not_a_metatensor_is_named(base, make, shown):
    message = after(base, ("image",), image=make(base["image"]))
    assert message.startswith(f"`image` is a {shown}, expected a MetaTensor with an affine")
    assert "voxpipe.plugin.as_image" in message


@pytest.mark.parametrize("shape", [(6, 5), (1, 1, 6, 5, 4), (6,)])
def test_an_image_that_is_not_channel_first_2d_or_3d(base, shape):
    image = MetaTensor(torch.zeros(shape), affine=torch.eye(4))
    assert "expected channel-first" in after(base, ("image",), image=image)


def test_an_affine_that_is_not_4x4(base):
    image = MetaTensor(torch.zeros((1, 6, 5)), affine=torch.eye(3))
    assert "3x3 affine, expected 4x4" in after(base, ("image",), image=image)


def test_a_declared_image_like_output_is_checked_like_image(base):
    body = base["image"].numpy() > 0.5
    assert after(base, ("body",), body=body).startswith("`body` is a numpy.ndarray")
    # non-array outputs (feature dicts, vectors) are none of the contract's business
    assert after(base, ("features",), features={"lungs": np.zeros(8)}) is None
    assert after(base, ("vector",), vector=torch.zeros(8)) is None


def test_a_declared_output_that_is_missing(base):
    assert after(base, ("image", "label")).startswith("declares that it writes `label` but the case has no `label`")


def test_only_what_the_stage_changed_is_checked(base):
    """A bad value left by an earlier stage is that stage's fault, not the next one's."""
    broken = {**base, "image": base["image"].numpy()}
    assert violation(broken, dict(broken), ()) is None
    assert violation({**broken, "history": [{"op": "x"}]}, dict(broken), ()) is None


# ----------------------------------------------------------------------------- labels


def test_a_good_label_passes(base):
    assert after(base, ("label",), label=label_of(base["image"])) is None
    boolean = as_label(base["image"].as_tensor() > 0.5, base["image"], {0: "bg", 1: "fg"})
    assert boolean.dtype == torch.bool and after(base, ("label",), label=boolean) is None
    absent = label_of(base["image"], {0: "background", 1: "object", 2: "not in this case"})
    assert after(base, ("label",), label=absent) is None, "a named value absent from the case is fine"
    unnamed = MetaTensor(torch.zeros((1, 6, 5, 4), dtype=torch.int16), affine=torch.as_tensor(AFFINE))
    assert after(base, ("label",), label=unnamed) is None, "a label without a table is fine"


@pytest.mark.parametrize(
    "make",
    [
        lambda lb: lb[0],  # MetaTensor without the channel axis
        lambda lb: lb.numpy()[0],  # NumPy without the channel axis: named as NumPy first
    ],
)
def test_a_label_without_a_channel_axis(base, make):
    message = after(base, ("label",), label=make(label_of(base["image"])))
    assert "channel" in message or "numpy.ndarray" in message
    if isinstance(make(label_of(base["image"])), MetaTensor):
        assert "a label is channel-first too" in message and "x[None]" in message


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_a_float_label(base, dtype):
    label = label_of(base["image"]).to(dtype)
    assert "expected an integer or bool dtype" in after(base, ("label",), label=label)


def test_a_label_off_the_image_grid(base):
    small = as_label(torch.zeros((1, 3, 5, 4), dtype=torch.uint8), base["image"])
    assert "spatial shape (3, 5, 4), the image (6, 5, 4)" in after(base, ("label",), label=small)
    with_label = {**base, "label": label_of(base["image"])}
    resampled = image3d((3, 5, 4))
    message = violation({**with_label, "image": resampled}, dict(with_label), ("image",))
    assert message.startswith("`image` now has spatial shape (3, 5, 4) but `label` keeps (6, 5, 4)")


def test_label_values_without_names(base):
    label = label_of(base["image"])
    label[0, 0, 0, 0] = 7
    message = after(base, ("label",), label=label)
    assert message.startswith("`label` has values 7 with no name in meta['label_names']") and "named: 0, 1" in message
    label.meta["label_names"] = {"0": "background", "1": "object", "7": "seven"}  # string keys, as JSON gives
    assert after(base, ("label",), label=label) is None
    boolean = as_label(base["image"].as_tensor() > 0.5, base["image"], {0: "background"})
    assert after(base, ("label",), label=boolean).startswith("`label` has values 1 with no name")
    label.meta["label_names"] = ["background", "object"]
    assert "expected a mapping" in after(base, ("label",), label=label)


def test_any_value_with_a_label_table_is_a_label(base):
    body = as_label(torch.zeros((1, 6, 5, 4)), base["image"], {0: "outside", 1: "body"}).to(torch.float32)
    assert after(base, ("body",), body=body).startswith("`body` is a label map with dtype float32")


def test_as_image_and_as_label_keep_geometry_without_warnings(base, recwarn):
    image = base["image"]
    again = as_image(image.numpy()[0] * 2, image)  # spatial only: the channel axis comes back
    assert again.shape == image.shape and torch.equal(again.affine, image.affine)
    label = as_label(np.rint(image.numpy()), image, {0: "a", 1: "b"})
    assert label.dtype == torch.uint8 and label.meta["label_names"] == {0: "a", 1: "b"}
    assert as_label(label.numpy(), label).meta["label_names"] == {0: "a", 1: "b"}, "re-wrapping keeps the table"
    with pytest.raises(ValueError, match="non-integer"):
        as_label(image.numpy(), image)
    assert not [w for w in recwarn if "affine" in str(w.message).lower()]


# ----------------------------------------------------------------------------- through voxpipe run

PLUGIN_SOURCE = '''
"""contracttest: a stage that breaks the case contract on chosen cases."""
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from voxpipe.plugin import StageKind, StageSpec, hookimpl, record


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["numpy", "tensor", "label_no_channel", "float_label", "skip_label", "unnamed_value"] = "numpy"
    trigger: str = ""


class Act:
    def __init__(self, mode, trigger):
        self.mode, self.trigger = mode, trigger

    def __call__(self, case):
        out = dict(case)
        record(out, "contracttest.act", mode=self.mode)
        image = case["image"]
        from voxpipe.plugin import as_label

        label = as_label(image.as_tensor() > image.mean(), image, {0: "background", 1: "bright"})
        hit = self.trigger in case["source"].path.name
        if hit and self.mode == "numpy":
            out["image"] = image.numpy()
        elif hit and self.mode == "tensor":
            out["image"] = image.as_tensor() * 1.0
        elif hit and self.mode == "label_no_channel":
            label = label[0]
        elif hit and self.mode == "float_label":
            label = label.float()
        elif hit and self.mode == "unnamed_value":
            label = label.to(torch.uint8)
            label[0, 0, 0, 0] = 5
        if not (hit and self.mode == "skip_label"):
            out["label"] = label
        return out


@hookimpl
def voxpipe_register_stages(register):
    register(StageSpec(id="contracttest.act", kind=StageKind.TRANSFORM, summary="Test only: break the case contract.",
                       params=Params, factory=Act, reads=("image",), writes=("image", "label")))
'''


def install_plugin(folder: Path) -> Path:
    package = folder / "voxpipe_contracttest"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(PLUGIN_SOURCE)
    info = folder / "voxpipe_contracttest-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: voxpipe-contracttest\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[voxpipe]\ncontracttest = voxpipe_contracttest.plugin\n")
    (info / "RECORD").write_text("")
    return folder


@pytest.fixture
def contracttest(tmp_path, monkeypatch):
    site = install_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])))
    return site


CONFIG = """\
version: 1
name: contract
device: cpu
stages:
  - use: load.auto
  - use: contracttest.act
    with: {{mode: {mode}, trigger: c01}}
  - use: write.nifti
    with: {{keys: [image, label]}}
"""

EXPECTED = {
    "numpy": "`image` is a numpy.ndarray, expected a MetaTensor with an affine (wrap it with voxpipe.plugin.as_image)",
    "tensor": "`image` is a torch.Tensor, expected a MetaTensor with an affine",
    "label_no_channel": "`label` has shape (12, 12, 6), the image's spatial shape: a label is channel-first too",
    "float_label": "`label` is a label map with dtype float32, expected an integer or bool dtype",
    "skip_label": "declares that it writes `label` but the case has no `label`",
    "unnamed_value": "`label` has values 5 with no name in meta['label_names']",
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_contract_violation_fails_its_case_at_the_guilty_stage(cli, contracttest, tmp_path, write_config, mode, workers):
    cases = crash_plugin.write_cases(tmp_path / "input", ["c00", "c01", "c02"])
    out = tmp_path / "out"
    result = cli("run", write_config(CONFIG.format(mode=mode)), "-i", cases, "-o", out, "--workers", workers)
    assert result.exit_code == 1, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    failed = [c for c in manifest["cases"] if c["status"] == "failed"]
    assert len(failed) == 1 and len(manifest["cases"]) == 3, manifest["cases"]
    assert failed[0]["error"].startswith("stage 2 (contracttest.act): " + EXPECTED[mode]), failed[0]["error"]
    assert "write.nifti" not in failed[0]["error"] and "KeyError" not in failed[0]["error"]
    done = sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(done) == 2 and all((p / "image.nii.gz").is_file() and (p / "label.nii.gz").is_file() for p in done)
    assert failed[0]["case_id"] not in {p.name for p in done}, "nothing is published for the broken case"


# ----------------------------------------------------------------------------- writers


@pytest.mark.parametrize("make", [lambda im: im.numpy(), lambda im: im.as_tensor(), lambda im: im.numpy().tolist()])
def test_write_nifti_refuses_data_without_an_affine(tmp_path, make):
    """Before, an identity affine was written: a 2 mm scan became 1 mm, its orientation changed."""
    from voxpipe_plugins.io_nifti.writer import NiftiWriter, NoAffineError

    case = {"output_dir": tmp_path, "history": [], "image": make(image3d())}
    with pytest.raises(NoAffineError, match=r"write.nifti: `image`: \w+ has no affine"):
        NiftiWriter(keys=["image"])(case)
    assert list(tmp_path.iterdir()) == [], "no partial file"
    with pytest.raises(ValueError, match="the case has no `label`"):
        NiftiWriter(keys=["label"])({"output_dir": tmp_path, "history": []})


@pytest.mark.parametrize("make", [lambda lb: lb.numpy(), lambda lb: lb.as_tensor()])
def test_write_dicom_seg_refuses_a_label_without_an_affine(make):
    from voxpipe_plugins.io_dicom.seg_writer import DicomSegWriter

    image = image3d()
    source = {"affine": AFFINE, "shape": tuple(image.shape[1:])}
    with pytest.raises(ValueError, match="without a 4x4 affine"):
        DicomSegWriter._check_grid(make(label_of(image)), image, source)
    DicomSegWriter._check_grid(label_of(image), image, source)  # the same label with its affine is fine

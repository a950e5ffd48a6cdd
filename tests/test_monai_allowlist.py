"""Every MONAI dictionary transform name is either allowed and safe, or refused: alias by alias.

Safety is decided by the class a name resolves to. These tests enumerate every name that
``monai.transforms`` (and each ``*.dictionary`` module) binds to a ``MapTransform``
subclass, and check that the source-level resolution the validator uses agrees with the
real objects, that all aliases of a class get the same verdict, and that an allowed
transform never turns a config string into code: every reviewed argument of every allowed
transform is built, and run on a case, with a string naming a canary function.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections import defaultdict

import monai.transforms as T
import pytest
import torch
from monai.data import MetaTensor
from pydantic import ValidationError

from voxpipe import monai_adapter
from voxpipe import monai_allowlist as allowlist
from voxpipe.config import validate_text
from voxpipe.errors import ConfigError
from voxpipe.stage import StageContext, build_stage

CANARY = "tests.monai_canary"  # importing it, or calling its `fire`, is what must never happen

# Values for required arguments (and the few that MONAI needs together) so each allowed transform can be built.
SAMPLE = {
    "keys": ["image"],
    "a_min": 0.0,
    "a_max": 100.0,
    "angle": 0.1,
    "applied_labels": [1],
    "b_min": 0.0,
    "b_max": 1.0,
    "device": "cpu",
    "distort_steps": [[1.0, 1.0]] * 3,
    "factor": 0.1,
    "factors": 0.1,
    "gamma": 1.0,
    "holes": 1,
    "indices": [0, 1, 2, 3],
    "k": 4,
    "kernel": "mean",
    "key_dst": "image",
    "key_prefix": "stats",
    "label_key": "label",
    "loc": [0, 1, 1, 1],
    "lower": 1.0,
    "upper": 99.0,
    "magnitude_range": [1.0, 2.0],
    "name": "both",
    "num_cells": 1,
    "offset": 1.0,
    "offsets": 1.0,
    "ops": ["mean"],
    "order": 1,
    "orig_labels": [1],
    "target_labels": [2],
    "patch_size": [4, 4, 4],
    "pixdim": [1.0, 1.0, 1.0],
    "radius": 1,
    "rand_size": [4, 4, 4],
    "refer_keys": ["image"],
    "repeats": 1,
    "roi_scale": 0.5,
    "roi_size": [4, 4, 4],
    "select_labels": [1],
    "sigma": 1.0,
    "sigma_range": [1.0, 2.0],
    "source_key": "image",
    "spacing": [1.0, 1.0],
    "spatial_border": 1,
    "spatial_dims": [0],
    "spatial_size": [8, 8, 8],
    "threshold": 0.5,
    "window_length": 3,
    "zoom": 1.5,
}
EXTRA = {
    "SpatialCropd": {"roi_center": [4, 4, 4], "roi_size": [4, 4, 4]},
    "Orientationd": {"axcodes": "RAS"},
    "ConcatItemsd": {"keys": ["image", "label"]},
    "ImageFilterd": {"kernel_size": 3},
    "RandImageFilterd": {"kernel_size": 3},
}


def _dictionary_modules() -> list[str]:
    """Every ``monai.transforms.*.dictionary`` module, found on disk (not only those ``__init__`` imports)."""
    found = []
    for info in pkgutil.walk_packages(T.__path__, "monai.transforms."):
        if info.name.endswith(".dictionary"):
            found.append(info.name)
    return sorted(found)


def _names_by_class() -> dict[type, set[str]]:
    """Class object -> every name bound to it in monai.transforms or a dictionary module."""
    groups: dict[type, set[str]] = defaultdict(set)
    namespaces = [T] + [importlib.import_module(m) for m in _dictionary_modules()]
    for namespace in namespaces:
        for name, obj in vars(namespace).items():
            if inspect.isclass(obj) and issubclass(obj, T.MapTransform):
                groups[obj].add(name)
    return groups


GROUPS = _names_by_class()
ALLOWED_OBJECTS = monai_adapter.allowed_classes()


def _is_allowed(obj: type) -> bool:
    return any(obj is allowed for allowed in ALLOWED_OBJECTS.values())


def _kwargs(cls_name: str) -> dict:
    signature = monai_adapter.signature_of(cls_name)
    kwargs = {a.name: SAMPLE[a.name] for a in signature.arguments if a.default is None}
    kwargs.update(EXTRA.get(cls_name, {}))
    return kwargs


def _case() -> dict:
    torch.manual_seed(0)
    image = MetaTensor(torch.rand(1, 8, 8, 8) * 100)
    return {"image": image, "label": MetaTensor((image > 50).float())}


def test_enumeration_is_complete():
    """The enumeration sees every exported alias and every dictionary module (a guard for the tests below)."""
    assert len(GROUPS) > 140
    assert {"LoadImaged", "LoadImageD", "LoadImageDict"} <= GROUPS[T.LoadImaged]
    assert "monai.transforms.io.dictionary" in _dictionary_modules()
    exported = {n for names in GROUPS.values() for n in names if n in dir(T)}
    assert len(exported) > 450


def test_allow_list_and_refusals_cover_every_class_of_this_monai():
    """Each MapTransform class MONAI defines was reviewed: allowed, or refused with a reason (else update the lists)."""
    unreviewed = sorted(c.__name__ for c in GROUPS if c.__name__ not in allowlist.ALLOWED and c.__name__ not in allowlist.REFUSED)
    assert unreviewed == []
    assert not set(allowlist.ALLOWED) & set(allowlist.REFUSED)
    for cls_name, (module, _) in allowlist.ALLOWED.items():
        obj = ALLOWED_OBJECTS[cls_name]
        assert obj.__module__ == f"monai.transforms.{module}" and issubclass(obj, T.MapTransform)


@pytest.mark.parametrize("obj", sorted(GROUPS, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_every_alias_gets_the_verdict_of_its_class(registry, obj):
    allowed = _is_allowed(obj)
    for name in sorted(GROUPS[obj]):
        stage_id = f"monai.{name}"
        resolved = monai_adapter.resolve(name)
        if resolved is not None:  # the source-level resolution agrees with the real objects
            assert getattr(importlib.import_module(f"monai.transforms.{resolved.module}"), resolved.cls) is obj
            assert getattr(T, name) is obj
        spec = monai_adapter.spec_for(stage_id)
        exported = getattr(T, name, None) is obj
        if allowed and exported:
            assert spec is not None, f"{stage_id}: an alias of an allowed transform is refused"
            assert resolved.cls == obj.__name__
            continue
        assert spec is None, f"{stage_id} is accepted but {obj.__name__} is not allowed"
        config = f"version: 1\nname: m\nstages:\n  - use: load.auto\n  - use: {stage_id}\n    id: x\n    with: {{keys: [image]}}\n"
        with pytest.raises(ConfigError) as info:
            validate_text(config, registry, source="m.yaml")
        [line] = info.value.problems
        assert line.startswith(f'm.yaml:5: stage 2 "x" ({stage_id}): ') and "\n" not in line
        if exported and resolved is not None:
            assert "not allowed" in line and obj.__name__ in line, line
        else:
            assert "unknown MONAI dictionary transform" in line, line
        assert any(hint in line for hint in ("use ", "leave it out", "plugin stage", "did you mean")), line


@pytest.mark.parametrize("cls_name", sorted(allowlist.ALLOWED))
def test_reviewed_arguments_match_the_real_signature(cls_name):
    """The allow-list is not stale, and what it leaves out has a default (so leaving it out works)."""
    obj = ALLOWED_OBJECTS[cls_name]
    real = {
        p.name: p for p in list(inspect.signature(obj.__init__).parameters.values())[1:] if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    reviewed = allowlist.reviewed_arguments(cls_name)
    assert reviewed <= set(real), f"reviewed but gone: {reviewed - set(real)}"
    for name, parameter in real.items():
        if name not in reviewed:
            assert parameter.default is not inspect.Parameter.empty, f"{cls_name}.{name} is required but not settable"
        elif "Callable" in str(parameter.annotation):
            assert (cls_name, name) in allowlist.CHOICES, f"{cls_name}.{name} takes a callable"
    source = {a.name for a in monai_adapter.signature_of(cls_name).arguments}
    assert source == set(real), "the source reading and the real signature disagree"


@pytest.mark.parametrize("cls_name", sorted(allowlist.ALLOWED))
def test_model_refuses_what_cannot_be_set(cls_name):
    """Unreviewed and callable arguments, **kwargs, dtype strings outside the list, VoxPipe's own case keys."""
    params = monai_adapter.spec_for(f"monai.{cls_name}").params
    base = _kwargs(cls_name)
    params.model_validate(base)
    obj = ALLOWED_OBJECTS[cls_name]
    real = [p.name for p in list(inspect.signature(obj.__init__).parameters.values())[1:] if p.kind is p.POSITIONAL_OR_KEYWORD]
    attempts = {name: "subprocess.getoutput" for name in real if name not in allowlist.reviewed_arguments(cls_name)}
    attempts.update({"reader": "subprocess.getoutput", "cmd": "id > pwned", "func": "os.system", "kwargs": {"a": 1}})
    for name, value in attempts.items():
        with pytest.raises(ValidationError) as info:
            params.model_validate({**base, name: value})
        assert len(info.value.errors()) == 1
    for name in allowlist.DTYPE_ARGUMENTS & allowlist.reviewed_arguments(cls_name):
        for bad in ("object", "O", "os.system", "tests.monai_canary.fire", "torch.float32", "V8"):
            with pytest.raises(ValidationError):
                params.model_validate({**base, name: bad})
        params.model_validate({**base, name: "float32"})
    for key in sorted(allowlist.RESERVED_KEYS):
        with pytest.raises(ValidationError, match="VoxPipe's own case keys"):
            params.model_validate({**base, "keys": [key]})
        with pytest.raises(ValidationError, match="VoxPipe's own case keys"):
            params.model_validate({**base, "keys": [f"{key}.files"]})


def test_reserved_keys_refused_in_every_argument(registry):
    cases = {
        "CopyItemsd": "{keys: [image], names: [output_dir]}",
        "ConcatItemsd": "{keys: [image, label], name: case_id}",
        "DeleteItemsd": "{keys: [dicom.files]}",
        "CropForegroundd": "{keys: [image], source_key: image, start_coord_key: source}",
        "ResampleToMatchd": "{keys: [image], key_dst: history}",
    }
    for name, args in cases.items():
        config = f"version: 1\nname: m\nstages:\n  - use: load.auto\n  - use: segment.otsu\n  - use: monai.{name}\n    with: {args}\n"
        with pytest.raises(ConfigError, match="VoxPipe's own case keys"):
            validate_text(config, registry)


@pytest.mark.parametrize("cls_name", sorted(allowlist.ALLOWED))
def test_no_reviewed_argument_turns_a_string_into_code(cls_name, tmp_path, monkeypatch):
    """Build (bypassing validation) and run every allowed transform with each reviewed argument set to a dotted path."""
    monkeypatch.chdir(tmp_path)
    module = allowlist.ALLOWED[cls_name][0]
    base = _kwargs(cls_name)
    monai_adapter.build(cls_name, module, cls_name, **base)  # the attempts below start from a transform that builds
    attempts = executed = 0
    for argument in sorted(allowlist.reviewed_arguments(cls_name)):
        for value in (f"{CANARY}.fire", f"{CANARY}:fire", [f"{CANARY}.fire"], {"H": f"{CANARY}.fire"}):
            attempts += 1
            try:
                transform = monai_adapter.build(cls_name, module, cls_name, **{**base, argument: value})
                transform(_case())
            except Exception:  # noqa: BLE001, S110 - refusing or failing is fine; running the canary is not
                pass
            executed += CANARY in sys.modules
    assert attempts and executed == 0
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


@pytest.mark.parametrize("cls_name", sorted(allowlist.ALLOWED))
def test_every_allowed_transform_builds_through_the_stage_path(cls_name):
    """``build_stage`` (the runner's path) works for each allowed transform, `name` arguments included."""
    spec = monai_adapter.spec_for(f"monai.{cls_name}")
    params = spec.params.model_validate(_kwargs(cls_name))
    transform = build_stage(spec, params, StageContext(device="cpu"))
    assert type(transform) is ALLOWED_OBJECTS[cls_name]


def test_transforms_with_a_name_argument_run(registry):
    """`name` once collided with build()'s own parameter: `build() got multiple values for argument 'name'`."""
    with_name = [c for c in allowlist.ALLOWED if "name" in allowlist.reviewed_arguments(c)]
    assert with_name == ["ConcatItemsd"]
    for cls_name in with_name:
        spec = monai_adapter.spec_for(f"monai.{cls_name}")
        stage = build_stage(spec, spec.params.model_validate(_kwargs(cls_name)), StageContext(device="cpu"))
        out = stage(_case())
        assert out["both"].shape[0] == 2


def test_build_checks_the_real_class_object(monkeypatch):
    """If an exported name points at another class at run time, building refuses it."""
    monkeypatch.setattr(T, "ScaleIntensityRangeD", T.LoadImaged)
    with pytest.raises(ValueError, match="not the reviewed MONAI class"):
        monai_adapter.build("ScaleIntensityRangeD", "intensity.dictionary", "ScaleIntensityRanged", keys=["image"], a_min=0.0, a_max=1.0)
    monkeypatch.setattr(T, "ScaleIntensityRangeD", T.ScaleIntensityRanged)
    with pytest.raises(ValueError, match="not the reviewed MONAI class"):  # a refused class named as if allowed
        monai_adapter.build("LoadImaged", "io.dictionary", "LoadImaged", keys=["image"])
    with pytest.raises(ValueError, match="cannot be set from a config"):  # an argument the model would have refused
        monai_adapter.build(
            "ScaleIntensityRanged", "intensity.dictionary", "ScaleIntensityRanged", keys=["image"], a_min=0.0, a_max=1.0, lazy=True
        )


def test_dtype_names_become_dtype_objects():
    scale = monai_adapter.build(
        "ScaleIntensityRanged", "intensity.dictionary", "ScaleIntensityRanged", keys=["image"], a_min=0.0, a_max=100.0, dtype="float64"
    )
    assert scale(_case())["image"].dtype == torch.float64
    sobel = monai_adapter.build("SobelGradientsd", "post.dictionary", "SobelGradientsd", keys=["image"], dtype="float64")
    assert sobel.transform.kernel_diff.dtype == torch.float64  # annotated torch.dtype only: a torch dtype, not numpy's


def test_the_canary_detects_a_string_resolved_to_code():
    """The check above can fail: MONAI's own LoadImaged imports and calls the canary from a `reader` string."""
    assert CANARY not in sys.modules
    try:
        T.LoadImaged(keys=["image"], reader=f"{CANARY}.fire")
        assert CANARY in sys.modules and sys.modules[CANARY].FIRED
    finally:
        sys.modules.pop(CANARY, None)

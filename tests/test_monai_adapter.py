"""MONAI dictionary transforms as stages, validated from MONAI's source without importing it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO, write_nifti
from voxpipe.config import validate_text
from voxpipe.errors import ConfigError
from voxpipe.monai_adapter import signature_of

CONFIG = """\
version: 1
name: m
stages:
  - use: load.auto
  - use: monai.ScaleIntensityRanged
    with: {args}
  - use: write.nifti
"""


def validate(registry, args: str):
    return validate_text(CONFIG.format(args=args), registry, source="m.yaml")


def test_signature_read_from_source():
    sig = signature_of("ScaleIntensityRanged")
    names = [a.name for a in sig.arguments]
    assert names[:5] == ["keys", "a_min", "a_max", "b_min", "b_max"]
    assert sig.arguments[0].default is None and sig.arguments[5].default == "False"
    assert signature_of("ScaleIntensityRangeD").arguments == sig.arguments, "aliases resolve to the class"
    assert signature_of("ScaleIntensityRange") is None, "array transforms are not dictionary transforms"


def test_validation_does_not_import_monai():
    code = (
        "import sys\nfrom voxpipe.registry import Registry\nfrom voxpipe.config import validate_text\n"
        f"validate_text({CONFIG.format(args='{keys: [image], a_min: 0, a_max: 100}')!r}, Registry.load())\n"
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args, expected",
    [
        ("{a_min: 0, a_max: 1}", "field `keys` is required"),
        ("{keys: [image], a_min: 0, a_max: 1, cilp: true}", "unknown field `cilp`; did you mean `clip`?"),
        ("{keys: [image], a_min: 0, a_max: 1, clip: maybe}", "field `clip`"),
        ("{keys: [image], a_min: low, a_max: 1}", "field `a_min`"),
    ],
)
def test_arguments_checked_against_signature(registry, args, expected):
    with pytest.raises(ConfigError) as info:
        validate(registry, args)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_unknown_and_refused_transforms(registry):
    with pytest.raises(ConfigError, match=r"did you mean `monai\.ScaleIntensityRanged`"):
        validate_text(CONFIG.replace("ScaleIntensityRanged", "ScaleIntensityRange").format(args="{}"), registry)
    with pytest.raises(ConfigError, match="not allowed: it runs an arbitrary callable"):
        validate_text(CONFIG.replace("ScaleIntensityRanged", "Lambdad").format(args="{keys: [image], func: abs}"), registry)
    with pytest.raises(ConfigError, match="writes files outside VoxPipe.s output folder"):
        validate_text(CONFIG.replace("ScaleIntensityRanged", "SaveImaged").format(args="{keys: [image]}"), registry)


def test_keys_feed_the_flow_check(registry):
    with pytest.raises(ConfigError, match="reads `label`, which no earlier stage writes"):
        validate(registry, "{keys: [label], a_min: 0, a_max: 1}")


def test_runs_in_a_pipeline_like_monai_itself(cli, tmp_path):
    from monai.transforms import ScaleIntensityRange

    volume = np.random.default_rng(0).normal(50, 20, (10, 12, 8)).astype(np.float32)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    write_nifti(tmp_path / "in" / "v.nii.gz", volume, affine)
    config = tmp_path / "m.yaml"
    config.write_text(CONFIG.format(args="{keys: [image], a_min: 0, a_max: 100, b_min: 0, b_max: 1, clip: true}"))
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    import nibabel as nib

    [out] = list((tmp_path / "out").glob("case-*/image.nii.gz"))
    expected = ScaleIntensityRange(0, 100, 0, 1, clip=True)(torch.from_numpy(volume)).numpy()
    written = nib.load(out)
    np.testing.assert_allclose(written.get_fdata(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(written.affine, affine)


ITEM_TRANSFORMS = """version: 1
name: items
stages:
  - use: load.nifti
  - use: monai.CopyItemsd
    with: {keys: [image], names: [original]}
  - use: monai.ScaleIntensityd
    with: {keys: [original]}
  - use: monai.ConcatItemsd
    with: {keys: [image, original], name: both}
  - use: monai.DeleteItemsd
    with: {keys: [original, both]}
  - use: write.nifti
"""


def test_copied_concatenated_and_deleted_keys_are_declared(cli, tmp_path):
    """CopyItemsd writes its `names`, ConcatItemsd its `name`, DeleteItemsd nothing: later stages may read them, the contract holds."""
    write_nifti(tmp_path / "in" / "v.nii.gz", np.random.default_rng(0).normal(50, 20, (8, 9, 7)).astype(np.float32))
    config = tmp_path / "items.yaml"
    config.write_text(ITEM_TRANSFORMS)
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out", "--workers", "0")
    assert result.exit_code == 0, result.stderr
    config.write_text(ITEM_TRANSFORMS.replace("names: [original]", "names: [copy]"))
    refused = cli("validate", config)
    assert refused.exit_code == 2 and "reads `original`, which no earlier stage writes" in refused.error_lines[0]


FAKE_MONAI = {
    "transforms/__init__.py": """
from .intensity.dictionary import ScaleIntensityRanged, ScaleIntensityRangeD, Sneaky, Chain, Shadowed, InTry, Rebound
from .evil.dictionary import ScaleIntensityRanged as EvilScale
from .io.dictionary import LoadImaged as ScaleIntensityd
Rebound = object
""",
    "transforms/intensity/__init__.py": "",
    "transforms/intensity/dictionary.py": """
from monai.transforms.io.dictionary import LoadImaged as Sneaky
from os import system as Outside
class ScaleIntensityRanged:
    def __init__(self, keys, a_min: float, a_max: float): ...
ScaleIntensityRangeD = ScaleIntensityRangeDict = ScaleIntensityRanged
A = Sneaky
B = A
Chain = B
class Shadowed:
    def __init__(self, keys): ...
Shadowed = Sneaky
Rebound = ScaleIntensityRanged
try:
    InTry = ScaleIntensityRanged
except ImportError:
    InTry = Outside
""",
    "transforms/io/__init__.py": "",
    "transforms/io/dictionary.py": "class LoadImaged:\n    def __init__(self, keys, reader=None, *args, **kwargs): ...\n",
    "transforms/evil/__init__.py": "",
    "transforms/evil/dictionary.py": "class ScaleIntensityRanged:\n    def __init__(self, keys, reader=None): ...\n",
}


@pytest.fixture
def fake_monai(tmp_path, monkeypatch):
    """A MONAI source tree with every aliasing trick, read by the adapter instead of the real one."""
    from voxpipe import monai_adapter

    for name, text in FAKE_MONAI.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    caches = [
        monai_adapter._module_tree,
        monai_adapter._exports,
        monai_adapter.resolve,
        monai_adapter._bound_in_blocks,
        monai_adapter.spec_for,
    ]
    for cache in caches:
        cache.cache_clear()
    monkeypatch.setattr(monai_adapter, "_monai_root", lambda: tmp_path)
    yield monai_adapter
    monkeypatch.undo()
    for cache in caches:
        cache.cache_clear()


def test_aliases_resolve_to_the_defining_class(fake_monai):
    def verdict(name):
        resolved = fake_monai.resolve(name)
        return None if resolved is None else (resolved.module, resolved.cls, resolved.allowed)

    assert verdict("ScaleIntensityRanged") == ("intensity.dictionary", "ScaleIntensityRanged", True)
    assert verdict("ScaleIntensityRangeD") == ("intensity.dictionary", "ScaleIntensityRanged", True)
    assert verdict("Sneaky") == ("io.dictionary", "LoadImaged", False)  # re-exported under a new name
    assert verdict("Chain") == ("io.dictionary", "LoadImaged", False)  # through assignments
    assert verdict("Shadowed") == ("io.dictionary", "LoadImaged", False)  # the last binding wins
    assert verdict("ScaleIntensityd") == ("io.dictionary", "LoadImaged", False)  # renamed in __init__
    assert verdict("EvilScale") == ("evil.dictionary", "ScaleIntensityRanged", False)  # same class name, other module
    assert verdict("InTry") is None  # bound at run time
    assert verdict("Rebound") is None  # rebound in __init__
    assert fake_monai.spec_for("monai.ScaleIntensityRangeD") is not None
    for name in ("Sneaky", "Chain", "Shadowed", "ScaleIntensityd", "EvilScale", "InTry", "Rebound"):
        assert fake_monai.spec_for(f"monai.{name}") is None, name
    assert "it is MONAI's `LoadImaged`" in fake_monai.why_not("monai.ScaleIntensityd")

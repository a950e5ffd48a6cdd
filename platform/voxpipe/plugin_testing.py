"""Run one stage on a tiny synthetic case, through the case contract: the plugin author's test helper.

``voxpipe.plugin.run_stage`` (tests) and ``voxpipe plugins check`` (every stage of a plugin)
both use it, so a stage that passes its author's tests has been through what ``voxpipe run``
checks after every stage.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from voxpipe import contract
from voxpipe.cases import CaseSource
from voxpipe.stage import StageContext, StageKind, StageSpec, build_stage

SHAPE = (64, 64, 12)  # the smallest a 2D VGG's five poolings accept, still a few milliseconds per stage
SPACING = (1.5, 1.5, 3.0)
LABEL_NAMES = {0: "background", 1: "object"}
SYNTHETIC_KEYS = ("image", "label")
"""The array keys a synthetic case has; a stage reading any other key needs a case from its test."""


class ContractViolation(AssertionError):
    """A stage broke the case contract (an ``AssertionError``, so test runners show the line)."""


def synthetic_arrays(shape: tuple[int, int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipsoid (about 900) on a dark background (about 100) with mild noise, and its mask."""
    grid = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    inside = sum(axis**2 / 0.5**2 for axis in grid) <= 1.0
    noise = np.random.default_rng(0).normal(0.0, 20.0, shape)
    image = (np.where(inside, 900.0, 100.0) + noise).astype(np.float32)
    return image, inside.astype(np.uint8)


def synthetic_case(output_dir: Path, reads: tuple[str, ...] | list[str] = ("image",), loaded: bool = True) -> dict:
    """A case as the runner hands it to a stage: ``image`` (1x64x64x12 float32, 1.5x1.5x3 mm), and
    ``label`` (uint8, 0 background / 1 object, with its label table) when ``reads`` names it.

    ``loaded=False`` gives what a loader receives: the runner's keys and a synthetic NIfTI source.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    source = CaseSource(identity="synthetic", paths=(output_dir / "synthetic.nii.gz",), kind="nifti")
    case: dict[str, Any] = {"case_id": "case-000000000000", "source": source, "output_dir": output_dir, "history": []}
    if not loaded:
        return case
    from voxpipe.metatensors import make_metatensor

    image, mask = synthetic_arrays()
    affine = np.diag([*SPACING, 1.0])
    case["image"] = make_metatensor(image[None], affine, {"filename_or_obj": "synthetic"})
    if "label" in reads:
        case["label"] = make_metatensor(mask[None], affine, {"label_names": dict(LABEL_NAMES)})
    return case


def write_synthetic_inputs(folder: Path) -> Path:
    """One NIfTI volume and one PNG in ``folder``: input for a loader's ``discover``."""
    import nibabel as nib
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    image, _ = synthetic_arrays()
    nib.save(nib.Nifti1Image(image, np.diag([*SPACING, 1.0])), str(folder / "volume.nii.gz"))
    Image.fromarray(np.clip(image[:, :, SHAPE[2] // 2] / 4, 0, 255).astype(np.uint8)).save(folder / "slice.png")
    return folder


def loader_case(spec: StageSpec, params: Any, output_dir: Path) -> dict | None:
    """What a loader receives for the first synthetic input its ``discover`` finds (``None``: none)."""
    if spec.discover is None:
        return None
    from voxpipe.stage import import_object

    discover = import_object(spec.discover) if isinstance(spec.discover, str) else spec.discover
    found = discover(write_synthetic_inputs(Path(output_dir) / "input"), params)
    if not found.cases:
        return None
    case = synthetic_case(Path(output_dir) / "case", loaded=False)
    case["source"] = sorted(found.cases, key=lambda c: c.kind == "image")[0]  # the 3D volume when it reads both
    return case


def check_contract(case: Any, before: Mapping[str, Any], writes: list[str], where: str) -> dict:
    """``case`` if it holds the case contract; else :class:`ContractViolation` naming ``where``."""
    if not isinstance(case, dict):
        raise ContractViolation(f"{where}: returned {type(case).__name__}, expected the case dict")
    broken = contract.violation(case, before, writes)
    if broken:
        raise ContractViolation(f"{where}: {broken}")
    return case


def run_stage(
    stage: str | StageSpec,
    params: Mapping[str, Any] | Any = None,
    case: dict | None = None,
    *,
    output_dir: str | Path | None = None,
    registry: Any = None,
    device: str = "cpu",
) -> dict:
    """Build ``stage`` and run it once, the way ``voxpipe run`` does, contract check included.

    Args:
        stage: a registry id (``"acme.denoise"``, looked up among the installed plugins) or a spec.
        params: the stage's parameters as a config would give them (validated by its model).
        case: the case to run on; default, a synthetic one of the stage's kind: a 64x64x12 image,
            with a label when the stage reads ``label``; for a loader, a synthetic NIfTI/PNG input.
        output_dir: where writers write (default: a new temporary folder).
        registry: a loaded :class:`~voxpipe.registry.Registry` (default: load every plugin).

    Returns:
        The case the stage returned. Raises :class:`ContractViolation` (an ``AssertionError``)
        if it breaks the case contract, and whatever the stage raises.
    """
    spec = _spec(stage, registry)
    values = params if hasattr(params, "model_fields") and not isinstance(params, type) else spec.params.model_validate(dict(params or {}))
    out = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="voxpipe-stage-"))
    if case is None:
        if spec.kind == StageKind.LOADER:
            case = loader_case(spec, values, out)
            if case is None:
                raise ValueError(f"{spec.id}: its discover found no case in a synthetic NIfTI or PNG file; pass case=")
        else:
            case = synthetic_case(out, reads=tuple(spec.resolve_keys(spec.reads, values)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = build_stage(spec, values, StageContext(device=device, config_dir=Path.cwd(), stage_id=spec.id))
        before = dict(case)
        result = built(case)
    return check_contract(result, before, spec.resolve_keys(spec.writes, values), spec.id)


def _spec(stage: str | StageSpec, registry: Any) -> StageSpec:
    if isinstance(stage, StageSpec):
        return stage
    if registry is None:
        from voxpipe.registry import Registry

        registry = Registry.load()
    spec = registry.get(stage)
    if spec is None:
        raise LookupError(f"unknown stage `{stage}`; is its plugin installed? (`voxpipe plugins` lists the stages)")
    return spec

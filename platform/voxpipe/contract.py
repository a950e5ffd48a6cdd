"""The case contract, checked after every stage so that a broken stage is named, not a later one.

What a stage hands on must hold (docs/writing-plugins.md, "The case contract"):

- every key the stage declares in ``StageSpec.writes`` is in the case;
- ``image``, ``label`` and any array the stage wrote with 3 or more axes are MONAI
  ``MetaTensor``s with a 4x4 affine, channel-first (3 axes for 2D, 4 for 3D);
- a label (the ``label`` key, or any value carrying ``meta["label_names"]``) has an integer or
  bool dtype and the image's spatial shape, and every non-zero value in it has a name when
  it carries a label table.

Only what the stage changed is checked (values that are not the same objects as before the
stage, plus its declared outputs), and every check reads shapes, dtypes and metadata except
the label-table one, a single min/max pass. So the contract costs a fraction of a percent of
a case (``benchmarks/contract_overhead.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

LABEL_KEY = "label"
IMAGE_KEY = "image"
_ALWAYS_IMAGES = (IMAGE_KEY, LABEL_KEY)


def violation(case: dict, before: Mapping[str, Any], declared: Iterable[str]) -> str | None:
    """The first way ``case`` (what a stage returned) breaks the contract, or ``None``.

    Args:
        case: the dict the stage returned.
        before: a shallow copy of the case the stage was given (to see what it changed).
        declared: the keys the stage declares it writes, ``{param}`` templates resolved.
    """
    declared = list(declared)
    for key in declared:
        if key not in case:
            return f"declares that it writes `{key}` but the case has no `{key}` (write it, or leave it out of StageSpec.writes)"
    changed = [key for key, value in case.items() if before.get(key, _MISSING) is not value]
    checked = dict.fromkeys([*declared, *changed])
    for key in checked:
        problem = _check_value(key, case[key], case)
        if problem:
            return problem
    if IMAGE_KEY in checked and LABEL_KEY in case and LABEL_KEY not in checked:
        return _check_grid(LABEL_KEY, case[LABEL_KEY], case, blame_image=True)
    return None


_MISSING = object()


def _check_value(key: str, value: Any, case: dict) -> str | None:
    if not (key in _ALWAYS_IMAGES or _is_array(value) and getattr(value, "ndim", 0) >= 3):
        return None
    problem = _check_image(key, value)
    if problem or not _is_label(key, value):
        return problem
    return _check_label(key, value, case)


def _is_array(value: Any) -> bool:
    """A NumPy array or a torch tensor, without importing either when nothing has."""
    numpy, torch = sys.modules.get("numpy"), sys.modules.get("torch")
    return bool((numpy is not None and isinstance(value, numpy.ndarray)) or (torch is not None and isinstance(value, torch.Tensor)))


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__.split(".")[0]
    return f"{module}.{kind.__name__}" if module not in ("builtins",) else kind.__name__


def _check_image(key: str, value: Any) -> str | None:
    helper = "as_label" if key == LABEL_KEY else "as_image"
    metatensor = _metatensor_type()
    if metatensor is None or not isinstance(value, metatensor):
        return f"`{key}` is a {_type_name(value)}, expected a MetaTensor with an affine (wrap it with voxpipe.plugin.{helper})"
    affine = value.affine
    if tuple(affine.shape) != (4, 4):
        return (
            f"`{key}` has a {'x'.join(map(str, affine.shape))} affine, expected 4x4 (keep the input's affine with voxpipe.plugin.{helper})"
        )
    if value.ndim not in (3, 4):
        return (
            f"`{key}` has shape {tuple(value.shape)}, expected channel-first C,X,Y (2D) or C,X,Y,Z (3D) (add the channel axis with x[None])"
        )
    return None


def _metatensor_type() -> type | None:
    if "monai" not in sys.modules and "torch" not in sys.modules:
        return None
    from monai.data import MetaTensor

    return MetaTensor


def _is_label(key: str, value: Any) -> bool:
    return key == LABEL_KEY or "label_names" in (getattr(value, "meta", None) or {})


def _check_label(key: str, value: Any, case: dict) -> str | None:
    import torch

    if value.dtype.is_floating_point or value.dtype.is_complex:
        return (
            f"`{key}` is a label map with dtype {str(value.dtype).removeprefix('torch.')}, expected an integer or bool "
            "dtype (round or threshold it; voxpipe.plugin.as_label casts it)"
        )
    problem = _check_grid(key, value, case)
    if problem:
        return problem
    names = value.meta.get("label_names")
    if names is None:
        return None
    if not isinstance(names, Mapping):
        return f"`{key}` has meta['label_names'] of type {type(names).__name__}, expected a mapping value -> name"
    try:
        named = {int(k) for k in names}
    except (TypeError, ValueError):
        return f"`{key}` has meta['label_names'] keys that are not integers; map each label value to its name"
    data = value.as_tensor() if hasattr(value, "as_tensor") else value
    if data.numel() == 0:
        return None
    if data.dtype == torch.bool:
        if 1 in named:
            return None  # 0 and 1 are all a bool label can hold: no pass over the voxels
        data = data.view(torch.uint8)
    low, high = _value_range(data)
    if all(v in named for v in range(low, high + 1) if v != 0):
        return None  # the usual case: one pass, no sort
    missing = sorted(int(v) for v in torch.unique(data).tolist() if v != 0 and int(v) not in named)
    if not missing:
        return None
    shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
    return (
        f"`{key}` has values {shown} with no name in meta['label_names'] (named: "
        f"{', '.join(map(str, sorted(named))) or 'none'}); name every value or pass names= to voxpipe.plugin.as_label"
    )


def _value_range(data: Any) -> tuple[int, int]:
    """Smallest and largest value. On the CPU through NumPy: single-threaded, so on a busy machine
    it does not wait for torch's worker threads (a 1 M-voxel pass took 10-80 ms that way, 0.2 ms here)."""
    if data.device.type == "cpu":
        array = data.detach().numpy()
        return int(array.min()), int(array.max())
    import torch

    return tuple(int(v) for v in torch.aminmax(data))


def _check_grid(key: str, value: Any, case: dict, blame_image: bool = False) -> str | None:
    """A label lies on the image's grid: same spatial shape."""
    image = case.get(IMAGE_KEY)
    if image is None or not hasattr(image, "shape") or not hasattr(value, "shape"):
        return None
    spatial, expected = tuple(value.shape[1:]), tuple(image.shape[1:])
    if spatial == expected:
        return None
    if tuple(value.shape) == expected:
        return (
            f"`{key}` has shape {tuple(value.shape)}, the image's spatial shape: a label is channel-first too "
            "(add the channel axis with x[None], or use voxpipe.plugin.as_label)"
        )
    if blame_image:
        return (
            f"`image` now has spatial shape {expected} but `{key}` keeps {spatial}; "
            f"a label must lie on the image's grid (resample `{key}` with the image)"
        )
    return f"`{key}` has spatial shape {spatial}, the image {expected}; a label must lie on the image's grid"

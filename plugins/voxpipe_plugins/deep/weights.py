"""Networks from the allowlist, and weights files in and out (torch + MONAI: build time only)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch

from voxpipe.atomic import atomic_path
from voxpipe.digest import file_sha256
from voxpipe_plugins.deep.networks import NETWORKS, check_network

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


class WeightsError(ValueError):
    """A weights file that is missing, unreadable or does not fit the network."""


def network_class(name: str):
    from monai.networks import nets

    if name not in NETWORKS:
        raise ValueError(check_network(name, {})[0])
    cls = getattr(nets, name, None)
    if cls is None:
        raise ValueError(f"network `{name}` is not available in this MONAI version")
    return cls


def bound_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The network's arguments with its defaults filled in, checked against the real signature."""
    cls = network_class(name)
    problems = check_network(name, args)
    if problems:
        raise ValueError("; ".join(problems))
    try:
        bound = inspect.signature(cls).bind(**_tuples(args))
    except TypeError as exc:
        raise ValueError(f"{name}({', '.join(f'{k}=...' for k in args)}): {exc}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def make_network(name: str, args: dict[str, Any]) -> torch.nn.Module:
    """Build ``monai.networks.nets.<name>(**args)``; one clear line when the arguments do not fit."""
    arguments = bound_args(name, args)
    try:
        if name == "DiNTS":
            arguments = _dints_arguments(arguments)
        return network_class(name)(**arguments)
    except Exception as exc:  # noqa: BLE001 - MONAI raises many types for inconsistent arguments
        text = " ".join(str(exc).split())
        raise ValueError(f"cannot build {name} with {args}: {type(exc).__name__}: {text}") from None


def _dints_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """DiNTS's topology object and node code, built from the config's literal lists."""
    import contextlib
    import io

    import numpy as np
    from monai.networks.nets import TopologyInstance

    space = _tuples(dict(arguments["dints_space"]))
    code_a, code_c = arguments["dints_space"]["arch_code"]
    space["arch_code"] = [np.asarray(code_a), np.asarray(code_c)]
    with contextlib.redirect_stdout(io.StringIO()):  # TopologyInstance prints a recommendation on stdout
        arguments["dints_space"] = TopologyInstance(**space)
    if arguments.get("node_a") is not None:
        arguments["node_a"] = torch.as_tensor(np.asarray(arguments["node_a"]))
    return arguments


def _tuples(args: dict[str, Any]) -> dict[str, Any]:
    """YAML lists -> tuples where MONAI expects `(name, {options})` pairs or sequences."""
    out = {}
    for key, value in args.items():
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        out[key] = value
    return out


def sidecar_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


MAX_SIDECAR_BYTES = 1 << 20  # ours are ~2 KB; a sidecar is parsed whole, so its size is capped first


def read_sidecar(weights: Path) -> dict[str, Any]:
    """The JSON object beside ``weights`` (``{}`` when there is none), unvalidated: see :mod:`.sidecar`.

    A sidecar that exists but is too large, not JSON, nested absurdly deep or not an object
    is refused with one line: it decides what network gets built, so it is never ignored.
    """
    path = sidecar_path(weights)
    if not path.is_file():
        return {}
    what = f"checkpoint sidecar {path.name}"
    try:
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise WeightsError(
                f"{what}: refused: {size} bytes, above the {MAX_SIDECAR_BYTES} allowed for a sidecar; "
                "use the .json that `voxpipe train` wrote beside the weights"
            )
        text = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{what}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WeightsError(
            f"{what}: refused: not valid JSON ({type(exc).__name__}); use the .json that `voxpipe train` wrote beside the weights"
        ) from None
    if not isinstance(data, dict):
        raise WeightsError(
            f"{what}: refused: a JSON {type(data).__name__}, not an object; use the .json that `voxpipe train` wrote beside the weights"
        )
    return data


def check_sha256(path: Path, expected: str | None) -> None:
    """Refuse a weights file whose SHA-256 differs from ``expected`` -- before a byte of it is parsed."""
    if not expected:
        return
    actual = file_sha256(path)
    if actual.lower() != expected.strip().lower():
        raise WeightsError(
            f"weights file {path.name}: SHA-256 is {actual[:16]}..., the config expects {expected.strip()[:16]}...; "
            "refused before reading (replace the file or fix `weights_sha256`)"
        )


def read_state_dict(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch file saved with ``torch.save`` (loaded ``weights_only``).

    A torch file may hold the state dict itself, or a dict with it under ``state_dict`` or
    ``model`` (the usual checkpoint layouts). A ``module.`` prefix (DataParallel) is removed.
    Torch files are only ever unpickled with ``weights_only=True``: a file that needs more
    (arbitrary objects, code) is refused, never retried with full unpickling. With
    ``sha256`` the file's digest is checked first and a mismatch refused before parsing.
    """
    if not path.is_file():
        raise WeightsError(
            f"weights file not found: {path}; train one with `voxpipe train` or fix `weights` (paths are relative to the config file)"
        )
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(f"weights file {path.name}: unsupported type `{suffix}`; use {', '.join(WEIGHT_SUFFIXES)}")
    check_sha256(path, sha256)
    if suffix == ".safetensors":
        state: Any = _read_safetensors(path)
    else:
        state = load_torch_file(path)
    if isinstance(state, dict) and not _all_tensors(state):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not _all_tensors(state):
        raise WeightsError(
            f"weights file {path.name} holds no state dict (expected tensors by name, or a dict with `state_dict` or `model`)"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


REFUSED_OBJECTS = (
    "refused: the checkpoint holds Python objects beyond tensors (a pickle that could run code); "
    "VoxPipe loads only tensors: re-save it as safetensors or a plain state_dict"
)
REFUSED_PICKLE = (
    "refused: not a tensors-only PyTorch checkpoint (its pickle is damaged or uses instructions beyond "
    "tensors); VoxPipe loads only tensors: re-save it as safetensors or a plain state_dict"
)


def load_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with refusals in VoxPipe's words.

    PyTorch's own refusal ends in advice to retry with ``weights_only=False``, which would
    run whatever the pickle holds; VoxPipe never does that and never repeats the advice.
    Used for weights and for training state (optimizer, history) alike.
    """
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's warnings about the file repeat the same advice
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = REFUSED_OBJECTS if "GLOBAL" in str(exc) else REFUSED_PICKLE
        raise WeightsError(f"{path.name}: {refused}") from None
    except FileNotFoundError:
        raise WeightsError(f"{path.name}: not found") from None
    except Exception as exc:  # noqa: BLE001 - corrupt files raise RuntimeError, EOFError, ValueError, ...
        raise WeightsError(
            f"{path.name}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}: damaged, truncated "
            "or another format); re-save it as safetensors or with torch.save"
        ) from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...
        raise WeightsError(
            f"{path.name}: cannot be read as safetensors ({type(exc).__name__}: damaged, truncated or "
            "another format under a .safetensors name)"
        ) from None


def _all_tensors(state: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


def mismatches(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], required=None) -> list[str]:
    """What differs between a file's tensors and a network's, as short phrases (empty: they fit).

    ``required`` (default: every key of ``expected``) are the keys the file must hold.
    """
    required = list(expected) if required is None else list(required)
    missing = [k for k in required if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_listed(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_listed(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches, file vs network ({_listed(shapes, 2)})")
    return parts


def fit_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str, source: str) -> None:
    """Load ``state`` into ``model`` strictly; a mismatch is one line summarising what differs."""
    parts = mismatches(state, model.state_dict())
    if parts:
        raise WeightsError(f"weights file {source} does not fit {what}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def describe(name: str, args: dict[str, Any]) -> str:
    return f"{name}({', '.join(f'{k}={v}' for k, v in args.items())})"


def save_checkpoint(model: torch.nn.Module, path: Path, info: dict[str, Any]) -> None:
    """Weights as safetensors (with the network in its metadata) plus a JSON sidecar, both atomic."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "network": str(info.get("network", "")), "args": json.dumps(info.get("args", {}))}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    with atomic_path(sidecar_path(path)) as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")


__all__ = [
    "NETWORKS",
    "WeightsError",
    "bound_args",
    "check_sha256",
    "describe",
    "file_sha256",
    "fit_weights",
    "load_torch_file",
    "make_network",
    "mismatches",
    "read_sidecar",
    "read_state_dict",
    "save_checkpoint",
    "sidecar_path",
]

"""`voxpipe validate`'s look at a `segment.deep` weights file, without torch (validation never imports it).

A missing file, a SHA-256 other than the config's ``weights_sha256`` (an imported bundle pins
it), or a torch checkpoint whose pickle names anything beyond tensors (``os.system``, a class
to build) is reported before a case runs. The pickle is read by :class:`_TensorsOnly`, a
``pickle.Unpickler`` whose ``find_class`` hands back inert stand-ins for the few globals a
state dict uses and refuses every other one, so nothing in the file is ever called.
``voxpipe run`` still loads the file with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

MAX_PICKLE_BYTES = 64 << 20
MAX_HEADER_BYTES = 100 << 20


class _Stub:
    """Stands in for a tensor, storage or anything else a state dict pickle builds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _rebuild(*args: Any) -> _Stub:
    return _Stub(*args)


class Refused(Exception):
    pass


class _TensorsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in (
            "_rebuild_tensor_v2",
            "_rebuild_tensor",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
        ):
            return _rebuild
        if module == "torch" and (name.endswith("Storage") or name in ("Size", "device")):
            return _Stub
        if module == "torch.serialization" and name == "_get_layout":
            return _rebuild
        raise Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _Stub:
        return _Stub(pid)


def _torch_pickle(path: Path) -> bytes | None:
    """The ``data.pkl`` of a torch zip checkpoint; None for the legacy (non-zip) format."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not names:
            raise ValueError("no data.pkl in the archive")
        info = archive.getinfo(names[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise ValueError(f"data.pkl of {info.file_size} bytes")
        return archive.read(names[0])


def _tensor_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(k, str) and isinstance(v, _Stub) for k, v in value.items())


def torch_problem(path: Path) -> str | None:
    """Why a .pt/.pth file is not a tensors-only state dict (None: it is, or it is the legacy format, left to torch)."""
    try:
        data = _torch_pickle(path)
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        return f"cannot be read as a PyTorch checkpoint ({exc})"
    if data is None:
        return None
    try:
        value = _TensorsOnly(io.BytesIO(data)).load()
    except Refused as exc:
        return f"refused: the checkpoint's pickle names `{exc}` (Python objects beyond tensors, a pickle that could run code)"
    except Exception as exc:  # noqa: BLE001 - damaged pickles raise many types
        return f"cannot be read as a PyTorch checkpoint ({type(exc).__name__}: damaged or truncated)"
    if not _tensor_dict(value):
        nested = [value.get(k) for k in ("state_dict", "model")] if isinstance(value, dict) else []
        if not any(_tensor_dict(v) for v in nested):
            return "holds no state dict (expected tensors by name, or a dict with `state_dict` or `model`)"
    return None


def safetensors_problem(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return "cannot be read as safetensors (truncated)"
            (size,) = struct.unpack("<Q", head)
            if size > MAX_HEADER_BYTES:
                return "cannot be read as safetensors (header too large)"
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as exc:
        return f"cannot be read as safetensors ({type(exc).__name__})"
    if not isinstance(header, dict) or not any(k != "__metadata__" for k in header):
        return "holds no tensors"
    return None


def weights_problems(weights: str | None, sha256: str | None, config_dir: Path) -> list[str]:
    """Problems with a weights file named by a config (empty when it looks right)."""
    if not weights:
        return []
    path = Path(weights).expanduser()
    path = path if path.is_absolute() else Path(config_dir) / path
    if not path.is_file():
        if sha256:
            return [
                f"weights file {path.name} not found (paths are relative to the config file); put the bundle's model file there or re-run `voxpipe bundle import`"
            ]
        return []  # a training config names the file `voxpipe train` will write
    if sha256:
        from voxpipe.digest import file_sha256

        actual = file_sha256(path)
        if actual.lower() != sha256.strip().lower():
            return [
                f"weights file {path.name}: SHA-256 is {actual[:16]}..., the config expects {sha256.strip()[:16]}...; "
                "a different file than the one imported (replace it, or re-import the bundle)"
            ]
    suffix = path.suffix.lower()
    problem = safetensors_problem(path) if suffix == ".safetensors" else torch_problem(path) if suffix in (".pt", ".pth") else None
    return [f"weights file {path.name}: {problem}"] if problem else []


def check_params(params: Any, config_dir: Path) -> list[str]:
    """The StageSpec ``check`` of `segment.deep`."""
    return weights_problems(params.weights, params.weights_sha256, config_dir)

"""A MONAI bundle folder read as data: its inference config, metadata and weights file, refs resolved lazily.

Only what inference needs is resolved (the network, preprocessing, inferer, postprocessing
and what they refer to), through :class:`~voxpipe_plugins.bundle.expressions.Expression`.
Every other ``$`` string of the config is parsed too and screened (:func:`screen`), so a
bundle carrying code in a key VoxPipe does not need is still refused, not silently carried.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from voxpipe_plugins.bundle.expressions import REF, BundleError, Component, Expression, dotted

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
MAX_CONFIG_BYTES = 4 << 20
SEPARATORS = re.compile(r"#|::")

# Keys whose `$` statements matter only to MONAI's own runner; `-i` supplies the data and VoxPipe runs the case.
IGNORED_KEYS = ("imports", "initialize", "run", "finalize", "datalist", "test_datalist", "dataset", "dataloader", "evaluator", "handlers")

# Names that may not appear anywhere in a bundle's expressions, used or not: code execution, files, imports, network.
FORBIDDEN_NAMES = frozenset(
    "__import__ exec eval compile open getattr setattr delattr globals locals vars breakpoint input memoryview "
    "os subprocess sys shutil builtins importlib pickle marshal socket urllib requests runpy ctypes pathlib "
    "scripts hub jit system popen".split()
)
_CUDNN = re.compile(r"setattr\(\s*torch\.backends\.cudnn\s*,\s*['\"](benchmark|deterministic)['\"]\s*,\s*(True|False)\s*\)")


def read_document(path: Path) -> dict:
    """A JSON or YAML file as plain data (YAML with VoxPipe's safe loader: no tags, no objects)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BundleError(f"{path.name}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if size > MAX_CONFIG_BYTES:
        raise BundleError(f"{path.name}: {size} bytes, above the {MAX_CONFIG_BYTES} a bundle config may have")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            from voxpipe import safe_yaml

            try:
                data = safe_yaml.load(text).data
            except safe_yaml.YamlProblem as exc:
                raise ValueError(str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{path.name}: not valid {path.suffix[1:].upper()} ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path.name}: expected a mapping at the top, got {type(data).__name__}")
    return data


class Bundle:
    """A bundle folder: ``configs/inference.*``, ``configs/metadata.json``, ``models/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise BundleError(f"bundle folder {self.root} does not exist; give the folder that holds configs/ and models/")
        configs = self.root / "configs"
        found = [configs / n for n in CONFIG_NAMES if (configs / n).is_file()]
        if not found:
            raise BundleError(f"{self.root.name}: no configs/inference.json or configs/inference.yaml; is this a MONAI bundle folder?")
        self.config_path = found[0]
        self.config = read_document(self.config_path)
        meta = configs / "metadata.json"
        self.metadata = read_document(meta) if meta.is_file() else {}
        self.notes: list[str] = []
        self._cache: dict[str, Any] = {"bundle_root": "."}  # the folder given, whatever path the bundle was written with
        self._stack: list[str] = []

    # ------------------------------------------------------------------ raw access

    def raw(self, ref: str) -> Any:
        """The unresolved value at ``a#b#0`` (MONAI's id syntax)."""
        node: Any = self.config
        for part in SEPARATORS.split(ref):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise BundleError(f"reference `@{ref}`: no such key in {self.config_path.name}")
        return node

    def has(self, ref: str) -> bool:
        try:
            self.raw(ref)
        except BundleError:
            return False
        return True

    # ------------------------------------------------------------------ resolution

    def resolve(self, ref: str) -> Any:
        """The value at ``ref`` with references followed and expressions read (cached; cycles refused)."""
        if ref in self._cache:
            return self._cache[ref]
        if ref in self._stack:
            raise BundleError(f"`{ref}`: refused: it refers to itself ({' -> '.join([*self._stack, ref])})")
        if len(self._stack) > 64:
            raise BundleError(f"`{ref}`: refused: references nested more than 64 deep")
        self._stack.append(ref)
        try:
            value = self.value(self.raw(ref), ref)
        finally:
            self._stack.pop()
        self._cache[ref] = value
        return value

    def value(self, node: Any, where: str) -> Any:
        """Resolve one node found at ``where``."""
        if isinstance(node, str):
            return self._string(node, where)
        if isinstance(node, list):
            return [self.value(v, f"{where}#{i}") for i, v in enumerate(node)]
        if isinstance(node, dict):
            if "_target_" in node:
                return self.component(node, where)
            return {k: self.value(v, f"{where}#{k}") for k, v in node.items()}
        return node

    def component(self, node: dict, where: str) -> Component:
        target = node["_target_"]
        check_target(target, where)
        args = {k: v for k, v in node.items() if not k.startswith("_")}
        extras = {k: v for k, v in node.items() if k.startswith("_") and k != "_target_"}
        if extras.get("_disabled_") not in (None, False, "false", "False"):
            raise BundleError(f"`{where}`: `_disabled_` is set; VoxPipe reads only the components a bundle uses")
        for key in extras:
            if key not in ("_disabled_", "_desc_", "_requires_", "_mode_"):
                raise BundleError(f"`{where}#{key}`: refused: MONAI key `{key}` is not read by VoxPipe")
            if key in ("_requires_", "_mode_") and extras[key] not in (None, "default"):
                raise BundleError(f"`{where}#{key}`: refused: `{key}` changes how MONAI calls the component; not read by VoxPipe")
        return Component(target, args, where, extras)

    def arg(self, component: Component, name: str, default: Any = None) -> Any:
        """One argument of a component, resolved."""
        if name not in component.args:
            return default
        return self.value(component.args[name], f"{component.path}#{name}")

    def _string(self, text: str, where: str) -> Any:
        if text.startswith("$"):
            return Expression(where, text, self.resolve).value()
        if text.startswith("@"):
            match = REF.fullmatch(text)
            if not match:
                raise BundleError(f"`{where}`: {text!r}: refused: a reference VoxPipe cannot read")
            return self.resolve(match.group(1))
        if text.startswith("%"):
            return self._macro(text, where)
        return text

    def _macro(self, text: str, where: str) -> Any:
        """``%file#id``: only a config file inside this bundle's configs/ folder."""
        target, _, ref = text[1:].partition("#")
        configs = (self.root / "configs").resolve()
        candidates = [(self.root / target).resolve(), (configs / target).resolve()] if target else [self.config_path.resolve()]
        inside = [p for p in candidates if p.is_relative_to(configs) and p.suffix in (".json", ".yaml", ".yml") and p.is_file()]
        if not inside:
            raise BundleError(f"`{where}`: {text!r}: refused: `%` may refer only to a config file inside the bundle's configs/ folder")
        data: Any = read_document(inside[0])
        for part in SEPARATORS.split(ref) if ref else ():
            if isinstance(data, dict) and part in data:
                data = data[part]
            elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
                data = data[int(part)]
            else:
                raise BundleError(f"`{where}`: {text!r}: no such key in {inside[0].name}")
        return self.value(data, where)


# ---------------------------------------------------------------------- screening every expression


def check_target(target: Any, where: str) -> None:
    """A ``_target_`` must be a plain MONAI name or a dotted ``monai.`` path (never ``monai.bundle``), or ``torch.device``."""
    if not isinstance(target, str):
        raise BundleError(f"`{where}#_target_`: refused: not a name ({type(target).__name__})")
    shown = target if len(target) <= 80 else target[:77] + "..."
    if target.startswith(("$", "@", "%")):
        raise BundleError(f"`{where}#_target_`: {shown!r}: refused: a target must be a MONAI class name, not an expression or reference")
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", target):
        return
    if target == "torch.device":
        return
    parts = target.split(".")
    if (
        re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", target)
        and parts[0] == "monai"
        and "bundle" not in parts
        and not any(p.startswith("_") for p in parts)
    ):
        return
    raise BundleError(
        f"`{where}#_target_`: {shown!r}: refused: only MONAI classes are read (never os, subprocess, builtins or a bundle's scripts)"
    )


def screen(bundle: Bundle) -> list[str]:
    """Screen every ``$``/``_target_``/``%`` in the config, used or not; returns notes about ignored keys.

    Keys VoxPipe does not need are not interpreted, but code-running names (``exec``,
    ``__import__``, ``os``, ``open``, ...), a bundle's own ``scripts`` and ``%`` files outside the
    bundle are refused wherever they appear, so an unsafe bundle never imports quietly.
    """
    ignored: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "_target_" in node:
                check_target(node["_target_"], where)
            for key, value in node.items():
                walk(value, f"{where}#{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}#{i}")
        elif isinstance(node, str) and node.startswith("$"):
            screen_expression(where, node)
        elif isinstance(node, str) and node.startswith("%"):
            target = node[1:].partition("#")[0]
            if target:
                configs = (bundle.root / "configs").resolve()
                if not any(((b / target).resolve()).is_relative_to(configs) for b in (bundle.root, configs)):
                    raise BundleError(
                        f"`{where}`: {node[:80]!r}: refused: `%` may refer only to a config file inside the bundle's configs/ folder"
                    )

    walk(bundle.config, "")
    for key in IGNORED_KEYS:
        if key in bundle.config:
            ignored.append(key)
    return ignored


def screen_expression(where: str, text: str) -> None:
    """Refuse an expression that names anything able to run code, touch files or import, whatever its key."""
    import ast

    shown = text if len(text) <= 120 else text[:117] + "..."
    body = REF.sub(lambda m: "_vxref_", text[1:]).strip()
    if body.startswith(("import ", "from ")):
        module = body.split()[1].split(".")[0]
        if module in ("scripts", "subprocess", "sys", "shutil", "builtins", "importlib", "pickle", "socket", "ctypes", "runpy"):
            raise BundleError(f"`{where}`: {shown!r}: refused: a bundle importing `{module}` (its own code or the system's) is not run")
        return
    if _CUDNN.fullmatch(body):  # cudnn.benchmark on or off: ignored, and only this setattr form is
        return
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError:
        raise BundleError(f"`{where}`: {shown!r}: refused: not a Python expression VoxPipe reads") from None
    os_path_bases = set()  # `os.path.join(...)` is read; any other use of `os` is refused
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (dotted(node) or "").startswith("os.path."):
            base = node
            while isinstance(base, ast.Attribute):
                base = base.value
            os_path_bases.add(id(base))
    for node in ast.walk(tree):
        if id(node) in os_path_bases:
            continue
        name = None
        if isinstance(node, ast.Name):
            name = node.id
        elif isinstance(node, ast.Attribute):
            name = node.attr
            chain = dotted(node) or ""
            if chain.startswith("os.path.") and node.attr in ("path", "join", "dirname", "basename", "abspath", "exists"):
                continue
            if chain.startswith(
                ("monai.bundle", "torch.hub", "torch.jit", "torch.utils.cpp_extension", "torch.ops", "numpy.load", "np.load")
            ):
                raise BundleError(f"`{where}`: {shown!r}: refused: `{chain}` loads or runs code")
        if name is not None and (name in FORBIDDEN_NAMES or name.startswith("__")):
            raise BundleError(f"`{where}`: {shown!r}: refused: `{name}` can run code, read files or import modules")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            chain = dotted(node.func) or ""
            if chain != "torch.load":
                raise BundleError(f"`{where}`: {shown!r}: refused: `{chain or 'load'}` loads data VoxPipe does not read")

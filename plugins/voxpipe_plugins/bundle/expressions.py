"""A bundle's ``$`` expressions read with :mod:`ast` into a few allow-listed forms, never evaluated.

MONAI's ``ConfigParser`` runs every ``$...`` string with ``eval`` and imports every ``_target_``:
a bundle is a program. Here an expression is parsed (``ast.parse(mode="eval")``) and walked by
a tiny interpreter that knows only the forms that matter for inference in the Model Zoo
(docs/bundles.md has the table): literals and containers, ``@ref`` values, arithmetic on
numbers, string joins on paths, ``len``/``int``/``float``/``str``, a conditional on a config
flag, the device idiom, dtype names, ``.to(device)`` on the network, ``torch.load`` of a DiNTS
architecture code, indexing into it, ``torch.from_numpy``/``torch.tensor`` of it, and the
``lambda x: torch.where(x[[k]] > 0, v, ...)`` label lambdas. Any other node is refused with
one line naming the key and the expression. Nothing from the bundle is ever executed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REF = re.compile(r"@([A-Za-z_][\w]*(?:(?:#|::)[\w]+)*)")
MAX_EXPRESSION = 2000


class BundleError(ValueError):
    """A bundle that cannot be imported: one line naming the key, what it holds, and why."""


class MissingWeights(BundleError):
    """The bundle's weights file is not there (``bundle info`` describes such a bundle anyway)."""


@dataclass(frozen=True)
class Device:
    """``torch.device(...)``: ``auto`` for the CUDA-if-available idiom."""

    name: str


@dataclass(frozen=True)
class Dtype:
    name: str


@dataclass(frozen=True)
class ArchCode:
    """``torch.load(path)`` of a DiNTS architecture code: loaded later with ``weights_only`` + a NumPy allow-list."""

    path: str


@dataclass(frozen=True)
class ArchItem:
    code: ArchCode
    key: str


@dataclass(frozen=True)
class LabelRule:
    """``lambda x: torch.where(x[[c]] > t, v, <rest>)``: first matching channel wins, ``default`` otherwise."""

    rules: tuple[tuple[int, float, int], ...]  # (channel, threshold, value)
    default: int


@dataclass
class Component:
    """A ``{"_target_": ...}`` mapping, kept as data: its arguments are resolved only when asked for."""

    target: str
    args: dict[str, Any]
    path: str
    extras: dict[str, Any] = field(default_factory=dict)


DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64", "bfloat16")
_DTYPE_MODULES = ("numpy", "np", "torch")
_NUMBER_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
}
_LIMIT_VALUE = 10**9
# MONAI's key names (monai.utils.CommonKeys), read as the strings they stand for.
COMMON_KEYS = {"IMAGE": "image", "LABEL": "label", "PRED": "pred", "LOSS": "loss", "METADATA": "metadata"}
_KEY_ENUMS = ("monai.utils.CommonKeys", "monai.utils.enums.CommonKeys", "CommonKeys")


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class Expression:
    """One ``$`` expression of the bundle: parsed once, interpreted against ``lookup`` for ``@refs``."""

    def __init__(self, key: str, text: str, lookup: Callable[[str], Any]) -> None:
        self.key, self.text, self.lookup = key, text, lookup
        self.refs: dict[str, str] = {}
        if len(text) > MAX_EXPRESSION:
            self.refuse(f"{len(text)} characters, more than the {MAX_EXPRESSION} an expression may have")

        def replace(match: re.Match) -> str:
            name = f"_vxref{len(self.refs)}_"
            self.refs[name] = match.group(1)
            return name

        source = REF.sub(replace, text[1:])
        try:
            self.tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError:
            self.refuse("not a Python expression VoxPipe reads (statements and imports are not needed for inference)")

    def refuse(self, why: str) -> None:
        shown = self.text if len(self.text) <= 120 else self.text[:117] + "..."
        raise BundleError(f"`{self.key}`: {shown!r}: refused: {why}")

    def value(self) -> Any:
        return self._eval(self.tree.body)

    # ------------------------------------------------------------------ interpreter

    def _eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (int, float, str, bool)) or node.value is None:
                return node.value
            self.refuse(f"constant of type {type(node.value).__name__}")
        if isinstance(node, ast.Name):
            if node.id in self.refs:
                return self.lookup(self.refs[node.id])
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            self.refuse(f"name `{node.id}` is not one VoxPipe reads")
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self._eval(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                self.refuse("`**` in a mapping")
            return {self._literal_key(k): self._eval(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self._number(self._eval(node.operand))
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not self._flag(self._eval(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _NUMBER_OPS:
            return self._binop(node)
        if isinstance(node, ast.IfExp):
            return self._eval(node.body) if self._flag(self._eval(node.test)) else self._eval(node.orelse)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            left, right = self._eval(node.left), self._eval(node.comparators[0])
            self._plain(left), self._plain(right)
            return (left == right) if isinstance(node.ops[0], ast.Eq) else (left != right)
        if isinstance(node, ast.Attribute):
            return self._attribute(node)
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Lambda):
            return self._lambda(node)
        self.refuse(f"{type(node).__name__} is not one of the forms VoxPipe reads (docs/bundles.md)")

    def _literal_key(self, node: ast.AST) -> str | int:
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
            return node.value
        self.refuse("mapping keys must be literal strings or integers")

    def _number(self, value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.refuse(f"arithmetic on {type(value).__name__}, not a number")
        return value

    def _flag(self, value: Any) -> bool:
        if not isinstance(value, (bool, int)) and value is not None:
            self.refuse(f"a condition on {type(value).__name__}; only config flags (true/false, numbers) are read")
        return bool(value)

    def _plain(self, value: Any) -> None:
        if not (isinstance(value, (int, float, str, bool)) or value is None):
            self.refuse("a comparison of something other than literal values")

    def _binop(self, node: ast.BinOp) -> Any:
        left, right = self._eval(node.left), self._eval(node.right)
        if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            if len(left) + len(right) > 4096:
                self.refuse("a string longer than 4096 characters")
            return left + right
        a, b = self._number(left), self._number(right)
        if isinstance(node.op, (ast.Div, ast.FloorDiv)) and b == 0:
            self.refuse("division by zero")
        result = _NUMBER_OPS[type(node.op)](a, b)
        if abs(result) > _LIMIT_VALUE:
            self.refuse("a number beyond 1e9")
        return result

    def _attribute(self, node: ast.Attribute) -> Any:
        name = dotted(node)
        if name is not None:
            module, _, attr = name.rpartition(".")
            if module in _DTYPE_MODULES and attr in DTYPES:
                return Dtype(attr)
            if module in _KEY_ENUMS and attr in COMMON_KEYS:
                return COMMON_KEYS[attr]
        self.refuse(f"attribute `{name or node.attr}` is not one VoxPipe reads (only dtype names such as numpy.float32)")

    def _subscript(self, node: ast.Subscript) -> Any:
        base = self._eval(node.value)
        index = self._eval(node.slice)
        if isinstance(base, ArchCode) and isinstance(index, str):
            return ArchItem(base, index)
        if isinstance(base, dict) and isinstance(index, (str, int)) and index in base:
            return base[index]
        if isinstance(base, list) and isinstance(index, int) and not isinstance(index, bool) and -len(base) <= index < len(base):
            return base[index]
        self.refuse("indexing other than a literal list/mapping or a DiNTS architecture code")

    def _call(self, node: ast.Call) -> Any:
        name = dotted(node.func)
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            self.refuse("`*`/`**` arguments")
        if name in ("len", "int", "float", "str", "bool") and len(node.args) == 1 and not node.keywords:
            value = self._eval(node.args[0])
            if name == "len":
                if not isinstance(value, (list, dict, str)):
                    self.refuse("len() of something other than a list, mapping or string")
                return len(value)
            self._plain(value)
            try:
                return {"int": int, "float": float, "str": str, "bool": bool}[name](value)
            except (TypeError, ValueError):
                self.refuse(f"{name}() of {value!r}")
        if name == "torch.device":
            return self._device(node)
        if name == "torch.cuda.is_available" and not node.args and not node.keywords:
            return Device("auto")
        if name in ("torch.from_numpy", "torch.tensor", "torch.as_tensor", "numpy.array", "np.array") and len(node.args) == 1:
            value = self._eval(node.args[0])
            if isinstance(value, (ArchItem, list)):
                return value
            self.refuse(f"{name}() of something other than a DiNTS architecture code")
        if name == "torch.load" and node.args:
            path = self._eval(node.args[0])
            if not isinstance(path, str):
                self.refuse("torch.load() of something other than a path in the bundle")
            return ArchCode(path)
        if isinstance(node.func, ast.Attribute) and node.func.attr == "to" and len(node.args) == 1 and not node.keywords:
            target = self._eval(node.func.value)
            if isinstance(target, Component) and isinstance(self._eval(node.args[0]), (Device, str)):
                return target
        if name == "os.path.join" and node.args and not node.keywords:
            parts = [self._eval(a) for a in node.args]
            if all(isinstance(p, str) for p in parts):
                return "/".join(p.rstrip("/") for p in parts)
        self.refuse(f"a call of `{name or type(node.func).__name__}`, which is not one of the forms VoxPipe reads (docs/bundles.md)")

    def _device(self, node: ast.Call) -> Device:
        if len(node.args) != 1 or node.keywords:
            self.refuse("torch.device() with other than one argument")
        arg = node.args[0]
        if isinstance(arg, ast.IfExp):
            test = self._eval(arg.test)
            if isinstance(test, Device) and test.name == "auto":
                return Device("auto")
        value = self._eval(arg)
        if isinstance(value, Device):
            return value
        if isinstance(value, str) and re.fullmatch(r"cpu|cuda(:\d+)?", value):
            return Device(value)
        self.refuse("a device other than cpu, cuda or the CUDA-if-available idiom")

    def _lambda(self, node: ast.Lambda) -> LabelRule:
        args = node.args
        if len(args.args) != 1 or args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs or args.defaults:
            self.refuse("a lambda other than `lambda x: torch.where(x[[k]] > t, v, ...)`")
        var = args.args[0].arg
        rules: list[tuple[int, float, int]] = []
        body = node.body
        while isinstance(body, ast.Call):
            if dotted(body.func) != "torch.where" or len(body.args) != 3 or body.keywords:
                self.refuse("a lambda calling something other than torch.where (only label lambdas are read)")
            cond, value, rest = body.args
            rules.append((*self._channel_test(cond, var), self._int_literal(value)))
            body = rest
        if not rules:
            self.refuse("a lambda other than `lambda x: torch.where(x[[k]] > t, v, ...)`")
        return LabelRule(tuple(rules), self._int_literal(body))

    def _channel_test(self, node: ast.AST, var: str) -> tuple[int, float]:
        ok = isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Gt)
        if ok:
            sub, threshold = node.left, node.comparators[0]
            ok = (
                isinstance(sub, ast.Subscript)
                and isinstance(sub.value, ast.Name)
                and sub.value.id == var
                and isinstance(sub.slice, ast.List)
                and len(sub.slice.elts) == 1
                and isinstance(threshold, ast.Constant)
                and isinstance(threshold.value, (int, float))
                and not isinstance(threshold.value, bool)
            )
        if not ok:
            self.refuse(f"a label lambda test other than `{var}[[k]] > t`")
        return self._int_literal(sub.slice.elts[0]), float(threshold.value)

    def _int_literal(self, node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool) and 0 <= node.value < 65536:
            return node.value
        self.refuse("label lambda values must be integer literals 0..65535")

"""Reviewed MONAI dictionary transforms as stages: ``use: monai.ScaleIntensityRanged``.

The adapter must validate a config without importing MONAI (``voxpipe validate`` never
loads torch), so it reads MONAI's *source* with :mod:`ast`: ``monai/transforms/__init__.py``
says which module exports a name, and that module's class gives the ``__init__``
signature. From the signature it makes a pydantic model (required arguments required,
unknown arguments rejected, simple annotations type-checked), so MONAI stages are
validated like every other stage.

Configs still hold no code. Safety is decided by the class a name *resolves to*, never by
the name the config used: MONAI exports each transform under several names
(``LoadImaged``, ``LoadImageD``, ``LoadImageDict``), so every alias is followed to its
defining ``class`` statement, and only classes on :mod:`voxpipe.monai_allowlist` are
accepted, with only their reviewed arguments. When the stage is built, the real imported
class object must be the allowed class object, and the arguments are checked once more.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BeforeValidator

from voxpipe import monai_allowlist as allowlist
from voxpipe.stage import StageKind, StageSpec

PREFIX = "monai."
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # ASCII only: no look-alike letters, no dunders
_MAX_HOPS = 8  # alias and re-export chains followed in MONAI's source

_SIMPLE_TYPES: dict[str, Any] = {"bool": bool, "int": int, "float": float, "str": str}


class _MonaiDefault:
    """Marks an argument the config did not set: MONAI's own default then applies."""

    _instance: _MonaiDefault | None = None

    def __new__(cls) -> Self:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<MONAI default>"


MONAI_DEFAULT = _MonaiDefault()

# What a transform writes when it is not (only) its `keys`: the copies, the concatenation, nothing.
# Declared so validation knows later stages may read them and the case contract checks the right keys.
_WRITES = {"CopyItemsd": ("{keys}", "{names}"), "ConcatItemsd": ("{name}",), "DeleteItemsd": ()}


@dataclass(frozen=True)
class Argument:
    name: str
    annotation: str
    default: str | None  # source text of the default; None when required


@dataclass(frozen=True)
class TransformSignature:
    name: str  # the defining class
    module: str  # relative to monai.transforms
    arguments: tuple[Argument, ...]
    accepts_any: bool  # **kwargs in the signature
    doc: str


@dataclass(frozen=True)
class Resolved:
    """An exported name and the class that defines it (what safety is decided by)."""

    export: str
    module: str
    cls: str

    @property
    def allowed(self) -> bool:
        entry = allowlist.ALLOWED.get(self.cls)
        return entry is not None and entry[0] == self.module


# ----------------------------------------------------------------------------- reading MONAI's source


@functools.lru_cache(maxsize=1)
def _monai_root() -> Path | None:
    spec = importlib.util.find_spec("monai")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _module_tree(module: str) -> ast.Module | None:
    """The parsed source of ``monai.transforms.<module>``, or ``None``."""
    root = _monai_root()
    if root is None or not (module == "__init__" or all(_NAME.fullmatch(part) for part in module.split("."))):
        return None
    path = root / "transforms" / Path(*module.split("."))
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    try:
        return ast.parse(file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None


@functools.lru_cache(maxsize=1)
def _exports() -> dict[str, tuple[str, str]]:
    """Name exported by ``monai.transforms`` -> (module relative to ``monai.transforms``, name there)."""
    tree = _module_tree("__init__") if _monai_root() else None
    names: dict[str, tuple[str, str]] = {}
    for node in tree.body if tree else ():
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.ImportFrom, ast.Import, ast.ClassDef, ast.FunctionDef)):
            for bound in _bound_names(node):
                names.pop(bound, None)  # rebound at top level: not a plain re-export, never resolved
    return {name: source for name, source in names.items() if name not in _bound_in_blocks("__init__")}


def _exported_names() -> dict[str, str]:
    """Name exported by ``monai.transforms`` -> dotted module (relative to ``monai.transforms``)."""
    return {name: module for name, (module, _) in _exports().items()}


@functools.cache
def _bound_in_blocks(module: str) -> frozenset[str]:
    """Names a module binds inside top-level ``if``/``try``/``with``/loops: their value depends on run time."""
    tree = _module_tree(module)
    names: set[str] = set()
    for node in tree.body if tree else ():
        if isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Assign, ast.AnnAssign, ast.ImportFrom, ast.Import, ast.ClassDef, ast.FunctionDef)):
                    names.update(_bound_names(sub))
    return frozenset(names)


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.split(".")[0] for a in node.names]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _imported_module(node: ast.ImportFrom, module: str) -> str | None:
    """The module an ``import from`` in ``monai.transforms.<module>`` reads, relative to monai.transforms."""
    if node.level == 0:
        if node.module and node.module.startswith("monai.transforms."):
            return node.module[len("monai.transforms.") :]
        return None  # outside monai.transforms: not followed, so never allowed
    package = [] if module == "__init__" else module.split(".")[:-1]
    if node.level - 1 > len(package):
        return None
    parts = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
    return ".".join(parts) or None


def _resolve_in(module: str, name: str, hops: int = 0) -> tuple[str, str] | None:
    """Follow ``name`` in a MONAI module to its ``class`` statement: (module, class name)."""
    tree = _module_tree(module)
    if tree is None or hops > _MAX_HOPS or name in _bound_in_blocks(module):
        return None  # unknown, or decided at run time: never allowed
    found: tuple[str, str] | None = None
    for node in tree.body:  # the last top-level binding wins, as in Python
        if isinstance(node, ast.ClassDef) and node.name == name:
            found = (module, name)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            found = _resolve_in(module, node.value.id, hops + 1) if isinstance(node.value, ast.Name) else None
        elif isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = _imported_module(node, module)
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            found = _resolve_in(source, original, hops + 1) if source else None
        elif isinstance(node, (ast.FunctionDef, ast.AnnAssign, ast.Import)) and name in _bound_names(node):
            found = None
    return found


@functools.cache
def resolve(name: str) -> Resolved | None:
    """The class an exported dictionary-transform name stands for, read from source; else ``None``."""
    module, original = _exports().get(name, (None, None)) if _NAME.fullmatch(name) else (None, None)
    if module is None or not module.endswith("dictionary"):
        return None
    found = _resolve_in(module, original)
    return Resolved(name, *found) if found else None


def _class_node(resolved: Resolved) -> ast.ClassDef | None:
    tree = _module_tree(resolved.module)
    nodes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == resolved.cls] if tree else []
    return nodes[-1] if nodes else None


def _init_of(module: str, cls: ast.ClassDef, hops: int = 0) -> ast.FunctionDef | None:
    """The ``__init__`` a class runs: its own, or the first base's that defines one (as Python's MRO starts)."""
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is not None or hops > _MAX_HOPS:
        return init
    for base in cls.bases:
        found = _resolve_in(module, base.id) if isinstance(base, ast.Name) else None
        base_node = _class_node(Resolved(base.id, *found)) if found else None
        init = _init_of(found[0], base_node, hops + 1) if base_node else None
        if init is not None:
            return init
    return None


def signature_of(name: str) -> TransformSignature | None:
    """Read a MONAI dictionary transform's constructor signature from source, or ``None``."""
    resolved = resolve(name)
    cls = _class_node(resolved) if resolved else None
    if cls is None:
        return None
    init = _init_of(resolved.module, cls)
    doc = ast.get_docstring(cls) or ""
    if init is None:
        return None  # the signature cannot be read, so the arguments cannot be checked
    args = init.args
    positional = args.posonlyargs + args.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    arguments = [
        Argument(a.arg, ast.unparse(a.annotation) if a.annotation else "", ast.unparse(d) if d is not None else None)
        for a, d in zip(positional, defaults)
        if a.arg != "self"
    ]
    arguments += [
        Argument(a.arg, ast.unparse(a.annotation) if a.annotation else "", ast.unparse(d) if d is not None else None)
        for a, d in zip(args.kwonlyargs, args.kw_defaults)
    ]
    return TransformSignature(resolved.cls, resolved.module, tuple(arguments), args.kwarg is not None, doc)


# ----------------------------------------------------------------------------- names a config may use


def dictionary_transform_names() -> list[str]:
    """Every exported name (aliases included) of an allowed MONAI dictionary transform."""
    return sorted(n for n in _exported_names() if (r := resolve(n)) is not None and r.allowed)


def why_not(stage_id: str) -> str:
    """One line saying why ``monai.<Name>`` is not a stage, and what to use instead."""
    name = stage_id[len(PREFIX) :]
    if not _NAME.fullmatch(name):
        last = name.replace("/", ".").rstrip(".").rsplit(".", 1)[-1]
        resolved = resolve(last) or _loosely(last)
        if resolved is not None and not resolved.allowed:
            return _refusal(stage_id, resolved)
        hint = f"; did you mean `monai.{resolved.export}`?" if resolved else ""
        return (
            f"`{stage_id}` is not a MONAI transform name: write `monai.<Name>` with one class name "
            f"exported by monai.transforms, e.g. `monai.ScaleIntensityRanged`{hint}"
        )
    resolved = resolve(name)
    if resolved is None:
        loose = _loosely(name)
        if loose is not None and not loose.allowed:
            return _refusal(stage_id, loose)
    if resolved is not None:
        return _refusal(stage_id, resolved)
    from voxpipe.suggest import did_you_mean

    hint = did_you_mean(stage_id, [f"{PREFIX}{n}" for n in dictionary_transform_names()])
    return f"unknown MONAI dictionary transform `{stage_id}`{hint or '; use the name of a monai.transforms dictionary transform (ending in d)'}"


def _refusal(stage_id: str, resolved: Resolved) -> str:
    reason = allowlist.REFUSED.get(resolved.cls)
    which = "it" if stage_id == f"{PREFIX}{resolved.cls}" else f"it is MONAI's `{resolved.cls}`, which"
    if reason is None:
        return f"`{stage_id}` is not allowed: {which} {allowlist.NOT_ALLOWED}"
    return f"`{stage_id}` is not allowed: {which} {reason}"


def _loosely(name: str) -> Resolved | None:
    """An exported name equal to ``name`` up to case and Unicode compatibility forms (for messages only)."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    for export in _exported_names():
        if export.casefold() == folded:
            return resolve(export)
    return None


# ----------------------------------------------------------------------------- parameter models


def _reserved_key(value: Any) -> str | None:
    """A VoxPipe case key named anywhere in ``value`` (``output_dir``, ``dicom.files``), or ``None``."""
    if isinstance(value, str):
        head = value.split(".", 1)[0].strip()
        return head if head in allowlist.RESERVED_KEYS else None
    if isinstance(value, (list, tuple)):
        return next((k for k in map(_reserved_key, value) if k), None)
    if isinstance(value, dict):
        return next((k for k in map(_reserved_key, [*value.keys(), *value.values()]) if k), None)
    return None


def _no_reserved_keys(value: Any) -> Any:
    key = _reserved_key(value)
    if key is not None:
        raise ValueError(f"`{key}` is one of VoxPipe's own case keys, which MONAI stages may not name")
    return value


def _refuse(reason: str):
    def check(value: Any) -> Any:
        raise ValueError(f"cannot be set from a config: {reason}")

    return check


def _one_of(names: tuple[str, ...], numbers: bool, lists: bool, mappings: bool):
    """A validator accepting None, one of ``names`` (or a number), and lists/mappings of those, with one message."""
    what = ", ".join(names) + (" or a number" if numbers else "")
    shape = " (or a list" + (" or mapping" if mappings else "") + " of them)" if lists else ""

    def one(value: Any) -> bool:
        number = numbers and isinstance(value, (int, float)) and not isinstance(value, bool)
        return value is None or number or (isinstance(value, str) and value in names)

    def check(value: Any) -> Any:
        ok = (
            one(value)
            or (lists and isinstance(value, list) and all(map(one, value)))
            or (mappings and isinstance(value, dict) and all(isinstance(k, str) and one(v) for k, v in value.items()))
        )
        if not ok:
            raise ValueError(f"expected one of {what}{shape}")
        return value

    return AfterValidator(check)


def _field_type(cls_name: str, arg: Argument) -> Any:
    """The pydantic type for a reviewed argument: narrow where a string could mean more than a value."""
    if (cls_name, arg.name) in allowlist.CHOICES:
        return Annotated[Any, _one_of(allowlist.CHOICES[cls_name, arg.name], numbers=True, lists=True, mappings=True)]
    if arg.name in allowlist.DTYPE_ARGUMENTS:
        return Annotated[Any, _one_of(allowlist.DTYPE_NAMES, numbers=False, lists="Sequence" in arg.annotation, mappings=False)]
    parts = [p.strip() for p in arg.annotation.split("|")]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    if len(parts) == 1 and parts[0] in _SIMPLE_TYPES:
        base = _SIMPLE_TYPES[parts[0]]
        return base | None if optional else base
    return Any


def _refused_reason(cls_name: str, arg: Argument) -> str | None:
    """Why a config may not set this argument, or ``None`` when it may."""
    if arg.name in allowlist.reviewed_arguments(cls_name):
        if "Callable" in arg.annotation and (cls_name, arg.name) not in allowlist.CHOICES:
            return "it takes a Python function, which a config cannot hold"
        return None
    return allowlist.REFUSED_ARGUMENTS.get(arg.name, allowlist.NOT_REVIEWED)


@functools.cache
def spec_for(stage_id: str) -> StageSpec | None:
    """A :class:`StageSpec` for ``monai.<Name>``, or ``None`` if it is not an allowed dictionary transform."""
    from pydantic import ConfigDict, Field, create_model

    resolved = resolve(stage_id[len(PREFIX) :]) if stage_id.startswith(PREFIX) else None
    if resolved is None or not resolved.allowed:
        return None
    signature = signature_of(resolved.export)
    if signature is None:
        return None
    intro, arg_docs = _split_docstring(signature.doc)
    fields: dict[str, Any] = {}
    for arg in signature.arguments:
        refused = _refused_reason(resolved.cls, arg)
        if refused is not None:
            if arg.default is None:
                return None  # a required argument a config cannot give: the transform cannot be used
            shown = {"type": "not settable", "default": arg.default}
            annotated = Annotated[Any, BeforeValidator(_refuse(refused))]
            fields[arg.name] = (annotated, Field(MONAI_DEFAULT, description=refused, json_schema_extra={"shown": shown}))
            continue
        shown = {"type": arg.annotation or "any", "default": "required" if arg.default is None else arg.default}
        # pydantic does not validate defaults, so the sentinel can stand in for "not set"
        # while values the config gives are checked against the plain type.
        annotated = Annotated[_field_type(resolved.cls, arg), AfterValidator(_no_reserved_keys)]
        fields[arg.name] = (
            annotated,
            Field(... if arg.default is None else MONAI_DEFAULT, description=arg_docs.get(arg.name), json_schema_extra={"shown": shown}),
        )
    model = create_model(
        f"{resolved.cls}Params",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),  # **kwargs is never passed on
        **fields,
    )
    summary = next((line.strip() for line in intro.splitlines() if line.strip()), f"MONAI {resolved.cls}")
    return StageSpec(
        id=stage_id,
        kind=StageKind.TRANSFORM,
        summary=summary,
        params=model,
        factory=functools.partial(build, resolved.export, resolved.module, resolved.cls),
        reads=("{keys}",),
        writes=_WRITES.get(resolved.cls, ("{keys}",)),
        description=intro,
        plugin="monai",
        distribution="monai",
        version=_monai_version(),
    )


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Google-style docstring -> (text before ``Args:`` without Sphinx roles, {argument: description})."""
    doc = re.sub(r":py:\w+:`~?([^`]+)`", r"\1", doc)
    intro, _, rest = doc.partition("Args:")
    described: dict[str, str] = {}
    current = None
    for line in rest.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith(":"):
            break  # the next section (Raises:, Note:, ...)
        match = re.match(r"^    (\w+)\s*(\([^)]*\))?:\s*(.*)$", line)
        if match:
            current = match.group(1)
            described[current] = match.group(3).strip()
        elif current and line.strip():
            described[current] += " " + line.strip()
    return intro.strip(), described


def _monai_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("monai")
    except PackageNotFoundError:
        return ""


# ----------------------------------------------------------------------------- building


def allowed_classes() -> dict[str, type]:
    """Every allowed class object, imported (build time only: this imports MONAI and torch)."""
    classes = {}
    for cls_name, (module, _) in allowlist.ALLOWED.items():
        obj = getattr(importlib.import_module(f"monai.transforms.{module}"), cls_name, None)
        if inspect.isclass(obj) and obj.__name__ == cls_name:
            classes[cls_name] = obj
    return classes


def _dtype_value(name: Any, annotation: str) -> Any:
    """A dtype name -> the dtype object MONAI expects (numpy, or torch where only torch is annotated)."""
    if isinstance(name, list):
        return [_dtype_value(n, annotation) for n in name]
    if name is None:
        return None
    torch_only = annotation == "" or ("torch.dtype" in annotation and "DtypeLike" not in annotation and "np." not in annotation)
    if torch_only:
        import torch

        return getattr(torch, name)
    import numpy as np

    return np.dtype(name).type


def build(export: str, module: str, cls_name: str, /, **arguments: Any):
    """Import MONAI, check the class object is the allowed one, check the arguments, construct.

    The leading parameters are positional-only, so a transform argument called ``name``
    (``ConcatItemsd``) or ``export`` reaches ``arguments`` instead of colliding with them.
    """
    import monai.transforms

    cls = getattr(monai.transforms, export, None)
    allowed = allowed_classes()
    expected = allowed.get(cls_name)
    if (
        expected is None
        or cls is not expected
        or allowlist.ALLOWED[cls_name][0] != module
        or not any(cls is obj for obj in allowed.values())
    ):
        raise ValueError(f"monai.{export} is not the reviewed MONAI class `{cls_name}` at run time; refused")
    signature = signature_of(export)
    annotations = {a.name: a.annotation for a in (signature.arguments if signature else ())}
    kwargs: dict[str, Any] = {}
    for key, value in arguments.items():
        if value is MONAI_DEFAULT:
            continue
        if key not in allowlist.reviewed_arguments(cls_name) or _reserved_key(value):
            raise ValueError(f"monai.{export}: argument `{key}` cannot be set from a config")
        kwargs[key] = _dtype_value(value, annotations.get(key, "")) if key in allowlist.DTYPE_ARGUMENTS else value
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise ValueError(f"monai.{export}: {exc}") from None
    return cls(**kwargs)

"""Any MONAI dictionary transform as a stage: ``use: monai.ScaleIntensityRanged``.

The adapter must validate a config without importing MONAI (``voxpipe validate`` never
loads torch), so it reads MONAI's *source* with :mod:`ast`: ``monai/transforms/__init__.py``
says which module defines a name, and that module's class gives the ``__init__``
signature. From the signature it makes a pydantic model (required arguments required,
unknown arguments rejected, simple annotations type-checked), so MONAI stages are
validated like every other stage. When the stage is built, MONAI is imported and the
arguments are bound with :func:`inspect.signature` once more before any case runs.

Configs still hold no code: the stage id must be a single exported class name, only
dictionary transforms (defined in a ``dictionary`` module) are accepted, and transforms
that run callables or read and write files on their own are refused.
"""

from __future__ import annotations

import ast
import re
import functools
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from voxpipe.stage import StageKind, StageSpec

PREFIX = "monai."

# Transforms that execute callables, or read/write files and logs outside VoxPipe's control.
REFUSED = {
    "Lambdad": "runs an arbitrary callable",
    "RandLambdad": "runs an arbitrary callable",
    "LoadImaged": "reads files itself; start the pipeline with a VoxPipe loader such as `load.auto`",
    "SaveImaged": "writes files itself; use a VoxPipe writer such as `write.nifti`",
    "WriteFileMappingd": "writes files itself",
    "DataStatsd": "logs image data and metadata, which may contain PHI",
    "Invertd": "needs a transform object, which a config cannot hold",
}

_SIMPLE_TYPES: dict[str, Any] = {"bool": bool, "int": int, "float": float, "str": str}


class _MonaiDefault:
    """Marks an argument the config did not set: MONAI's own default then applies."""

    _instance: "_MonaiDefault | None" = None

    def __new__(cls) -> "_MonaiDefault":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<MONAI default>"


MONAI_DEFAULT = _MonaiDefault()


@dataclass(frozen=True)
class Argument:
    name: str
    annotation: str
    default: str | None  # source text of the default; None when required


@dataclass(frozen=True)
class TransformSignature:
    name: str
    module: str
    arguments: tuple[Argument, ...]
    accepts_any: bool  # **kwargs in the signature
    doc: str


@functools.lru_cache(maxsize=1)
def _monai_root() -> Path | None:
    spec = importlib.util.find_spec("monai")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def _exported_names() -> dict[str, str]:
    """Name exported by ``monai.transforms`` -> dotted module (relative to ``monai.transforms``)."""
    root = _monai_root()
    if root is None:
        return {}
    tree = ast.parse((root / "transforms" / "__init__.py").read_text(encoding="utf-8"))
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
    return names


def dictionary_transform_names() -> list[str]:
    """Every exported MONAI dictionary transform name (for suggestions and listings)."""
    return sorted(n for n, mod in _exported_names().items() if mod.endswith("dictionary") and n not in REFUSED)


@functools.lru_cache(maxsize=None)
def _module_tree(module: str) -> ast.Module:
    root = _monai_root()
    assert root is not None
    path = root / "transforms" / Path(*module.split("."))
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return ast.parse(file.read_text(encoding="utf-8"))


def _find_class(tree: ast.Module, name: str, depth: int = 0) -> ast.ClassDef | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            if isinstance(node.value, ast.Name) and depth < 4:
                return _find_class(tree, node.value.id, depth + 1)
    return None


def signature_of(name: str) -> TransformSignature | None:
    """Read a MONAI dictionary transform's constructor signature from source, or ``None``."""
    module = _exported_names().get(name)
    if module is None or not module.endswith("dictionary"):
        return None
    cls = _find_class(_module_tree(module), name)
    if cls is None:
        return None
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    doc = ast.get_docstring(cls) or ""
    if init is None:
        return TransformSignature(name, module, (), True, doc)
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
    return TransformSignature(name, module, tuple(arguments), args.kwarg is not None, doc)


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


def _field_type(annotation: str) -> Any:
    """Map simple annotations (``float``, ``bool | None``) to types; anything else is ``Any``."""
    parts = [p.strip() for p in annotation.split("|")]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    if len(parts) == 1 and parts[0] in _SIMPLE_TYPES:
        base = _SIMPLE_TYPES[parts[0]]
        return Optional[base] if optional else base
    return Any


@functools.lru_cache(maxsize=None)
def spec_for(stage_id: str) -> StageSpec | None:
    """A :class:`StageSpec` for ``monai.<Name>``, or ``None`` if it is not an allowed dictionary transform."""
    from pydantic import ConfigDict, Field, create_model

    name = stage_id[len(PREFIX):]
    if not name.isidentifier() or name in REFUSED:
        return None
    signature = signature_of(name)
    if signature is None:
        return None
    fields: dict[str, Any] = {}
    intro, arg_docs = _split_docstring(signature.doc)
    for arg in signature.arguments:
        shown = {"type": arg.annotation or "any", "default": "required" if arg.default is None else arg.default}
        # pydantic does not validate defaults, so the sentinel can stand in for "not set"
        # while values the config gives are checked against the plain type.
        fields[arg.name] = (
            _field_type(arg.annotation),
            Field(... if arg.default is None else MONAI_DEFAULT, description=arg_docs.get(arg.name), json_schema_extra={"shown": shown}),
        )
    model = create_model(
        f"{name}Params",
        __config__=ConfigDict(extra="allow" if signature.accepts_any else "forbid", arbitrary_types_allowed=True),
        **fields,
    )
    summary = next((line.strip() for line in intro.splitlines() if line.strip()), f"MONAI {name}")
    return StageSpec(
        id=stage_id,
        kind=StageKind.TRANSFORM,
        summary=summary,
        params=model,
        factory=functools.partial(build, name),
        reads=("{keys}",),
        writes=("{keys}",),
        description=intro,
        plugin="monai",
        distribution="monai",
        version=_monai_version(),
    )


def _monai_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("monai")
    except PackageNotFoundError:
        return ""


def build(name: str, **arguments: Any):
    """Import MONAI, check the arguments against the real signature, and construct the transform."""
    import monai.transforms

    cls = getattr(monai.transforms, name)
    kwargs = {k: v for k, v in arguments.items() if v is not MONAI_DEFAULT}
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise ValueError(f"monai.{name}: {exc}") from None
    return cls(**kwargs)

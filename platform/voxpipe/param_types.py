"""Parameter types and defaults as a person reads them, for ``voxpipe plugins show``.

pydantic's own spelling (``list[Annotated[str, FieldInfo(...)]]``) is what Python sees, not what
someone writing a YAML config needs: ``list of str``, ``Range {name: str, min: float?}``, a
default written as the YAML value it stands for (``image``, ``[image]``, ``null``).
"""

from __future__ import annotations

import collections.abc
import enum
import types
import typing
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel

_NAMES = {str: "str", int: "int", float: "float", bool: "bool", bytes: "bytes", type(None): "null", Any: "any", object: "any"}
_MAX_DEPTH = 4  # nested models deeper than this are named, not expanded


def type_text(annotation: Any, depth: int = 0) -> str:
    """``list of str``, ``int?`` (may be null), ``one of a, b``, ``Range {name: str, min: float?}``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return type_text(args[0], depth)
    if origin in (Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        inner = " or ".join(type_text(a, depth) for a in present)
        return (f"({inner})" if len(present) > 1 else inner) + "?" if len(present) < len(args) else inner
    if origin is Literal:
        return "one of " + ", ".join(value_text(a) for a in args)
    if origin in (list, set, frozenset, collections.abc.Sequence, collections.abc.Set):
        return f"list of {type_text(args[0], depth) if args else 'any'}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_text(args[0], depth)}"
        return "[" + ", ".join(type_text(a, depth) for a in args) + "]"
    if origin is dict:
        key, value = (args + (Any, Any))[:2]
        return f"map of {type_text(key, depth)} to {type_text(value, depth)}"
    if isinstance(annotation, type):
        if annotation in _NAMES:
            return _NAMES[annotation]
        if issubclass(annotation, enum.Enum):
            return "one of " + ", ".join(value_text(m.value) for m in annotation)
        if issubclass(annotation, PurePath):
            return "path"
        if issubclass(annotation, BaseModel):
            if depth >= _MAX_DEPTH:
                return annotation.__name__
            fields = ", ".join(f"{f.alias or n}: {type_text(f.annotation, depth + 1)}" for n, f in annotation.model_fields.items())
            return f"{annotation.__name__} {{{fields}}}"
        return "default" if annotation.__name__ == "_MonaiDefault" else annotation.__name__
    if annotation in _NAMES:
        return _NAMES[annotation]
    return str(annotation).replace("typing.", "")


def plain(value: Any) -> Any:
    """A default as the plain data a config would hold (enums by value, paths as text, models as dicts)."""
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, BaseModel):
        return plain(value.model_dump(by_alias=True))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def value_text(value: Any) -> str:
    """A value written as in a YAML config: ``image``, ``[image, label]``, ``null``, ``true``, ``2.5``."""
    import yaml

    text = yaml.safe_dump(plain(value), default_flow_style=True, width=10**6, allow_unicode=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()

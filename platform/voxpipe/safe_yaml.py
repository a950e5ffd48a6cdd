"""Read YAML as plain data only, remembering the line of every value.

PyYAML's ``safe_load`` already refuses ``!!python/...`` tags, but silently accepts
duplicate keys and gives no line numbers for later validation errors. Here the document
is *composed* (parsed into nodes, nothing constructed) and the nodes are turned into
dicts, lists and scalars by hand: any explicit tag other than the plain YAML types is
refused, duplicate keys are errors, and alias expansion is bounded (no "billion laughs").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple  # a path into the document: ("stages", 1, "with", "sigma")

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
}
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
MAX_NODES = 100_000


class YamlProblem(Exception):
    """A YAML document that is not plain data; ``line`` is 1-based (0 if unknown)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class LocatedDocument:
    """Plain data plus the source line of each value, by path."""

    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def line_of(self, path: tuple) -> int:
        """Line of the value at ``path``, or of its nearest located parent."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 0)


def load(text: str) -> LocatedDocument:
    """Parse one YAML document into plain data; raise :class:`YamlProblem` on anything else."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlProblem(f"YAML syntax error: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"YAML error: {' '.join(str(exc).split())}") from None
    document = LocatedDocument(data=None)
    if node is None:
        return document
    builder = _Builder(document)
    document.data = builder.build(node, ())
    return document


class _Builder:
    def __init__(self, document: LocatedDocument) -> None:
        self.document = document
        self.count = 0
        self.scalars = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: tuple) -> Any:
        self.count += 1
        line = node.start_mark.line + 1
        if self.count > MAX_NODES:
            raise YamlProblem(f"document too large (more than {MAX_NODES} values, aliases included)", line)
        self.document.lines[path] = line
        tag = node.tag
        if tag not in _PLAIN_TAGS and tag != _TIMESTAMP:
            raise YamlProblem(f"YAML tag `{tag.replace('tag:yaml.org,2002:', '!!')}` is not allowed: configs hold plain values only", line)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlProblem("YAML merge keys (`<<`) are not supported; write the values out", key_node.start_mark.line + 1)
                if not isinstance(key_node, yaml.ScalarNode):
                    raise YamlProblem("mapping keys must be plain names", key_node.start_mark.line + 1)
                key = self.build(key_node, path + ("<key>",))
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise YamlProblem(f"mapping key {key!r} must be a name", key_node.start_mark.line + 1)
                if key in result:
                    raise YamlProblem(f"duplicate key `{key}`", key_node.start_mark.line + 1)
                result[key] = self.build(value_node, path + (key,))
                self.document.lines[path + (key,)] = key_node.start_mark.line + 1
            self.document.lines.pop(path + ("<key>",), None)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        if tag == _TIMESTAMP:
            return str(node.value)  # dates stay text; configs have no use for datetime objects
        return self.scalars.construct_object(node)

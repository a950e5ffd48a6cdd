"""Read YAML as plain data only, remembering the line of every value.

PyYAML's ``safe_load`` already refuses ``!!python/...`` tags, but silently accepts
duplicate keys and gives no line numbers for later validation errors. Here the document
is *composed* (parsed into nodes, nothing constructed) and the nodes are turned into
dicts, lists and scalars by hand: any explicit tag other than the plain YAML types is
refused, duplicate keys are errors, and alias expansion is bounded (no "billion laughs").

PyYAML's composer and the builder here recurse once per nesting level, so the depth is
checked on the parser's event stream (which does not recurse) before anything is
composed, and again while aliases are expanded; an alias inside its own anchor is
refused by name. Every limit ends in :class:`YamlProblem`, never in a ``RecursionError``.
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
MAX_NODES = 100_000  # values after alias expansion
MAX_DEPTH = 64  # nesting levels after alias expansion; real configs use fewer than 10
MAX_CHARS = 1_000_000  # characters of scalar text after alias expansion


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
        _check_shape(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlProblem(f"YAML syntax error: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"YAML error: {' '.join(str(exc).split())}") from None
    except RecursionError:  # the shape check should make this unreachable; never let it escape
        raise YamlProblem(f"document nested too deeply (more than {MAX_DEPTH} levels)") from None
    document = LocatedDocument(data=None)
    if node is None:
        return document
    builder = _Builder(document)
    try:
        document.data = builder.build(node, ())
    except RecursionError:
        raise YamlProblem(f"document nested too deeply (more than {MAX_DEPTH} levels)") from None
    return document


def _check_shape(text: str) -> None:
    """Refuse documents too deep or too large from the parser's events, before the recursive composer runs."""
    depth = 0
    for events, event in enumerate(yaml.parse(text, Loader=yaml.SafeLoader), start=1):
        if events > 2 * MAX_NODES:
            raise YamlProblem(f"document too large (more than {MAX_NODES} values, aliases included)", event.start_mark.line + 1)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlProblem(f"document nested too deeply (more than {MAX_DEPTH} levels)", event.start_mark.line + 1)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


class _Builder:
    def __init__(self, document: LocatedDocument) -> None:
        self.document = document
        self.count = 0
        self.chars = 0
        self.open: set[int] = set()  # collection nodes being built: meeting one again is a recursive alias
        self.scalars = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: tuple) -> Any:
        self.count += 1
        line = node.start_mark.line + 1
        if self.count > MAX_NODES:
            raise YamlProblem(f"document too large (more than {MAX_NODES} values, aliases included)", line)
        if isinstance(node, yaml.ScalarNode):
            self.chars += len(node.value)
            if self.chars > MAX_CHARS:
                raise YamlProblem(f"document too large (more than {MAX_CHARS} characters of values, aliases included)", line)
            return self._located(node, path, line)
        if id(node) in self.open:
            raise YamlProblem("recursive alias: an anchor (`&name`) is used inside itself", line)
        if len(path) >= MAX_DEPTH:  # one path element per level
            raise YamlProblem(f"document nested too deeply (more than {MAX_DEPTH} levels, aliases expanded)", line)
        self.open.add(id(node))
        try:
            return self._located(node, path, line)
        finally:
            self.open.discard(id(node))

    def _located(self, node: yaml.Node, path: tuple, line: int) -> Any:
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
        try:
            return self.scalars.construct_object(node)
        except (ValueError, OverflowError):  # e.g. an integer past Python's 4300-digit conversion limit
            raise YamlProblem(f"value cannot be read as {tag.replace('tag:yaml.org,2002:', '')}", line) from None

"""YAML text to plain Python data that remembers where every key and value was written.

PyYAML's ``safe_load`` forgets positions and silently keeps the last of two equal keys, so
we compose the node tree and build the data ourselves, interpolating strings on the way.

A spec is a few kilobytes; a hostile or broken file must not cost more than one. Composing
stops at ``MAX_DEPTH`` levels of nesting (PyYAML would recurse into a RecursionError) and at
``MAX_NODES`` values counted as if every alias were written out in full, so a "billion laughs"
alias bomb is refused while its small node graph is composed, before anything expands it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .interpolate import expand
from .problems import Problem, SpecError, format_path

__all__ = ["Document", "parse_document", "MAX_DEPTH", "MAX_NODES"]

MAX_DEPTH = 100       # levels of nesting, the document's mapping being the first; a spec has ~6
MAX_NODES = 20_000    # keys and values, aliases expanded; a spec has a few hundred, and each costs ~20 µs

Position = tuple  # (line, col), both 1-based

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


@dataclass
class Document:
    """Parsed spec data plus the position of every value and key, by path tuple."""

    file: str
    data: Any
    values: dict = field(default_factory=dict)   # path -> Position of the value node
    keys: dict = field(default_factory=dict)     # path -> Position of the key node
    problems: list = field(default_factory=list)
    tainted: set = field(default_factory=set)    # paths whose value is unreliable after a problem
    scalars: dict = field(default_factory=dict)  # path -> ScalarNode, to point inside a value
    secrets: set = field(default_factory=set)    # interpolated values that are secrets (never printed)

    def char_at(self, path: tuple, offset: int) -> Position:
        """Position of character ``offset`` of the string value at ``path``, where we can know it."""
        node = self.scalars.get(path)
        if node is None:
            return self.value_at(path)
        return (node.start_mark.line + 1, _column_of(node, offset))

    def value_at(self, path: tuple) -> Position:
        """Position of the value at ``path``, or of its nearest ancestor that was written."""
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return (1, 1)

    def key_at(self, path: tuple) -> Position:
        """Position of the key that introduces ``path``, falling back to the value."""
        return self.keys.get(path) or self.value_at(path)

    def is_tainted(self, path: tuple) -> bool:
        return any(path[:len(t)] == t for t in self.tainted)

    def problem(self, pos: Position, path: tuple, message: str) -> None:
        self.problems.append(Problem(self.file, pos[0], pos[1], format_path(path), message))


class _Loader(yaml.SafeLoader):
    """Marks plain, untagged scalars, whose type is re-resolved after interpolation, and
    enforces ``MAX_DEPTH`` and ``MAX_NODES``.

    Every composed node records ``kpipe_size``, the values it stands for once its aliases are
    expanded, so an alias costs what its anchor would cost written out again."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._total = 0
        self._top = None  # the top-level key being composed, to name in a refusal

    def compose_node(self, parent, index):
        if self._depth == 1:  # a top-level key (index None), or its value (index: the key)
            self._top = index.value if isinstance(index, ScalarNode) else None
        if self.check_event(AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            # An alias inside its own anchor has no size yet: the builder reports it.
            self._count(getattr(node, "kpipe_size", 1), mark, "aliases expand to")
            return node
        mark = self.peek_event().start_mark
        if self._depth >= MAX_DEPTH:
            self._refuse(mark, f"nested more than {MAX_DEPTH} levels deep; a spec needs only a few")
        before = self._total
        self._count(1, mark, "the spec holds")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        node.kpipe_size = self._total - before
        return node

    def _count(self, n: int, mark, what: str) -> None:
        self._total += n
        if self._total > MAX_NODES:
            self._refuse(mark, f"{what} more than {MAX_NODES:,} values; a spec needs only a few hundred")

    def _refuse(self, mark, message: str):
        raise _Refused(self._top, mark, message)

    def compose_scalar_node(self, anchor):
        event = self.peek_event()
        node = super().compose_scalar_node(anchor)
        node.kpipe_plain = bool(event.implicit[0])
        return node


class _Refused(ComposerError):
    """A limit was reached at ``problem_mark``, under top-level key ``top``."""

    def __init__(self, top, mark, message: str):
        super().__init__(None, None, message, mark)
        self.top = top


def _pos(mark) -> Position:
    return (mark.line + 1, mark.column + 1)


def parse_document(text: str, file: str, env: Mapping[str, str]) -> Document:
    """Compose and build ``text``. Raises ``SpecError`` when the YAML itself is unusable;
    problems found while building (duplicate keys, unset variables) land in ``problems``."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except _Refused as exc:
        path = () if exc.top is None else (exc.top,)
        raise SpecError([Problem(file, *_pos(exc.problem_mark), format_path(path), exc.problem)]) from None
    except yaml.MarkedYAMLError as exc:
        raise SpecError([_syntax_problem(file, exc)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(file, 1, 1, format_path(()), str(exc))]) from None
    finally:
        loader.dispose()
    if root is None:
        raise SpecError([Problem(file, 1, 1, format_path(()), "the spec is empty")])
    if not isinstance(root, MappingNode):
        kind = "a list" if isinstance(root, SequenceNode) else "a single value"
        raise SpecError([Problem(file, 1, 1, format_path(()),
                                 f"the spec must be a mapping of keys (name, source, sink, ...), not {kind}")])
    doc = Document(file, None)
    doc.data = _Builder(doc, env).build(root, (), frozenset())
    doc.values[()] = (1, 1)  # the root is reported at the top of the file, past any comments
    return doc


def _syntax_problem(file: str, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, col = _pos(mark) if mark is not None else (1, 1)
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        if exc.problem.startswith("but "):  # PyYAML splits one sentence across the two
            message = f"{exc.context}, {exc.problem}"
        else:
            where = f" at line {exc.context_mark.line + 1}" if exc.context_mark is not None else ""
            message = f"{exc.problem} ({exc.context}{where})"
    return Problem(file, line, col, format_path(()), message)


def _column_of(node: ScalarNode, offset: int) -> int:
    """1-based column of character ``offset`` of a scalar's value, where we can know it."""
    start, end = node.start_mark, node.end_mark
    if start.line == end.line:
        if node.style is None:
            return start.column + 1 + offset
        if node.style in ("'", '"'):
            return start.column + 2 + offset  # past the opening quote
    return start.column + 1  # folded, literal and multi-line scalars: the scalar start


class _Builder:
    def __init__(self, doc: Document, env: Mapping[str, str]):
        self.doc = doc
        self.env = env
        self.base_dir = os.path.dirname(os.path.abspath(doc.file))  # for relative ${file:PATH}
        self.constructor = yaml.constructor.SafeConstructor()
        self.resolver = yaml.resolver.Resolver()

    def build(self, node: Node, path: tuple, active: frozenset) -> Any:
        self.doc.values[path] = _pos(node.start_mark)
        if id(node) in active:  # an alias inside its own anchor
            self._fail(node, path, "recursive alias: an anchor cannot contain itself")
            return None
        if isinstance(node, MappingNode):
            return self._mapping(node, path, active | {id(node)})
        if isinstance(node, SequenceNode):
            inner = active | {id(node)}
            return [self.build(item, path + (i,), inner) for i, item in enumerate(node.value)]
        self.doc.scalars[path] = node
        return self._scalar(node, path)

    def _fail(self, node: Node, path: tuple, message: str) -> None:
        self.doc.problem(_pos(node.start_mark), path, message)
        self.doc.tainted.add(path)

    def _mapping(self, node: MappingNode, path: tuple, active: frozenset) -> dict:
        out: dict = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            if not isinstance(key_node, ScalarNode):
                self._fail(key_node, path, "keys must be plain strings, not lists or mappings")
                continue
            # Keys stay text: YAML 1.1 would turn `on:` or `yes:` into booleans.
            key = key_node.value
            key_path = path + (key,)
            if key in out:
                first = self.doc.keys[key_path]
                self.doc.problem(_pos(key_node.start_mark), key_path,
                                 f"duplicate key {key!r}; first set at line {first[0]}, column {first[1]}")
                continue
            self.doc.keys[key_path] = _pos(key_node.start_mark)
            out[key] = self.build(value_node, key_path, active)
        for merged in self._merge_sources(merges, path):
            # `<<: *anchor` fills in keys the mapping does not set itself.
            for key_node, value_node in merged.value:
                if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE and key_node.value not in out:
                    key_path = path + (key_node.value,)
                    self.doc.keys[key_path] = _pos(key_node.start_mark)
                    out[key_node.value] = self.build(value_node, key_path, active)
        return out

    def _merge_sources(self, merges: list, path: tuple) -> list:
        sources = []
        for value in merges:
            items = value.value if isinstance(value, SequenceNode) else [value]
            for item in items:
                if isinstance(item, MappingNode):
                    sources.append(item)
                else:
                    self._fail(item, path, "'<<' needs a mapping or a list of mappings")
        return sources

    def _scalar(self, node: ScalarNode, path: tuple) -> Any:
        if node.tag == _STR and "$" in node.value:
            text, errors = expand(node.value, self.env, base_dir=self.base_dir, secrets=self.doc.secrets)
            for offset, message in errors:
                self.doc.problem((node.start_mark.line + 1, _column_of(node, offset)), path, message)
            if errors:
                self.doc.tainted.add(path)
                return text
            if not getattr(node, "kpipe_plain", False) or text == "":
                # Quoted or tagged: stays a string. So does an empty expansion (${X:-}): the
                # writer asked for a value, and YAML's typing would turn "" into null.
                return text
            # Plain scalars get the type they would have had if the value had been typed in.
            tag = self.resolver.resolve(ScalarNode, text, (True, False))
            node = ScalarNode(tag, text, node.start_mark, node.end_mark, style=None)
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self._fail(node, path, getattr(exc, "problem", None) or str(exc))
        except (ValueError, TypeError) as exc:  # e.g. `!!int abc`: PyYAML lets int() raise
            self._fail(node, path, f"cannot read {node.value!r} as {node.tag.rsplit(':', 1)[-1]}: {exc}")
        return None

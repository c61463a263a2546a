"""Expressions in specs: CEL, the Common Expression Language (https://github.com/google/cel-spec).

CEL is small, side-effect free and always terminates, with the operators people expect
(``amount > 100 && country == "DE"``, ``amount * qty``). We run it through the
``common-expression-language`` package (Python bindings of the Rust ``cel`` crate), installed by
``pip install "kpipe[cel]"``. Python is never ``eval()``-ed.

An expression is compiled once (``compile``: a syntax error is an ``ExpressionSyntaxError``, a
``ValueError`` that knows its line and column) and evaluated per record against a context:

- each field of the record (when it is an object) as a top-level name: ``amount > 100``;
- ``_value``: the whole value (an object, a string, bytes...): ``has(_value.amount)``,
  ``_value["field-with-dashes"]``, ``_value.startsWith("ERROR")``;
- ``_meta``: ``key``, ``headers`` (a map of string to bytes), ``timestamp`` (ms since the epoch,
  or null), ``topic``, ``partition``, ``offset``.

Only what an expression mentions is put into its context, and ``_meta`` is built only when it
is used: passing the whole record costs far more than evaluating a comparison.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import cel as _cel
from cel.stdlib import STDLIB_FUNCTIONS as _EXTENSIONS

__all__ = ["Expression", "ExpressionError", "ExpressionSyntaxError", "Scope", "compile",
           "META_FIELDS", "RESERVED", "SPEC_URL"]

SPEC_URL = "https://github.com/google/cel-spec/blob/master/doc/langdef.md"
META_FIELDS = ("key", "headers", "timestamp", "topic", "partition", "offset")
VALUE, META = "_value", "_meta"
RESERVED = (VALUE, META)

# cel-go's extension functions (lowerAscii, split, math.round, ...) run as Python callbacks and
# need a per-record Context; an expression pays for that only when it calls one. ``contains`` is
# left out: the native string ``contains`` covers the usual case.
_EXT_NAMESPACES = frozenset(n.split(".")[0] for n in _EXTENSIONS if "." in n)
_EXT_SHORT = frozenset(n.rsplit(".", 1)[-1] for n in _EXTENSIONS) - {"contains"}

_SYNTAX = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")
_UNDEFINED = re.compile(r"Undefined variable or function: '([^']*)'")
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_META_USE = re.compile(r"(?<![\w.])_meta\b(\s*\.\s*([A-Za-z_]\w*))?")


class ExpressionSyntaxError(ValueError):
    """The expression does not compile. ``line`` and ``column`` are 1-based within the
    expression; ``offset`` is the 0-based character index (None when the library gave no
    position)."""

    def __init__(self, message: str, expression: str, line: int | None = None,
                 column: int | None = None, offset: int | None = None):
        super().__init__(message)
        self.expression = expression
        self.line = line
        self.column = column
        self.offset = offset


class ExpressionError(Exception):
    """Evaluating the expression failed for one record (a missing field, a type mismatch)."""


class Expression:
    """A compiled CEL expression. ``run(context)`` evaluates it; build the context with
    ``Scope``."""

    __slots__ = ("source", "_program", "fields", "uses_value", "meta_fields", "extensions")

    def __init__(self, source: str):
        self.source = source
        try:
            self._program = _cel.compile(source)
        except Exception as exc:  # the library raises ValueError; be sure nothing else escapes
            raise _syntax_error(source, exc) from None
        names = self._program.variables()
        functions = self._program.functions()
        self.fields = tuple(n for n in names if n not in RESERVED)
        self.uses_value = VALUE in names
        self.meta_fields = _meta_fields(source) if META in names else ()
        needs_ext = any(f in _EXT_SHORT for f in functions) or any(n in _EXT_NAMESPACES for n in names)
        self.extensions = _EXTENSIONS if needs_ext else None

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def run(self, context: Any) -> Any:
        """The value of the expression in ``context``; ``ExpressionError`` when it fails."""
        try:
            return self._program.execute(context)
        except Exception as exc:
            raise ExpressionError(self._explain(exc)) from None

    def _explain(self, exc: Exception) -> str:
        if isinstance(exc, KeyError):
            return f"no such key: {exc.args[0]!r} (test with has(map.key) or 'key' in map)"
        text = str(exc)
        undefined = _UNDEFINED.search(text)
        if undefined:
            name = undefined.group(1)
            if name in self.fields:
                return f"no field {name!r} in the record (test with has(_value.{name}))"
            return f"undefined function {name!r}"
        if text.startswith("No such overload"):
            return ("no such overload: CEL never mixes types, so convert with int(), double() "
                    "or string() (e.g. double(amount) * 1.5)")
        return text.split(". ")[0]  # the library adds generic advice after the first sentence


def compile(source: str) -> Expression:  # noqa: A001 - mirrors re.compile
    """Compile ``source`` once; raises ``ExpressionSyntaxError`` (a ``ValueError``)."""
    return Expression(source)


def _syntax_error(source: str, exc: Exception) -> ExpressionSyntaxError:
    text = str(exc)
    found = _SYNTAX.search(text)
    if not found:
        return ExpressionSyntaxError(f"invalid expression {source!r}: {text}", source)
    line, column, reason = int(found.group(1)), int(found.group(2)), found.group(3).strip()
    lines = source.split("\n")
    offset = sum(len(s) + 1 for s in lines[:line - 1]) + column - 1
    if len(reason) > 160:
        reason = reason[:157] + "..."
    where = f"column {column}" if line == 1 else f"line {line}, column {column}"
    return ExpressionSyntaxError(f"syntax error at {where} of {source!r}: {reason}",
                                 source, line, column, offset)


def _meta_fields(source: str) -> tuple:
    """The ``_meta`` members the source reads, so only those are fetched per record; all of
    them when ``_meta`` is used as a whole. An unknown member is a syntax error now rather
    than a failure on every record."""
    code = _STRINGS.sub('""', source)
    used = []
    for match in _META_USE.finditer(code):
        member = match.group(2)
        if member is None:
            return META_FIELDS
        if member not in META_FIELDS:
            raise ExpressionSyntaxError(
                f"_meta has no {member!r} in {source!r}; it has {', '.join(META_FIELDS)}", source)
        used.append(member)
    return tuple(m for m in META_FIELDS if m in used) or META_FIELDS


_META_GET = {
    "key": lambda meta, i: meta.key(i),
    "headers": lambda meta, i: meta.headers(i),
    "timestamp": lambda meta, i: meta.timestamp(i),
    "topic": lambda meta, i: meta.topic,
    "partition": lambda meta, i: meta.partition,
    "offset": lambda meta, i: meta.offset(i),
}


class Scope:
    """Builds evaluation contexts for one or more expressions over the same record."""

    __slots__ = ("fields", "uses_value", "meta", "extensions", "uses_meta")

    def __init__(self, expressions: Iterable[Expression]):
        expressions = list(expressions)
        self.fields = tuple(dict.fromkeys(f for e in expressions for f in e.fields))
        self.uses_value = any(e.uses_value for e in expressions)
        meta = {m for e in expressions for m in e.meta_fields}
        self.meta = tuple((m, _META_GET[m]) for m in META_FIELDS if m in meta)
        self.uses_meta = bool(self.meta)
        self.extensions = next((e.extensions for e in expressions if e.extensions), None)

    def context(self, value: Any, meta: Any = None, i: int = 0) -> Any:
        """The context for record ``i``: its fields, ``_value`` and ``_meta`` as used."""
        if type(value) is dict or isinstance(value, dict):
            ctx = {n: value[n] for n in self.fields if n in value}
        else:
            ctx = {}
        if self.uses_value:
            ctx[VALUE] = value
        if self.uses_meta:
            ctx[META] = {name: get(meta, i) for name, get in self.meta} if meta is not None else {}
        if self.extensions is not None:
            return _cel.Context(ctx, self.extensions)
        return ctx

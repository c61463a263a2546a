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
- ``_meta``: ``key``, ``headers`` (a map of string to bytes; the last value of a repeated name),
  ``header_list`` (every header as a ``[name, value]`` pair, in order, repeated names included),
  ``timestamp`` (ms since the epoch, or null), ``topic``, ``partition``, ``offset``.

Only what an expression mentions is put into its context, and ``_meta`` is built only when it
is used: passing the whole record costs far more than evaluating a comparison.
"""
from __future__ import annotations

import re
from typing import Any

import cel as _cel
from cel.stdlib import STDLIB_FUNCTIONS as _EXTENSIONS

__all__ = ["Expression", "ExpressionError", "ExpressionSyntaxError", "compile",
           "META_FIELDS", "RESERVED", "SPEC_URL"]

SPEC_URL = "https://github.com/google/cel-spec/blob/master/doc/langdef.md"
META_FIELDS = ("key", "headers", "header_list", "timestamp", "topic", "partition", "offset")
VALUE, META = "_value", "_meta"
RESERVED = (VALUE, META)

# cel-go's extension functions (lowerAscii, split, math.round, ...) run as Python callbacks and
# need a per-record Context; an expression pays for that only when it calls one. ``contains`` is
# left out: the native string ``contains`` covers the usual case.
_EXT_NAMESPACES = frozenset(n.split(".")[0] for n in _EXTENSIONS if "." in n)
_EXT_SHORT = frozenset(n.rsplit(".", 1)[-1] for n in _EXTENSIONS) - {"contains"}

_SYNTAX = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")
_UNDEFINED = re.compile(r"Undefined variable or function: '([^']*)'")
_STRINGS = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
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


_SIMPLE_FIELD = re.compile(r"\s*([A-Za-z_]\w*)\s*")
_SIMPLE_META = re.compile(r"\s*_meta\.([a-z_]+)\s*")
_KEYWORDS = frozenset({"true", "false", "null", "in", "as", "break", "const", "continue", "else",
                       "for", "function", "if", "import", "let", "loop", "package", "namespace",
                       "return", "var", "void", "while"})


class Expression:
    """A compiled CEL expression, evaluated per record with ``evaluate(value, meta, i)``.

    ``fields`` are the record fields it names, ``uses_value`` and ``meta_fields`` say whether it
    reads ``_value`` and which ``_meta`` members. ``context`` and ``run`` are the two halves of
    ``evaluate`` for callers that build contexts their own way.
    """

    __slots__ = ("source", "_program", "fields", "uses_value", "meta_fields", "meta_map", "extensions",
                 "_meta_get", "_direct")

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
        self.meta_fields, self.meta_map = (), False
        if META in names:
            self.meta_fields, flat_source = _meta_plan(source)
            try:
                flat = _cel.compile(flat_source) if flat_source is not None else None
            except Exception:  # cannot happen for a same-shape rewrite; the map still works
                flat = None
            if flat is not None and META not in flat.variables():
                self._program = flat  # _meta.topic is read as the variable _meta_topic
            else:
                self.meta_map = True
        self._meta_get = tuple((m if self.meta_map else f"_meta_{m}", _META_GET[m]) for m in self.meta_fields)
        needs_ext = any(f in _EXT_SHORT for f in functions) or any(n in _EXT_NAMESPACES for n in names)
        self.extensions = _EXTENSIONS if needs_ext else None
        self._direct = _direct(source)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def context(self, value: Any, meta: Any = None, i: int = 0) -> Any:
        """The context for record ``i``: the fields it names, ``_value`` and ``_meta`` if used."""
        if type(value) is dict or isinstance(value, dict):
            ctx = {n: value[n] for n in self.fields if n in value}
        else:
            ctx = {}
        if self.uses_value:
            ctx[VALUE] = value
        if self._meta_get and meta is not None:
            if self.meta_map:
                ctx[META] = {name: get(meta, i) for name, get in self._meta_get}
            else:
                for name, get in self._meta_get:
                    ctx[name] = get(meta, i)
        if self.extensions is not None:
            return _cel.Context(ctx, self.extensions)
        return ctx

    @property
    def run_unchecked(self):
        """``run`` without the error translation: the library's own exceptions escape. For a
        caller's fast path that re-runs the records with ``evaluate`` after any exception."""
        return self._program.execute

    def run(self, context: Any) -> Any:
        """The value of the expression in ``context``; ``ExpressionError`` when it fails."""
        try:
            return self._program.execute(context)
        except Exception as exc:
            raise ExpressionError(self._explain(exc)) from None

    def evaluate(self, value: Any, meta: Any = None, i: int = 0) -> Any:
        """The value of the expression for record ``i``; ``ExpressionError`` when it fails."""
        direct = self._direct
        if direct is not None and meta is not None:
            return direct(value, meta, i)
        return self.run(self.context(value, meta, i))

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
        first = text.split(". ")[0]
        if text.startswith(("No such overload", "Unsupported operation")):
            return (f"{first[0].lower()}{first[1:]}: CEL never mixes types in arithmetic, so convert "
                    "with int(), double() or string() (e.g. double(amount) * 1.5)")
        return first


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


def _meta_plan(source: str) -> tuple[tuple, str | None]:
    """The ``_meta`` members the source reads, and the source with each ``_meta.member``
    spelled ``_meta_member`` (same length, so positions hold), or None when ``_meta`` is also
    used as a whole.

    Why: the bindings convert a Python dict into a CEL map at ~7 us a record, a plain
    variable at well under 1 us. An unknown member is an error now rather than on every record.
    """
    code = _STRINGS.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', source)
    used, spans, whole = [], [], False
    for match in _META_USE.finditer(code):
        member = match.group(2)
        if member is None:
            whole = True
            continue
        if member not in META_FIELDS:
            raise ExpressionSyntaxError(
                f"_meta has no {member!r} in {source!r}; it has {', '.join(META_FIELDS)}", source)
        used.append(member)
        if match.group(1) == "." + member:
            spans.append((match.start(), match.end()))
        else:
            whole = True  # "_meta . key": leave it to the map
    if whole:
        return META_FIELDS, None
    flat = list(source)
    for start, end in spans:
        flat[start:end] = list("_meta_" + source[start + 6:end])
    return tuple(m for m in META_FIELDS if m in used), "".join(flat)


def _direct(source: str):
    """A plain Python getter for an expression that only reads one field or one ``_meta``
    member (``amount``, ``_meta.topic``): the InsertField case, ~10x cheaper without CEL."""
    found = _SIMPLE_META.fullmatch(source)
    if found and found.group(1) in _META_GET:
        get = _META_GET[found.group(1)]
        return lambda value, meta, i: get(meta, i)
    found = _SIMPLE_FIELD.fullmatch(source)
    if found and found.group(1) not in _KEYWORDS and found.group(1) not in RESERVED:
        name = found.group(1)

        def field(value, meta, i):
            try:
                return value[name]
            except (KeyError, TypeError, IndexError):
                raise ExpressionError(f"no field {name!r} in the record (test with has(_value.{name}))") from None
        return field
    return None


_META_GET = {
    "key": lambda meta, i: meta.key(i),
    "headers": lambda meta, i: meta.headers(i),
    "header_list": lambda meta, i: meta.header_list(i),
    "timestamp": lambda meta, i: meta.timestamp(i),
    "topic": lambda meta, i: meta.topic,
    "partition": lambda meta, i: meta.partition,
    "offset": lambda meta, i: meta.offset(i),
}

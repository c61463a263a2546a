"""``parse: server``: PostgreSQL parses the JSON values, kpipe only sends their bytes.

The raw values go by COPY into a jsonb column of a temporary staging table, and one
``INSERT INTO target (...) SELECT ... FROM staging`` takes each column out of them, in the
transaction that moves the offsets. The statement lands what the client path would land, or
fails, never something else: every column's expression takes exactly the JSON types whose
value the client path writes the same way, and for any other value it raises a cast error
(``_unfit``), after which the sink writes the batch again through the client path, which then
decides: the value lands as client lands it, or the record is a bad record as it is today.

| column (kpipe type)           | taken on the server                 | anything else: client path |
|-------------------------------|-------------------------------------|----------------------------|
| bigint, integer, smallint     | a number, as its jsonb text          | 2.0, strings, booleans     |
| double                        | a number                            | strings, booleans          |
| boolean                       | true, false                         | numbers, strings           |
| text, varchar, uuid           | a string; true, false as text        | numbers, objects, arrays   |
| timestamp(tz), date           | a string (PostgreSQL parses it)      | epoch-millisecond numbers  |
| json (a jsonb column)         | any value                           |                            |
| numeric, real, bytes, a json column that is not jsonb, a column with a DEFAULT | never: the whole write goes the client path |

With ``columns: auto`` a record holding a field with no column yet (or a value that is not an
object) is not inserted by the statement; a row count short of the staged count sends the write
the client path, which adds the columns (from the values, as ever) and the next write is
parsed on the server again. A jsonb number keeps the digits the producer wrote (``1.50``),
where the client path's keeps a double's (``1.5``): the one difference, in json columns only.
jsonb has no negative zero either: a write whose values hold a ``-0`` number (``negative_zero``)
goes the client path when a double column could receive it, which keeps ``-0.0`` there.
"""
from __future__ import annotations

import re

from .columns import Column

__all__ = ["Plan", "plan", "copy_pieces", "negative_zero", "STAGE_VALUE"]

STAGE_VALUE = "kpipe_v"  # the staging table's jsonb column

_INTS = {"bigint", "integer", "smallint"}
_TEXTS = {"text", "character varying", "uuid"}
_TIMES = {"timestamp with time zone", "timestamp without time zone", "date"}
# kpipe type -> the PostgreSQL types (format_type) its server expression is exact for
_EXACT = {"bigint": _INTS, "integer": _INTS, "smallint": _INTS, "double": {"double precision"},
          "boolean": {"boolean"}, "text": _TEXTS, "varchar": _TEXTS, "uuid": _TEXTS,
          "timestamptz": _TIMES, "timestamp": _TIMES, "date": _TIMES, "json": {"jsonb"}}
_METADATA_PG = {"_topic": {"text"}, "_partition": {"integer"}, "_offset": {"bigint"},
                "_timestamp": {"timestamp with time zone"}, "_key": {"text"}}


_FEW_FIELDS = 16  # up to this many, jsonb - text[] finds a record's unknown keys fastest
_TYPMOD = re.compile(r"\(\d+(,\d+)?\)")  # varchar(255), timestamp(3) with time zone


class Plan:
    """The staging table and the INSERT ... SELECT for one set of columns (SQL text)."""

    def __init__(self, stage: str, create: str, copy: str, insert: str, meta: list[str], doubles: bool):
        self.stage = stage      # the staging table's name
        self.create = create    # CREATE TEMP TABLE IF NOT EXISTS ...
        self.copy = copy        # COPY stage (...) FROM STDIN
        self.insert = insert    # INSERT INTO target (...) SELECT ... FROM stage WHERE ...
        self.meta = meta        # the metadata columns staged beside the value, in order
        self.doubles = doubles  # a double column: a -0 number must take the client path


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _unfit(x: str, pg: str) -> str:
    """An expression of type ``pg`` that raises (invalid_text_representation) for any JSON
    value ``x`` and is NULL for SQL NULL (a field the record lacks): not a constant, so the
    planner cannot fold it into an error before a row needs it."""
    return f"('kpipe: unfit ' || {x}::text)::int::text::{pg}"


def _expression(col: Column, pg: str) -> str | None:
    """The SELECT expression for ``col`` (a record field) into a column of type ``pg``, or None
    when the server cannot be exact for it."""
    if _TYPMOD.sub("", pg) not in _EXACT.get(col.base, ()):
        return None
    # NULL past a non-object, as field_getter; in parentheses, since :: binds tighter than ->
    x = f"({STAGE_VALUE}->" + "->".join(map(_literal, col.path)) + ")"
    base = col.base
    if base == "json":
        return f"NULLIF({x}, 'null'::jsonb)"
    if base in _INTS or base == "double":
        return f"(NULLIF({x}, 'null'::jsonb)::text)::{pg}"  # "5", true, [] are no numbers: cast fails
    if base == "boolean":
        return (f"CASE jsonb_typeof({x}) WHEN 'boolean' THEN ({x}::text)::boolean WHEN 'null' THEN NULL "
                f"ELSE {_unfit(x, 'boolean')} END")
    if base in ("timestamptz", "timestamp", "date"):
        return (f"(CASE jsonb_typeof({x}) WHEN 'string' THEN {x} #>> '{{}}' WHEN 'null' THEN NULL "
                f"ELSE {_unfit(x, 'text')} END)::{pg}")
    # text, varchar, uuid: a string as it is, a boolean as true/false (the client path's text)
    text = (f"CASE jsonb_typeof({x}) WHEN 'string' THEN {x} #>> '{{}}' WHEN 'boolean' THEN {x}::text "
            f"WHEN 'null' THEN NULL ELSE {_unfit(x, 'text')} END")
    return f"({text})::uuid" if pg == "uuid" else text  # a varchar(n) too long fails on assignment


def plan(target: str, columns: list[Column], pg_types: dict, has_default: set, auto: bool) -> Plan | None:
    """The statements writing ``columns`` of ``target`` (quoted, maybe schema-qualified) from
    staged values, or None when the server cannot write one of them exactly as the client does.

    ``pg_types`` maps each column of the table to its ``format_type``; ``has_default`` names the
    columns with a DEFAULT, identity or generation expression; ``auto`` is ``columns: auto``,
    where the statement skips records with a field that has no column yet."""
    if not columns or has_default:
        return None  # the client path lists only the batch's fields: the others get their DEFAULT
    names, exprs, meta, fields = [], [], [], []
    for c in columns:
        pg = pg_types.get(c.name)
        if pg is None:
            return None
        if not c.path:  # a metadata column, staged as the client path's COPY text
            if pg not in _METADATA_PG[c.name]:
                return None
            exprs.append(f"m{len(meta)}" + ("" if pg == "text" else f"::{pg}"))
            meta.append(c.name)
        else:
            expr = _expression(c, pg)
            if expr is None:
                return None
            exprs.append(expr)
            if len(c.path) == 1:
                fields.append(c.path[0])
        names.append(_ident(c.name))
    stage = f"kpipe_parse_{len(meta)}"
    staged = [STAGE_VALUE] + [f"m{i}" for i in range(len(meta))]
    create = (f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({STAGE_VALUE} jsonb"
              + "".join(f", m{i} text" for i in range(len(meta))) + ") ON COMMIT DELETE ROWS")
    where = f"jsonb_typeof({STAGE_VALUE}) = 'object'"
    if auto:  # no field without a column: the client path adds those
        known = "ARRAY[" + ", ".join(map(_literal, fields)) + "]::text[]"
        if len(fields) <= _FEW_FIELDS:
            where += f" AND {STAGE_VALUE} - {known} = '{{}}'::jsonb"
        else:  # jsonb - text[] scans the array for each key: 205 us a row at 482 fields, this 62
            where += (f" AND NOT EXISTS (SELECT FROM jsonb_object_keys({STAGE_VALUE}) AS k "
                      f"WHERE k <> ALL ({known}))")
    insert = (f"INSERT INTO {target} ({', '.join(names)}) SELECT {', '.join(exprs)} FROM {stage} WHERE {where}")
    doubles = any(c.path and c.base == "double" for c in columns)
    return Plan(stage, create, f"COPY {stage} ({', '.join(staged)}) FROM STDIN", insert, meta, doubles)


# A JSON number equal to -0 (-0, -0.0, -0e5); a false alarm inside a string only costs a write
# through the client path. Searched from its literal "-0": about 0.1 us per 100-byte value.
_NEGATIVE_ZERO = re.compile(rb"-0(?:\.0*)?(?:[eE][-+]?[0-9]+)?(?![0-9.eE])")


def negative_zero(values: list[bytes]) -> bool:
    """Whether a value may hold the number -0, which jsonb stores as 0."""
    return any(map(_NEGATIVE_ZERO.search, values))


_ESCAPES = ((b"\\", b"\\\\"), (b"\n", b"\\n"), (b"\r", b"\\r"), (b"\t", b"\\t"))
_SEP = b"\xff"  # never in UTF-8, and the values were checked to be UTF-8 JSON


def _escaped(values: list[bytes]) -> bytes:
    """The values as COPY text fields separated by ``_SEP``: backslash, newline, carriage
    return and tab escaped (JSON may hold the last three as whitespace between tokens)."""
    text = _SEP.join(values)
    for raw, esc in _ESCAPES:
        if raw in text:
            text = text.replace(raw, esc)
    return text


def copy_pieces(values: list[bytes], meta: list[list[str]], piece_bytes: int) -> list[bytes]:
    """The COPY text of the staged rows (each value, then each metadata column's COPY text), in
    pieces of whole lines of about ``piece_bytes``."""
    n = len(values)
    size = sum(map(len, values[:64])) // min(n, 64) + 1 + 8 * len(meta)
    step = max(1, piece_bytes // size)
    pieces = []
    for lo in range(0, n, step):
        text = _escaped(values[lo:lo + step])
        if meta:
            fields = text.split(_SEP)
            cols = ["\n".join(m[lo:lo + step]).encode().split(b"\n") for m in meta]
            pieces.append(b"\n".join(map(b"\t".join, zip(fields, *cols))) + b"\n")
        else:
            pieces.append(text.replace(_SEP, b"\n") + b"\n")
    return pieces

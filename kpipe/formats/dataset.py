"""One schema per dataset: the column types every file of a sink's output carries.

A type is a kpipe type name, the vocabulary the SQL sinks' ``columns:`` use (``bigint``,
``integer``, ``smallint``, ``double``, ``real``, ``numeric(p,s)``, ``boolean``, ``text``,
``varchar(n)``, ``json``, ``timestamp``, ``timestamptz``, ``date``, ``bytes``, ``uuid``), or
``null`` (no value has given the column a type yet), or ``{"struct": {name: type}}`` or
``{"list": type}``. A schema is an ordered ``{column: type}``; it is plain JSON, so a sink keeps
it in its state, and it holds no pyarrow object (``arrowtypes`` maps it to Arrow).

Declared types come first (``declared``): the value deserializer's Avro schema, else the spec's
JSON Schema, then the sink's ``columns:``. Other columns are inferred from the records and only
ever widened (``widen``): a new field adds a column, ``null`` takes the first type a value
gives, an integer column becomes ``double`` when a fraction arrives, a struct gains fields. A
value that fits none of that is left to the writer, which reports it as a bad record.
"""
from __future__ import annotations

import datetime as dt
import decimal
import uuid
from itertools import chain, repeat

from .batchcols import share, take

__all__ = ["declared", "parse_columns", "widen", "merge_declared", "kind_of", "type_depth",
           "NUMERIC_ORDER", "SchemaConflict", "MAX_DEPTH", "column_kind"]

MAX_DEPTH = 99
"""Deepest type (struct one level, list two) a column may take: Parquet readers refuse schemas
deeper than 100 levels with the root, so a deeper value stays a bad record instead."""

NUMERIC_ORDER = {"smallint": 0, "integer": 1, "bigint": 2, "real": 2, "double": 3}
"""Integer and float types by width: a column moves up this order only (``real`` and ``bigint``
meet at ``double``)."""

_SIMPLE = {"bigint", "integer", "smallint", "double", "real", "boolean", "text", "json", "timestamp",
           "timestamptz", "date", "time", "bytes", "uuid"}


_MIXED = "mixed"  # values that agree on no type; stored as text (never kept in a schema)


class SchemaConflict(ValueError):
    """Two declared types of one column cannot be reconciled by widening."""


# -- declared types ------------------------------------------------------------------------

_AVRO = {"long": "bigint", "int": "integer", "double": "double", "float": "real", "boolean": "boolean",
         "string": "text", "bytes": "bytes", "enum": "text", "fixed": "bytes"}
_AVRO_LOGICAL = {"timestamp-millis": "timestamptz", "timestamp-micros": "timestamptz", "date": "date",
                 "uuid": "uuid", "local-timestamp-millis": "timestamp", "local-timestamp-micros": "timestamp",
                 "time-millis": "time", "time-micros": "time"}
_JSON = {"integer": "bigint", "number": "double", "boolean": "boolean", "string": "text"}
_JSON_FORMATS = {"date-time": "timestamptz", "date": "date", "uuid": "uuid"}


def _nullable(t):
    """The one type of a nullable union (Avro ``["null", X]``, JSON Schema ``["X", "null"]``), or
    None for a wider union; ``t`` itself when it is no union."""
    if not isinstance(t, list):
        return t
    rest = [x for x in t if x != "null"]
    return rest[0] if len(rest) == 1 else None


def _fullname(name: str, namespace: str) -> str:
    """Avro's fullname: a name with a dot is one already; else the namespace, if any, before it."""
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _avro_type(t, named: dict, namespace: str = ""):
    """The kpipe type of Avro type ``t``. Named types are kept in ``named`` by fullname, by the
    spec's rules: a record, enum or fixed takes a dotted name as it is, else its ``namespace``,
    else the enclosing one's; an unqualified reference means the enclosing namespace (then the
    null one, as Java's parser allows). fastavro's parsed schemas hold fullnames throughout."""
    if isinstance(t, list):  # anything wider than a nullable type is JSON text
        one = _nullable(t)
        return "json" if one is None else _avro_type(one, named, namespace)
    if isinstance(t, str):
        found = _AVRO.get(t) or named.get(_fullname(t, namespace))
        return found or named.get(t, "json")
    if not isinstance(t, dict):
        return "json"
    kind = t.get("type")
    full = None
    if kind in ("record", "error", "enum", "fixed") and isinstance(t.get("name"), str):
        ns = t.get("namespace")
        full = _fullname(t["name"], ns if isinstance(ns, str) else namespace)
        namespace = full.rpartition(".")[0]  # what names inside it are relative to
    logical = t.get("logicalType")
    if logical == "decimal":
        found = f"numeric({int(t.get('precision', 38))},{int(t.get('scale', 0))})"
    elif logical in _AVRO_LOGICAL:
        found = _AVRO_LOGICAL[logical]
    elif kind in ("record", "error"):
        if full is not None:
            named[full] = "json"  # a record that contains itself: no column type is infinite, JSON text
        found = {"struct": {f["name"]: _avro_type(f.get("type"), named, namespace) for f in t.get("fields") or ()}}
    elif kind == "array":
        found = {"list": _avro_type(t.get("items"), named, namespace)}
    elif kind == "map":
        found = "json"
    else:
        found = _AVRO.get(kind) if isinstance(kind, str) else None
        found = found or _avro_type(kind, named, namespace)
    if full is not None:
        named[full] = found
    return found


def _json_type(prop):
    t = _nullable(prop.get("type")) if isinstance(prop, dict) else None
    if t == "string" and prop.get("format") in _JSON_FORMATS:
        return _JSON_FORMATS[prop["format"]]
    if t == "object" and isinstance(prop.get("properties"), dict) and prop.get("additionalProperties") is False:
        return {"struct": {k: _json_type(v) for k, v in prop["properties"].items()}}
    if t == "array" and isinstance(prop.get("items"), dict):
        return {"list": _json_type(prop["items"])}
    return _JSON.get(t, "json")  # an open object, a mixed type: JSON text holds any value


def parse_columns(columns) -> dict:
    """The sink's ``columns:`` mapping (``name: type`` or ``name: {type: ...}``) as a schema.
    Raises ``ValueError`` naming an unknown type."""
    out = {}
    for name, spec in (columns or {}).items():
        t = spec.get("type") if isinstance(spec, dict) else spec
        base = str(t).split("(", 1)[0].strip()
        if base in ("varchar",):
            t = "text"
        elif base == "numeric":
            args = str(t)[len("numeric"):].strip("() ").split(",")
            try:
                p = int(args[0]) if args[0] else 38
                s = int(args[1]) if len(args) > 1 else 0
            except ValueError:
                raise ValueError(f"columns: {name}: bad numeric type {t!r}; write numeric(precision,scale)") from None
            if not (1 <= p <= 76 and 0 <= s <= p):
                raise ValueError(f"columns: {name}: numeric({p},{s}) needs 1 <= precision <= 76 and "
                                 f"0 <= scale <= precision")
            t = f"numeric({p},{s})"
        elif t not in _SIMPLE:
            raise ValueError(f"columns: {name}: unknown type {t!r}; use one of "
                             f"{', '.join(sorted(_SIMPLE | {'varchar(n)', 'numeric(p,s)'}))}")
        out[name] = t
    return out


def declared(value_schema, columns: dict) -> dict:
    """The declared schema: the deserializer's Avro record schema or the spec's JSON Schema
    (``value_schema``, whichever the runner hands the sink), then ``columns`` for the fields
    neither declares."""
    out: dict = {}
    if isinstance(value_schema, dict):
        if value_schema.get("type") == "record" and isinstance(value_schema.get("fields"), list):
            out = _avro_type(value_schema, {})["struct"]
        elif isinstance(value_schema.get("properties"), dict):
            out = {k: _json_type(v) for k, v in value_schema["properties"].items()}
    for name, t in columns.items():
        out.setdefault(name, t)
    return out


# -- inference -----------------------------------------------------------------------------


def kind_of(value):
    """The type a single value would give a column (``null`` for None), or None for a value no
    type holds (the writer reports it)."""
    t = type(value)
    if value is None:
        return "null"
    if t is bool:
        return "boolean"
    if t is int:  # past 64 bits only text holds it exactly
        return "bigint" if -(1 << 63) <= value < (1 << 63) else "text"
    if t is float:
        return "double"
    if t is str:
        return "text"
    if t is dict:
        if not all(map(_storable, value)):
            return None  # a field name no file (nor the state) can hold
        fields = {k: kind_of(v) for k, v in value.items()}
        return None if None in fields.values() else {"struct": fields}
    if t is list or t is tuple:
        item = "null"
        for x in value:
            kind = kind_of(x)
            if kind is None:
                return None
            item = _join(item, kind)
        return {"list": item}
    if t is bytes or t is bytearray:
        return "bytes"
    if t is dt.datetime:
        return "timestamp" if value.tzinfo is None else "timestamptz"
    if t is dt.date:
        return "date"
    if t is dt.time:
        return "time"
    if t is decimal.Decimal:
        exp = value.as_tuple().exponent
        return f"numeric(38,{max(0, -exp)})" if isinstance(exp, int) and -exp <= 38 else None
    if t is uuid.UUID:
        return "uuid"
    return None


def _join(have, new):
    """``have`` widened to also hold ``new``, or ``have`` unchanged when it cannot be (the value
    that brought ``new`` is then a bad record). None stands for a value no type holds.

    Scalars of different kinds meet at ``text`` (strings as they are, other values as exact JSON
    text; a reader casts the files that hold the old scalar type to text); numbers meet at the
    wider number, decimals at the larger scale. A struct or list meets anything else only in a
    new column (as text); once files hold it, ``widen`` keeps it: no reader casts it to text."""
    if new is None or new == "null" or have == new:
        return have
    if have == "null" or have is None:
        return new
    if have == "json" or have == _MIXED:
        return have
    if isinstance(have, dict):
        if isinstance(new, dict) and "struct" in have and "struct" in new:
            fields = dict(have["struct"])
            for k, t in new["struct"].items():
                fields[k] = _join(fields.get(k, "null"), t)
            return {"struct": fields} if fields != have["struct"] else have
        if isinstance(new, dict) and "list" in have and "list" in new:
            item = _join(have["list"], new["list"])
            return have if item == have["list"] else {"list": item}
        return _MIXED  # only for a new column: widen keeps a stored nested type (_castable)
    if isinstance(new, dict) or new == _MIXED:
        return _MIXED
    if have in NUMERIC_ORDER and new in NUMERIC_ORDER:
        if "double" in (have, new) or {have, new} == {"bigint", "real"}:
            return "double"
        return have if NUMERIC_ORDER[have] >= NUMERIC_ORDER[new] else new
    if have.startswith("numeric(") and new.startswith("numeric("):
        (p1, s1), (p2, s2) = (map(int, t[len("numeric("):-1].split(",")) for t in (have, new))
        s = max(s1, s2)
        p = min(76, max(p1 - s1, p2 - s2) + s)
        if p > 38 >= max(p1, p2):
            # Stay a decimal128: DuckDB reads a wider decimal as a double and Spark not at all.
            # A value with more integer digits than 38 - s leaves is then a bad record.
            p = 38
        return f"numeric({p},{s})"
    return _MIXED


def type_depth(t) -> int:
    """Parquet schema levels of a column of type ``t``: a struct one, a list two, a leaf one."""
    if isinstance(t, dict):
        if "struct" in t:
            return 1 + max(map(type_depth, t["struct"].values()), default=0)
        return 2 + type_depth(t["list"])
    return 1


def widen(schema: dict, values: list, fixed=frozenset()) -> tuple[dict, list]:
    """``schema`` widened to hold ``values`` (records; a non-object is a ``value`` field), and
    the widenings of an existing type as ``[(column path, from, to)]``. Columns in ``fixed`` (the
    declared ones) never change."""
    out = dict(schema)
    cols = take(values)  # an earlier widen of this batch may have worked its columns out
    for k in cols.names:
        if k in fixed:
            continue
        have = out.get(k)
        if have is None and not _storable(k):
            continue  # the writer reports the record: no file can name such a column
        col = cols.col(k)
        try:  # the whole column at once (type sets, in C); value by value only when it needs to
            new = cols.kind(k)
            if new is not None:
                joined = _join(have if have is not None else "null", new)
                if type_depth(joined) > MAX_DEPTH:
                    new = None
        except RecursionError:
            new = None
        if new is not None:
            out[k] = joined
            continue
        for x in col:  # some value has no type: leave it out, so the writer reports that record
            _widen_value(out, k, x)
    share(cols)  # for the writer of this batch
    for k, t in out.items():
        if k not in schema or schema[k] == "null":
            t = out[k] = _settle(t)
        t = out[k] = _unmix(t)
        if k in schema and not _castable(schema[k], t):
            out[k] = schema[k]  # files hold the nested type: the value that disagrees is a bad record
    return out, list(_widenings(schema, out, ""))


def _widen_value(out: dict, k, x) -> None:
    have = out.get(k)
    try:
        new = kind_of(x)
    except RecursionError:
        new = None  # deeper than any reader opens: the writer reports it
    if new is None or new == "null" or new == have:
        if have is None:
            out[k] = "null"
        return
    try:
        joined = _join(have if have is not None else "null", new)
        fits = type_depth(joined) <= MAX_DEPTH
    except RecursionError:
        fits = False
    if fits:
        out[k] = joined
    elif have is None:
        out[k] = "null"


_SCALAR_KINDS = {bool: "boolean", float: "double", str: "text", bytes: "bytes", bytearray: "bytes",
                 dt.date: "date", dt.time: "time", uuid.UUID: "uuid"}


def column_kind(col: list):
    """``kind_of`` every value of ``col``, joined, from the set of their types; None when some
    value has no type (the caller then goes value by value)."""
    kind = "null"
    types = set(map(type, col))
    types.discard(_NONE)
    for t in sorted(types, key=lambda t: t.__name__):
        k = _SCALAR_KINDS.get(t)
        if k is not None:
            pass
        elif t is int:
            ints = _only(col, t, types)
            k = "bigint" if not ints or (-(1 << 63) <= min(ints) and max(ints) < (1 << 63)) else _MIXED
        elif t is dict:
            objs = _only(col, t, types)
            names = dict.fromkeys(chain.from_iterable(objs))
            if not all(map(_storable, names)):
                return None
            fields = {n: column_kind(list(map(dict.get, objs, repeat(n)))) for n in names}
            if None in fields.values():
                return None
            k = {"struct": fields}
        elif t is list or t is tuple:
            k = {"list": column_kind(list(chain.from_iterable(_only(col, t, types))))}
            if k["list"] is None:
                return None
        else:  # datetimes (a zone or not), decimals (their scale), anything else: one by one
            for v in col:
                if type(v) is t:
                    k = kind_of(v)
                    if k is None:
                        return None
                    kind = _join(kind, k)
            continue
        kind = _join(kind, k)
    return kind


_NONE = type(None)


def _only(col: list, t, types: set) -> list:
    """The values of ``col`` of type ``t``, for a min/max, field names or items: where ``t`` is
    its only type, ``filter`` (in C) drops the nulls, and the falsy values it drops too (0, {},
    []) change none of those."""
    if len(types) == 1:
        return list(filter(None, col))
    return [v for v in col if type(v) is t]


def _castable(old, new) -> bool:
    """Files of type ``old`` read as type ``new`` without a loss (a reader's cast)."""
    if old == new or old == "null":
        return True
    if isinstance(old, dict) or isinstance(new, dict):
        if not (isinstance(old, dict) and isinstance(new, dict)):
            return False
        if "struct" in old and "struct" in new:
            return all(k in new["struct"] and _castable(t, new["struct"][k]) for k, t in old["struct"].items())
        return "list" in old and "list" in new and _castable(old["list"], new["list"])
    return new == "text" or _join(old, new) == new


def _storable(name) -> bool:
    if type(name) is not str:
        return False
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _settle(t):
    """A new column's type as it is first stored: a nested type whose values did not agree
    somewhere inside (a leaf that became ``text``), or that holds a struct with no field yet
    (only ``{}`` seen; Parquet has no struct without fields), is ``text`` as a whole: each value
    one exact JSON text."""
    return "text" if _unsettled(t) else t


def _unsettled(t) -> bool:
    if isinstance(t, dict):
        if "struct" in t:
            return not t["struct"] or any(map(_unsettled, t["struct"].values()))
        return _unsettled(t["list"])
    return t == _MIXED


def _unmix(t):
    if isinstance(t, dict):
        if "struct" in t:
            return {"struct": {k: _unmix(v) for k, v in t["struct"].items()}}
        return {"list": _unmix(t["list"])}
    return "text" if t == _MIXED else t


def _widenings(old: dict, new: dict, path: str):
    for k, t in old.items():
        n = new.get(k, t)
        where = f"{path}{k}"
        if isinstance(t, dict) and isinstance(n, dict):
            if "struct" in t and "struct" in n:
                yield from _widenings(t["struct"], n["struct"], where + ".")
            elif "list" in t and "list" in n:
                yield from _widenings({"[]": t["list"]}, {"[]": n["list"]}, where)
        elif t != n and t != "null":
            yield where, t, n


def merge_declared(schema: dict, declared_types: dict) -> dict:
    """``schema`` (what the dataset's files hold) with the declared types in force. A declared
    type may widen what is there (``null`` to anything, a narrower number to a wider one, a
    struct that gains fields); any other change raises ``SchemaConflict``: files already hold
    the old type."""
    out = dict(schema)
    for k, t in declared_types.items():
        have = out.get(k)
        if have is None or have == t:
            out[k] = t
            continue
        joined = _join(have, t)
        if not _covers(joined, t):
            raise SchemaConflict(f"column {k!r}: declared as {_show(t)}, but the dataset's files already hold "
                                 f"{_show(have)}; a declared type may only widen (write to a new path to change it)")
        out[k] = joined  # a field the declaration dropped stays: files hold it
    return out


def _covers(a, b) -> bool:
    """Type ``a`` holds every value of type ``b``."""
    if a == b or b == "null":
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        if "struct" in a and "struct" in b:
            return all(k in a["struct"] and _covers(a["struct"][k], t) for k, t in b["struct"].items())
        return "list" in a and "list" in b and _covers(a["list"], b["list"])
    return isinstance(a, str) and isinstance(b, str) and a in NUMERIC_ORDER and b in NUMERIC_ORDER \
        and _join(a, b) == a


def _show(t) -> str:
    if isinstance(t, dict):
        if "struct" in t:
            return "struct<" + ", ".join(f"{k}: {_show(v)}" for k, v in t["struct"].items()) + ">"
        return f"list<{_show(t['list'])}>"
    return t

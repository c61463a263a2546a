"""A dataset schema (``kpipe.formats.dataset``) as Arrow types, and record values into them.

Each type takes exactly the values it can hold without a change, else ``Unfit(index)`` names the
first record that does not fit (the writer turns it into a bad record):

- ``bigint``/``integer``/``smallint``: integers in range (a float with no fraction too, as JSON
  Schema's ``integer`` allows ``3.0``); ``double``/``real``: numbers, an integer only when the
  double holds it exactly; ``boolean``: booleans; ``bytes``: bytes; ``text``: strings as they
  are, any other value as exact JSON text (what the SQL sinks' text does with a mixed column);
- ``json``: any value, as exact JSON text (``jsontext.dumps``); ``uuid``: a UUID or its text,
  written as canonical text;
- ``numeric(p,s)``: decimals, integers and finite floats (by their shortest text) that need no
  rounding to scale ``s`` and fit ``p`` digits;
- ``timestamptz`` (UTC, microseconds): aware datetimes, ISO-8601 text with a zone, epoch
  milliseconds; ``timestamp``: the same without a zone; ``date``: dates and ISO-8601 dates;
- structs: objects whose keys the struct has; lists: lists.
"""
from __future__ import annotations

import datetime as dt
import decimal
import uuid
from bisect import bisect_right
from itertools import chain

from .jsontext import dumps

__all__ = ["arrow_type", "arrow_schema", "dataset_type", "dataset_schema", "to_array", "fit_value", "Unfit",
           "has_empty_struct", "direct"]

_NONE = type(None)
_INT_RANGE = {"bigint": 63, "integer": 31, "smallint": 15}
_FLOAT_EXACT = 2 ** 53


class Unfit(ValueError):
    """Value ``index`` of the column does not fit its type."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


def arrow_type(pa, t):
    if isinstance(t, dict):
        if "struct" in t:
            return pa.struct([pa.field(k, arrow_type(pa, v)) for k, v in t["struct"].items()])
        return pa.list_(arrow_type(pa, t["list"]))
    if t.startswith("numeric("):
        p, s = (int(x) for x in t[len("numeric("):-1].split(","))
        return pa.decimal128(p, s) if p <= 38 else pa.decimal256(p, s)
    return {
        "null": pa.null(), "boolean": pa.bool_(), "bigint": pa.int64(), "integer": pa.int32(),
        "smallint": pa.int16(), "double": pa.float64(), "real": pa.float32(), "text": pa.string(),
        "json": pa.string(), "uuid": pa.string(), "bytes": pa.binary(), "date": pa.date32(), "time": pa.time64("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"), "timestamp": pa.timestamp("us"),
    }[t]


def arrow_schema(pa, schema: dict):
    """The Arrow schema of ``schema``'s columns (a column with no type yet has Arrow's null type)."""
    return pa.schema([pa.field(k, arrow_type(pa, t)) for k, t in schema.items()])


_SIMPLE = (("is_int64", "bigint"), ("is_int32", "integer"), ("is_int16", "smallint"), ("is_int8", "smallint"),
           ("is_float64", "double"), ("is_float32", "real"), ("is_boolean", "boolean"), ("is_date32", "date"),
           ("is_time64", "time"), ("is_binary", "bytes"), ("is_large_binary", "bytes"),
           ("is_fixed_size_binary", "bytes"))


def dataset_type(pa, t):
    """The dataset type of Arrow type ``t``, as a table (Delta, Iceberg) reports its column: the
    inverse of ``arrow_type``; any other type (string, string_view, large_string, Iceberg's uuid)
    is ``text``."""
    if pa.types.is_struct(t):
        return {"struct": {t.field(i).name: dataset_type(pa, t.field(i).type) for i in range(t.num_fields)}}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"list": dataset_type(pa, t.value_type)}
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    for test, name in _SIMPLE:
        if getattr(pa.types, test)(t):
            return name
    return "text"


def dataset_schema(pa, schema) -> dict:
    """The dataset schema (column: type) of an Arrow schema."""
    return {f.name: dataset_type(pa, f.type) for f in schema}


def has_empty_struct(t) -> bool:
    if isinstance(t, dict):
        if "struct" in t:
            return not t["struct"] or any(map(has_empty_struct, t["struct"].values()))
        return has_empty_struct(t["list"])
    return False


_DIRECT = {"bigint", "double", "boolean", "text", "bytes", "timestamptz", "timestamp", "date"}


def direct(kind, t) -> bool:
    """pyarrow's own conversion of values of ``dataset`` kind ``kind`` to type ``t`` changes
    none of them: the kinds match leaf for leaf, a struct's values have no field it lacks, and
    the leaf is one pyarrow converts as these rules do (an integer a double would round raises
    in pyarrow too). Kinds come from exact Python types, so a boolean among floats or text among
    bytes (which pyarrow would coerce) never matches."""
    if kind == "null":
        return True
    if isinstance(t, dict):
        if not isinstance(kind, dict):
            return False
        if "struct" in t:
            fields = t["struct"]
            return "struct" in kind and bool(fields) and all(
                k in fields and direct(v, fields[k]) for k, v in kind["struct"].items())
        return "list" in kind and direct(kind["list"], t["list"])
    return kind == t and t in _DIRECT


def to_array(pa, col: list, t):
    """``col`` (values, None for null) as an Arrow array of type ``t``; ``Unfit`` otherwise."""
    return pa.array(_values(pa, col, t), arrow_type(pa, t)) if not isinstance(t, dict) else _nested(pa, col, t)


def _first(col, ok) -> int:
    return next(i for i, v in enumerate(col) if v is not None and not ok(v))


def _values(pa, col: list, t) -> list:
    """``col`` as Python values pyarrow converts to ``t`` without a change."""
    kinds = set(map(type, col))
    kinds.discard(_NONE)
    if not kinds:
        return col
    if t == "null":
        raise Unfit("a value no column type holds (nesting deeper than readers open, a type no format "
                    "writes); declare the column json to keep such values", _first(col, lambda v: False))
    if t in _INT_RANGE:
        bits = _INT_RANGE[t]
        if kinds - {int, float}:
            i = _first(col, lambda v: type(v) in (int, float))
            raise Unfit(f"{_what(col[i])} in a {t} column", i)
        if float in kinds:
            col = [int(v) if type(v) is float and v.is_integer() else v for v in col]
        ints = [v for v in col if type(v) is int]
        if len(ints) + col.count(None) < len(col) or (ints and not (-(1 << bits) <= min(ints)
                                                                    and max(ints) < (1 << bits))):
            for i, v in enumerate(col):
                if v is not None and (type(v) is not int or not -(1 << bits) <= v < (1 << bits)):
                    raise Unfit(f"{v!r} does not fit a {t} column", i)
        return col
    if t in ("double", "real"):
        if kinds - {int, float}:
            i = _first(col, lambda v: type(v) in (int, float))
            raise Unfit(f"{_what(col[i])} in a {t} column", i)
        if int in kinds:
            big = False
            for i, v in enumerate(col):
                if type(v) is int and not -_FLOAT_EXACT <= v <= _FLOAT_EXACT:
                    try:
                        exact = float(v) == v
                    except OverflowError:  # past a double's range
                        exact = False
                    if not exact:
                        raise Unfit(f"the integer {v} in a {t} column: a double would round it", i)
                    big = True
            if big:  # pyarrow refuses an integer past 2**53 even where a double holds it exactly
                col = [float(v) if type(v) is int else v for v in col]
        return col
    if t == "text" and kinds != {str}:  # text holds any value: strings as they are, others as JSON text
        try:
            col = [v if v is None or type(v) is str else _json(v) for v in col]
        except (TypeError, ValueError, RecursionError):
            for i, v in enumerate(col):
                try:
                    if v is not None and type(v) is not str:
                        _json(v)
                except (TypeError, ValueError, RecursionError) as exc:
                    raise Unfit(f"{_what(v)} in a text column: {exc}", i) from None
            raise
        kinds = {str}
    simple = {"boolean": (bool,), "text": (str,), "bytes": (bytes, bytearray)}.get(t)
    if simple is not None:
        if kinds - set(simple):
            i = _first(col, lambda v: type(v) in simple)
            raise Unfit(f"{_what(col[i])} in a {t} column", i)
        if t == "text":
            try:
                "".join([v for v in col if v is not None]).encode()  # one C pass
            except UnicodeEncodeError:
                for i, v in enumerate(col):
                    try:
                        if v is not None:
                            v.encode()
                    except UnicodeEncodeError:
                        raise Unfit("text that is not valid UTF-8 (a lone surrogate)", i) from None
        return col
    convert = _CONVERTERS.get(t) or (_decimal_converter(t) if t.startswith("numeric(") else None)
    out = []
    for i, v in enumerate(col):
        try:
            out.append(None if v is None else convert(v))
        except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            raise Unfit(f"{_what(v)} in a {t} column: {exc}", i) from None
    return out


def fit_value(v, t):
    """One value (not None) fitted to a scalar type ``t`` by the same rules; ``Unfit`` otherwise."""
    return _values(None, [v], t)[0]


def _what(v) -> str:
    if type(v) in (dict, list, tuple):
        return type(v).__name__  # no repr: it may be deeper than the stack
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _json(v) -> str:
    text = dumps(v).decode()
    text.encode()  # a lone surrogate: UnicodeEncodeError, a ValueError
    return text


def _uuid(v) -> str:
    if type(v) is uuid.UUID:
        return str(v)
    if type(v) is str:
        return str(uuid.UUID(v))
    raise TypeError("not a UUID")


def _timestamp(aware: bool):
    def convert(v):
        if type(v) is str:
            v = dt.datetime.fromisoformat(v.replace("Z", "+00:00") if v.endswith(("Z", "z")) else v)
        elif type(v) is int:
            v = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=v)
            return v if aware else v.replace(tzinfo=None)
        if type(v) is not dt.datetime:
            raise TypeError("not a timestamp")
        if (v.tzinfo is not None) != aware:
            raise ValueError("a time zone is required" if aware else "a timestamp without a zone is required")
        return v
    return convert


def _date(v):
    if type(v) is str:
        return dt.date.fromisoformat(v)
    if type(v) is not dt.date:
        raise TypeError("not a date")
    return v


def _decimal_converter(t: str):
    p, s = (int(x) for x in t[len("numeric("):-1].split(","))
    quantum = decimal.Decimal(1).scaleb(-s)
    exact = decimal.Context(prec=p + 80)

    def convert(v):
        if type(v) is float:
            v = decimal.Decimal(repr(v))
        elif type(v) is int or type(v) is str:
            v = decimal.Decimal(v)
        elif type(v) is not decimal.Decimal:
            raise TypeError("not a number")
        if not v.is_finite():
            raise ValueError("not finite")
        if v and v.adjusted() + 1 > p - s:
            raise ValueError(f"more than {p - s} digits before the point")
        q = v.quantize(quantum, context=exact)
        if q != v:
            raise ValueError(f"needs rounding to scale {s}")
        return q
    return convert


def _time(v):
    if type(v) is str:
        v = dt.time.fromisoformat(v)
    if type(v) is not dt.time or v.tzinfo is not None:
        raise TypeError("not a time of day without a zone")
    return v


_CONVERTERS = {"json": _json, "uuid": _uuid, "timestamptz": _timestamp(True), "timestamp": _timestamp(False),
               "date": _date, "time": _time}


def _report_struct(col: list, fields: dict) -> None:
    """Raise ``Unfit`` at the first value that is not an object of ``fields``."""
    for i, v in enumerate(col):
        if v is not None and (type(v) is not dict or not fields.keys() >= v.keys()):
            if type(v) is dict:
                raise Unfit(f"an object with a field the struct has no column for "
                            f"({sorted(set(v) - set(fields))[0]!r})", i)
            raise Unfit(f"{_what(v)} in a struct column", i)


def _nested(pa, col: list, t):
    typ = arrow_type(pa, t)
    if "struct" in t:
        fields = t["struct"]
        objs = [v for v in col if type(v) is dict]
        keys = dict.fromkeys(chain.from_iterable(objs)).keys()
        if len(objs) + col.count(None) < len(col) or not fields.keys() >= keys:
            _report_struct(col, fields)
        if not fields:
            if any(v is not None for v in col):
                raise Unfit("an empty object {} where no field has a type (Parquet has no struct without "
                            "fields; declare the column json)", _first(col, lambda v: False))
            return pa.nulls(len(col), typ)
        children = [to_array(pa, [None if v is None else v.get(k) for v in col], ft) for k, ft in fields.items()]
        mask = pa.array([v is None for v in col], pa.bool_())
        return pa.StructArray.from_arrays(children, fields=list(typ), mask=mask)
    offsets, items, nulls = [0], [], []
    for i, v in enumerate(col):
        if v is None:
            nulls.append(True)
        elif type(v) is list or type(v) is tuple:
            items.extend(v)
            nulls.append(False)
        else:
            raise Unfit(f"{_what(v)} in a list column", i)
        offsets.append(len(items))
    try:
        values = to_array(pa, items, t["list"])
    except Unfit as exc:  # an item's index -> its record's
        raise Unfit(str(exc), bisect_right(offsets, exc.index) - 1) from None
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=typ,
                                    mask=pa.array(nulls, pa.bool_()))

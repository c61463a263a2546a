"""Turning a batch into rows: COPY text lines for PostgreSQL, parameter dicts for the rest."""
from __future__ import annotations

import datetime as dt
import decimal
import uuid
from functools import lru_cache
from itertools import repeat

import orjson

from kpipe.api import BadRecordError, Batch

from .columns import Column, field_getter, parse_timestamp

__all__ = ["coerce_key", "copy_text", "copy_text_lines", "param_rows", "metadata_values"]

_UTC = dt.timezone.utc


def _esc(s: str) -> str:
    # COPY text format: backslash, tab, newline and carriage return must be escaped.
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
        return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return s


def _json_text(v) -> str:
    return orjson.dumps(v).decode()


def _c_text(v):
    t = type(v)
    if t is str:
        return _esc(v)
    if v is None:
        return "\\N"
    if t is bool:
        return "true" if v else "false"
    if t is int or t is float:
        return repr(v)
    if t is uuid.UUID:  # Avro's uuid logical type
        return str(v)
    return _esc(_json_text(v))


def _c_number(v):
    t = type(v)
    if t is int or t is float:
        return repr(v)
    if v is None:
        return "\\N"
    if t is str:
        return _esc(v)
    if t is decimal.Decimal:  # Avro's decimal logical type, exact
        return str(v)
    return _esc(_json_text(v))  # PostgreSQL rejects it: a data error, as it should be


def _c_bool(v):
    if v is True:
        return "t"
    if v is False:
        return "f"
    return _c_number(v)


def _c_json(v):
    return "\\N" if v is None else _esc(_json_text(v))


def _c_time(v):
    t = type(v)
    if t is str:
        return _esc(v)
    if v is None:
        return "\\N"
    if (t is int or t is float):
        return _ms_text(v)
    return _esc(str(v))


def _c_bytes(v):
    if v is None:
        return "\\N"
    if isinstance(v, (bytes, bytearray)):
        return "\\\\x" + bytes(v).hex()
    return _c_text(v)


_CONVERTERS = {"text": _c_text, "varchar": _c_text, "uuid": _c_text, "bigint": _c_number,
               "integer": _c_number, "smallint": _c_number, "double": _c_number, "real": _c_number,
               "numeric": _c_number, "boolean": _c_bool, "json": _c_json, "timestamp": _c_time,
               "timestamptz": _c_time, "date": _c_time, "bytes": _c_bytes}


@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=_UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ms_text(ms) -> str:
    ms = int(ms)
    return f"{_second_text(ms // 1000)}.{ms % 1000:03d}+00"


def _key_text(key) -> str | None:
    """Raw key bytes as UTF-8 text; a deserialized key (key_deserializer) as text or JSON."""
    if key is None or type(key) is str:
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", "backslashreplace")
    return orjson.dumps(key, default=str).decode()


def metadata_values(batch: Batch, name: str) -> list:
    """The per-record values of one metadata column, as Python values."""
    n = len(batch.values)
    if name == "_topic":
        return [batch.topic] * n
    if name == "_partition":
        return [batch.partition] * n
    if name == "_offset":
        return batch.offsets
    if name == "_timestamp":
        return [None if ts is None else dt.datetime.fromtimestamp(ts / 1000, tz=_UTC) for ts in batch.timestamps]
    if name == "_key":
        return [_key_text(k) for k in batch.keys]
    raise ValueError(name)


def _metadata_text(batch: Batch, name: str) -> list[str]:
    n = len(batch.values)
    if name == "_topic":
        return [_esc(batch.topic)] * n
    if name == "_partition":
        return [str(batch.partition)] * n
    if name == "_offset":
        return [str(o) for o in batch.offsets]
    if name == "_timestamp":
        return ["\\N" if ts is None else _ms_text(ts) for ts in batch.timestamps]
    return [_c_text(v) for v in metadata_values(batch, name)]


def _require_objects(batch: Batch) -> None:
    values = batch.values
    if not values or (type(values[0]) is dict and set(map(type, values)) == _DICT_ONLY):
        return
    for i, r in enumerate(values):
        if type(r) is not dict:
            what = "a tombstone (null value)" if r is None else f"a {type(r).__name__}"
            raise BadRecordError(f"expected an object with fields, got {what}", index=i,
                                 topic=batch.topic, partition=batch.partition)


_DICT_ONLY = {dict}
_STR = {str}
_STR_NONE = {str, type(None)}
_NUM = {int, float}
_NUM_NONE = {int, float, type(None)}
_BOOL = {bool}
_BOOL_TEXT = {True: "t", False: "f"}.__getitem__
_NUMBER_CHARS = b"0123456789.-,"


def _orjson_floats_like_repr() -> bool:
    """Whether orjson writes a float the way ``repr`` does whenever it uses plain decimal
    notation (no exponent, not below 1e-4); checked at import so an orjson upgrade that
    changes its float format switches the fast path off instead of changing the output."""
    probes = [0.0, -0.0, 1.0, -2.5, 123.0, 0.1, 0.2 + 0.1, 1 / 3, -2 / 3, 0.0001, 0.000123,
              1e15, 9999999999999998.0, 123456789.125, 4.35, 2.0 ** 53, 1.7976931348623157e15]
    try:
        return orjson.dumps(probes).decode() == "[" + ",".join(map(repr, probes)) + "]"
    except Exception:
        return False


_FAST_NUMBERS = _orjson_floats_like_repr()


def _number_tokens(vals):
    """``repr`` of every value when all are ints and floats orjson writes exactly as ``repr``
    does (one orjson call for the column); None when anything else is there.

    orjson writes bools as true/false, None/NaN/inf as null, big or tiny floats with an
    exponent or as 0.0000...: any letter, quote, bracket, or "0.0000" sends the column
    down the value-by-value path.
    """
    if not _FAST_NUMBERS:
        return None
    try:
        body = orjson.dumps(vals)[1:-1]
    except orjson.JSONEncodeError:  # e.g. an int beyond 64 bits, or an unknown type
        return None
    if not body or body.translate(None, _NUMBER_CHARS) or b"0.0000" in body:
        return None
    return body.decode().split(",")


def _clean(strs) -> bool:
    """True when no str in ``strs`` needs ``_esc``: one scan over all of them."""
    s = "".join(strs)
    return not ("\\" in s or "\t" in s or "\n" in s or "\r" in s)


def _convert_column(conv, vals: list) -> list:
    """``[conv(v) for v in vals]``, a whole column at a time.

    The common shapes (all str, all numbers, with or without nulls) take C-level passes whose
    result is exactly what ``conv`` gives value by value; anything else goes value by value.
    """
    if not vals:
        return []
    first = type(vals[0])
    if (first is int or first is float) and (conv is _c_number or conv is _c_text):
        # ints and floats: repr (both converters); int/float subclasses: orjson's text (both)
        tokens = _number_tokens(vals)
        if tokens is not None:
            return tokens
    types = set(map(type, vals))
    if conv is _c_text or conv is _c_time:  # both: str -> _esc(str), None -> \N
        if types == _STR:
            return vals if _clean(vals) else list(map(_esc, vals))
        if types <= _STR_NONE:
            if _clean([v for v in vals if v is not None]):
                return ["\\N" if v is None else v for v in vals]
            return ["\\N" if v is None else _esc(v) for v in vals]
        if conv is _c_text and types <= _NUM:
            return list(map(repr, vals))
    elif conv is _c_number:
        if types <= _NUM:
            return list(map(repr, vals))
        if types <= _NUM_NONE:
            return ["\\N" if v is None else repr(v) for v in vals]
    elif conv is _c_bool:
        if types == _BOOL:
            return list(map(_BOOL_TEXT, vals))
    return list(map(conv, vals))


def copy_text(batch: Batch, columns: list[Column], seq: bool = False) -> str:
    """The batch as COPY text: one line per record, columns in the given order, each line
    ending in a newline; with ``seq``, one more column numbering the records from 0.

    One string for the batch: the rows are joined once, instead of a string per line that
    is then joined again. COPY text never holds a bare newline inside a line (``_esc``), so
    ``copy_text_lines`` can split it back when a bad record must be narrowed down.
    """
    _require_objects(batch)
    n = len(batch.values)
    try:
        cols = _text_columns(batch, columns)
    except Exception:
        lines = _copy_lines_by_record(batch, columns)
        if seq:
            lines = [f"{line[:-1]}\t{i}\n" for i, line in enumerate(lines)]
        return "".join(lines)
    if seq:
        cols.append(list(map(str, range(n))))
    if not n:
        return ""
    if not cols:
        return "\n" * n
    if len(cols) == 1:
        return "\n".join(cols[0]) + "\n"
    return "\n".join(map("\t".join, zip(*cols))) + "\n"


def copy_text_lines(text: str) -> list[str]:
    """The lines of ``copy_text``'s output, each with its newline."""
    return [line + "\n" for line in text.split("\n")[:-1]]


def _text_columns(batch: Batch, columns: list[Column]) -> list[list[str]]:
    """Every column's COPY text, a column at a time (records are dicts: checked before)."""
    values = batch.values
    cols = []
    for c in columns:
        if not c.path:
            cols.append(_metadata_text(batch, c.name))
            continue
        if len(c.path) == 1:
            vals = list(map(dict.get, values, repeat(c.path[0])))
        else:
            vals = list(map(field_getter(c.path), values))
        cols.append(_convert_column(_CONVERTERS[c.base], vals))
    return cols


def _copy_lines_by_record(batch: Batch, columns: list[Column]) -> list[str]:
    """The reference: ``copy_lines`` one record at a time."""
    data_cols = [(i, c) for i, c in enumerate(columns) if c.path]
    meta_cols = [(i, c) for i, c in enumerate(columns) if not c.path]
    values = batch.values
    if all(len(c.path) == 1 for _, c in data_cols):
        pairs = [(c.path[0], _CONVERTERS[c.base]) for _, c in data_cols]
        parts = [[conv(r.get(k)) for k, conv in pairs] for r in values]
    else:
        getters = [(field_getter(c.path), _CONVERTERS[c.base]) for _, c in data_cols]
        parts = [[conv(get(r)) for get, conv in getters] for r in values]
    if meta_cols:
        meta = [(i, _metadata_text(batch, c.name)) for i, c in meta_cols]
        for n, row in enumerate(parts):
            for i, col in meta:
                row.insert(i, col[n])
    join = "\t".join
    return [join(row) + "\n" for row in parts]


_PY = {"bigint": int, "integer": int, "smallint": int}


def _coerce(col: Column):
    base = col.base
    if base in ("timestamp", "timestamptz"):
        return lambda v: None if v is None else parse_timestamp(v)
    if base == "date":
        return lambda v: None if v is None or isinstance(v, dt.date) else dt.date.fromisoformat(v)
    if base in ("text", "varchar", "uuid"):
        return lambda v: v if v is None or type(v) is str else (_json_text(v) if isinstance(v, (dict, list)) else str(v))
    if base in _PY:
        def to_int(v):
            if v is None or type(v) is int:
                return v
            if type(v) is bool or (type(v) is float and not v.is_integer()):
                raise ValueError(f"{v!r} is not an integer")
            return int(v)
        return to_int
    if base in ("double", "real"):
        return lambda v: v if v is None or type(v) is float else float(v)
    if base == "boolean":
        return lambda v: v if v is None or type(v) is bool else _bool(v)
    return lambda v: v


def _bool(v):
    if v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.lower() in ("true", "false", "t", "f", "1", "0", "yes", "no"):
        return v.lower() in ("true", "t", "1", "yes")
    raise ValueError(f"{v!r} is not a boolean")


def coerce_key(col: Column | None, value):
    """A tombstone's key value as its key column's Python type; ValueError when it is none.

    Stricter than the database: MariaDB would compare the bigint 1 equal to ``"1abc"``."""
    if col is None:
        return value
    if col.base in _PY and isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        raise ValueError(f"{value!r} is not an integer")
    return _coerce(col)(value)


def param_rows(batch: Batch, columns: list[Column]) -> list[dict]:
    """Rows as {column: Python value}, coerced to the column types (for executemany).

    A value that does not fit its column raises ``BadRecordError`` for that record.
    """
    _require_objects(batch)
    getters = [(c.name, field_getter(c.path), _coerce(c)) for c in columns if c.path]
    meta = [(c.name, metadata_values(batch, c.name)) for c in columns if not c.path]
    rows = []
    for n, r in enumerate(batch.values):
        try:
            row = {name: coerce(get(r)) for name, get, coerce in getters}
        except (ValueError, TypeError, OverflowError) as exc:
            raise BadRecordError(f"value does not fit its column: {exc}", index=n,
                                 topic=batch.topic, partition=batch.partition) from exc
        for name, vals in meta:
            row[name] = vals[n]
        rows.append(row)
    return rows

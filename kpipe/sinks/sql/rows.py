"""Turning a batch into rows: COPY text lines for PostgreSQL, parameter dicts for the rest."""
from __future__ import annotations

import datetime as dt
from functools import lru_cache

import orjson

from kpipe.api import BadRecordError, Batch

from .columns import Column, field_getter, parse_timestamp

__all__ = ["copy_lines", "param_rows", "metadata_values"]

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
    return _esc(_json_text(v))


def _c_number(v):
    t = type(v)
    if t is int or t is float:
        return repr(v)
    if v is None:
        return "\\N"
    if t is str:
        return _esc(v)
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
    return None if key is None else key.decode("utf-8", "backslashreplace")


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
    for i, r in enumerate(batch.values):
        if type(r) is not dict:
            what = "a tombstone (null value)" if r is None else f"a {type(r).__name__}"
            raise BadRecordError(f"expected an object with fields, got {what}", index=i,
                                 topic=batch.topic, partition=batch.partition)


def copy_lines(batch: Batch, columns: list[Column]) -> list[str]:
    """One COPY text line (ending in a newline) per record, columns in the given order."""
    _require_objects(batch)
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
                                 topic=batch.topic, partition=batch.partition) from None
        for name, vals in meta:
            row[name] = vals[n]
        rows.append(row)
    return rows

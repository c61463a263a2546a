"""Turning a batch into rows: COPY text lines for PostgreSQL, parameter dicts for the rest."""
from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from functools import lru_cache
from itertools import repeat

import msgspec
import orjson

from kpipe.api import BadRecordError, Batch
from kpipe.formats.jsontext import NotJson, dumps

from .columns import Column, field_getter, parse_timestamp

__all__ = ["coerce_key", "copy_text", "copy_chunks", "CopyPieces", "copy_text_lines", "param_rows", "metadata_values", "metadata_text", "JsonText",
           "json_serializer"]

_UTC = dt.timezone.utc


def _esc(s: str) -> str:
    # COPY text format: backslash, tab, newline and carriage return must be escaped.
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
        return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return s


class _Unfit(ValueError):
    """A value that does not fit its column, found before the database sees it: the record
    is a bad record (see "How values land" in docs/sinks/postgres.md)."""


def _json_bytes(v) -> bytes:
    """``v`` as JSON, exactly, or ``_Unfit``: the encoder every writer of JSON text shares, so a
    value lands in a json column as it lands in a jsonl file (NaN and infinity are refused:
    JSON has no form for them, and writing null would change the value silently)."""
    try:
        return dumps(v)
    except NotJson as exc:
        raise _Unfit(str(exc)) from None


def _json_text(v) -> str:
    return _json_bytes(v).decode()


def _text_value(v) -> str:
    """A non-null value as a text column holds it, in every dialect: strings as they are,
    numbers and booleans and everything else as their JSON text (``123`` -> ``'123'``)."""
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return repr(v)
    if t is float:
        if not math.isfinite(v):
            raise _Unfit(f"{v!r} has no JSON text")
        return repr(v)
    if t is uuid.UUID:  # Avro's uuid logical type
        return str(v)
    if t is decimal.Decimal:  # Avro's decimal logical type, exact
        if not v.is_finite():
            raise _Unfit(f"{v!r} has no JSON text")
        return str(v)
    if isinstance(v, str):  # a str subclass (a CEL string): its text, not a quoted JSON string
        return str(v)
    text = _json_text(v)
    # a value whose JSON form is a string (a datetime, a duration, bytes as base64) is that
    # string, as a uuid is: no JSON quotes in the column
    return msgspec.json.decode(text) if text.startswith('"') else text


def _c_text(v):
    if type(v) is str:
        return _esc(v)
    if v is None:
        return "\\N"
    return _esc(_text_value(v))


_INT_RANGE = {"bigint": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1),
              "smallint": (-(2**15), 2**15 - 1)}


def _int_value(v, lo: int = -(2**63), hi: int = 2**63 - 1) -> int:
    """An integer column takes integers, and floats with an integral value (``2.0`` -> 2);
    booleans, strings and ``2.5`` are bad records, as are values outside the column's range."""
    t = type(v)
    if t is int:
        n = v
    elif t is float and v.is_integer():  # False for NaN and infinities
        n = int(v)
    elif t is decimal.Decimal and v.is_finite() and v == v.to_integral_value():
        n = int(v)
    elif isinstance(v, int) and not isinstance(v, bool):  # an int subclass (a CEL int)
        n = int(v)
    else:
        raise _Unfit(f"{v!r} is not an integer")
    if not lo <= n <= hi:
        raise _Unfit(f"{n} is out of range for the column")
    return n


def _c_int_for(lo: int, hi: int):
    def conv(v):
        if type(v) is int and lo <= v <= hi:
            return repr(v)
        if v is None:
            return "\\N"
        return repr(_int_value(v, lo, hi))
    return conv


_c_bigint, _c_integer, _c_smallint = (_c_int_for(*_INT_RANGE[b]) for b in ("bigint", "integer", "smallint"))
_INT_CONVERTERS = {_c_bigint: _INT_RANGE["bigint"], _c_integer: _INT_RANGE["integer"],
                   _c_smallint: _INT_RANGE["smallint"]}


def _double_value(v) -> float:
    """A double column takes integers and finite floats; NaN, infinities, booleans and strings
    are bad records."""
    t = type(v)
    if t is float or t is int or (isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool)):
        try:
            f = float(v)
        except OverflowError:
            raise _Unfit(f"{v!r} is out of range for a double") from None
        if not math.isfinite(f):
            raise _Unfit(f"{v!r} is not a finite number")
        return f
    raise _Unfit(f"{v!r} is not a number")


def _c_double(v):
    t = type(v)
    if v is None:
        return "\\N"
    if t is int and -(2**53) <= v <= 2**53:
        return repr(v)
    f = _double_value(v)
    return repr(v) if t is int else repr(f)  # an int's own digits: PostgreSQL rounds them alike


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
    """A boolean column takes JSON booleans only: 1, 0, "yes" are bad records."""
    if v is True:
        return "t"
    if v is False:
        return "f"
    if v is None:
        return "\\N"
    raise _Unfit(f"{v!r} is not a boolean")


def _c_json(v):
    return "\\N" if v is None else _esc(_json_text(v))


def _c_time(v):
    """A timestamp or date column takes ISO-8601 text (PostgreSQL parses it), epoch milliseconds
    and datetimes; anything else is a bad record, as ``parse_timestamp`` has it for the other
    dialects (PostgreSQL would read a list's text ``[100, 100]`` as the year 100)."""
    t = type(v)
    if t is str:
        return _esc(v)
    if v is None:
        return "\\N"
    if t is int or t is float or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        return _ms_text(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    raise _Unfit(f"{v!r} is not a timestamp (ISO-8601 text or epoch milliseconds)")


def _c_bytes(v):
    if v is None:
        return "\\N"
    if isinstance(v, (bytes, bytearray)):
        return "\\\\x" + bytes(v).hex()
    return _c_text(v)


_CONVERTERS = {"text": _c_text, "varchar": _c_text, "uuid": _c_text, "bigint": _c_bigint,
               "integer": _c_integer, "smallint": _c_smallint, "double": _c_double, "real": _c_double,
               "numeric": _c_number, "boolean": _c_bool, "json": _c_json, "timestamp": _c_time,
               "timestamptz": _c_time, "date": _c_time, "bytes": _c_bytes}


@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    # isoformat, not strftime: %Y writes year 1 as "1", not "0001"
    return dt.datetime.fromtimestamp(seconds, tz=_UTC).replace(tzinfo=None).isoformat(sep=" ")


def _ms_text(ms) -> str:
    try:
        if type(ms) is not int and not float(ms).is_integer():
            # a fraction of a millisecond: kept, as the other dialects keep it (parse_timestamp)
            return dt.datetime.fromtimestamp(ms / 1000, tz=_UTC).isoformat(sep=" ")
        ms = int(ms)
        return f"{_second_text(ms // 1000)}.{ms % 1000:03d}+00"
    except (ValueError, OverflowError, OSError):
        raise _Unfit(f"timestamp {ms!r} ms since the epoch is outside years 1-9999") from None


def _ts_value(ts):
    """A Kafka timestamp (ms) as a datetime; an ``_Unfit`` (not raised) outside years 1-9999."""
    try:
        return dt.datetime.fromtimestamp(ts / 1000, tz=_UTC)
    except (ValueError, OverflowError, OSError):
        return _Unfit(f"Kafka timestamp {ts} ms is outside years 1-9999")


def _key_text(key) -> str | None:
    """Raw key bytes as UTF-8 text; a deserialized key (key_deserializer) as text or JSON."""
    if key is None or type(key) is str:
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", "backslashreplace")
    try:
        return orjson.dumps(key, default=str).decode()
    except TypeError:  # past 64 bits, too deep: the exact encoder, or _Unfit
        return _json_text(key)


def _key_value(key):
    """``_key_text``, or an ``_Unfit`` (not raised) for a key JSON cannot hold."""
    try:
        return _key_text(key)
    except _Unfit as exc:
        return exc


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
        # a timestamp outside years 1-9999 is an _Unfit in the list: param_rows reports it
        return [None if ts is None else _ts_value(ts) for ts in batch.timestamps]
    if name == "_key":
        return [_key_value(k) for k in batch.keys]
    raise ValueError(name)


def metadata_text(batch: Batch, name: str) -> list[str]:
    """The COPY text of one metadata column, a value per record."""
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
_INT = {int}
_INT_NONE = {int, type(None)}
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


def _int_tokens(vals, lo: int, hi: int):
    """``repr`` of every value when all are ints within [lo, hi] (one orjson call, and min/max
    in C); None otherwise. orjson writes floats with a dot, bools and None as words."""
    try:
        body = orjson.dumps(vals)[1:-1]
    except orjson.JSONEncodeError:  # past 64 bits, or an unknown type
        return None
    if not body or body.translate(None, _INT_CHARS) or not (lo <= min(vals) and max(vals) <= hi):
        return None
    return body.decode().split(",")


_INT_CHARS = b"0123456789-,"


def _clean(strs) -> bool:
    """True when no str in ``strs`` needs ``_esc``: one scan over all of them, which also finds
    a lone surrogate (``UnicodeEncodeError``: it cannot go over the wire)."""
    clean = True
    for s in _slices(strs):
        if not s.isascii():
            s.encode()
        if clean and ("\\" in s or "\t" in s or "\n" in s or "\r" in s):
            clean = False
    return clean


def _encodable(strs: list[str]) -> list[str]:
    """``strs``, once none of them holds a lone surrogate (``UnicodeEncodeError`` otherwise)."""
    for s in _slices(strs):
        if not s.isascii():
            s.encode()
    return strs


def _slices(strs: list[str]):
    """``strs`` joined, in texts of about ``CHUNK_CHARS`` (a scan, not a copy of the column)."""
    step = max(1, CHUNK_CHARS // (len(strs[0]) + 1)) if strs else 1
    for lo in range(0, len(strs), step):
        yield "".join(strs[lo:lo + step])


def _convert_column(conv, vals: list) -> list:
    """``[conv(v) for v in vals]``, a whole column at a time.

    The common shapes (all str, all numbers, with or without nulls) take C-level passes whose
    result is exactly what ``conv`` gives value by value; anything else goes value by value.
    """
    if not vals:
        return []
    first = type(vals[0])
    if (first is int or first is float) and (conv is _c_double or conv is _c_text or conv is _c_number):
        # ints and floats: repr (all three); int/float subclasses: orjson's text (all three);
        # NaN and infinities are written as null by orjson: not tokens, so value by value
        tokens = _number_tokens(vals)
        if tokens is not None:
            return tokens
    if first is int and conv in _INT_CONVERTERS:
        tokens = _int_tokens(vals, *_INT_CONVERTERS[conv])
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
        if conv is _c_text and types == _INT:
            return list(map(repr, vals))
    elif conv in _INT_CONVERTERS:
        # plain ints within the column's range (two passes in C): their repr
        lo, hi = _INT_CONVERTERS[conv]
        if types == _INT and lo <= min(vals) and max(vals) <= hi:
            return list(map(repr, vals))
    elif conv is _c_number:
        if types <= _NUM:
            return list(map(repr, vals))
        if types <= _NUM_NONE:
            return ["\\N" if v is None else repr(v) for v in vals]
    elif conv is _c_bool:
        if types == _BOOL:
            return list(map(_BOOL_TEXT, vals))
    return _encodable(list(map(conv, vals)))  # the paths above give ASCII, or _clean checked it


CHUNK_CHARS = 1 << 20  # COPY text is built, and sent, in pieces of about this many characters


def copy_text(batch: Batch, columns: list[Column], seq: bool = False) -> str:
    """``copy_chunks`` as one string."""
    return "".join(copy_chunks(batch, columns, seq))


def copy_chunks(batch: Batch, columns: list[Column], seq: bool = False) -> "CopyPieces | list[str]":
    """The batch as COPY text: one line per record, columns in the given order, each line
    ending in a newline; with ``seq``, one more column numbering the records from 0.

    The text comes as pieces of whole lines of about ``CHUNK_CHARS`` each, joined from the
    columns only as the sink sends them (``CopyPieces``): one piece at a time in memory, never
    the whole text. COPY text never holds a bare newline inside a line (``_esc``), so
    ``copy_text_lines`` can split the pieces back when a bad record must be narrowed down.

    A value that does not fit its column (see ``_Unfit``), a lone surrogate included, raises
    ``BadRecordError`` at its record's index here, before anything is sent: the whole batch is
    tried a column at a time first, and only when that fails is it converted record by record,
    to find the record.
    """
    _require_objects(batch)
    n = len(batch.values)
    if not n:
        return []
    try:
        cols = _text_columns(batch, columns)
        if seq:
            cols.append(list(map(str, range(n))))
        if not cols:
            return ["\n" * n]
        return CopyPieces(cols, n)
    except Exception:
        lines = _copy_lines_by_record(batch, columns)
        if seq:
            lines = [f"{line[:-1]}\t{i}\n" for i, line in enumerate(lines)]
        return ["".join(lines)]


class CopyPieces:
    """A batch's COPY text as its columns' texts, joined into pieces of about ``CHUNK_CHARS``
    each time it is iterated: a retry or a narrowing can send it again."""

    __slots__ = ("cols", "n")

    def __init__(self, cols: list[list[str]], n: int):
        self.cols, self.n = cols, n

    def __iter__(self):
        cols, n, done = self.cols, self.n, 0
        size = sum(map(len, (c[0] for c in cols))) + len(cols)  # the first line: a guess of a line
        step = max(1, min(n, CHUNK_CHARS // size))
        while done < n:
            take = min(step, n - done)
            if len(cols) == 1:
                text = "\n".join(cols[0][done:done + take]) + "\n"
            else:
                text = "\n".join(map("\t".join, zip(*(c[done:done + take] for c in cols)))) + "\n"
            done += take
            step = max(1, CHUNK_CHARS * take // len(text))
            yield text
            del text  # let the piece go while the next one is joined


def copy_text_lines(text) -> list[str]:
    """The lines of ``copy_text``'s output (or of ``copy_chunks``' pieces), each with its newline."""
    if not isinstance(text, str):
        text = "".join(text)
    return [line + "\n" for line in text.split("\n")[:-1]]


def _text_columns(batch: Batch, columns: list[Column]) -> list[list[str]]:
    """Every column's COPY text, a column at a time (records are dicts: checked before)."""
    values = batch.values
    wide = _fields_by_record(values, columns)
    cols = []
    for c in columns:
        if not c.path:
            text = metadata_text(batch, c.name)
            cols.append(_encodable(text) if c.name == "_key" else text)  # the rest are ASCII
            continue
        if wide is not None and len(c.path) == 1:
            vals = wide[c.path[0]]
        elif len(c.path) == 1:
            vals = list(map(dict.get, values, repeat(c.path[0])))
        else:
            vals = list(map(field_getter(c.path), values))
        cols.append(_convert_column(_CONVERTERS[c.base], vals))
    return cols


ROW_MAJOR_FIELDS = 32  # from this many top-level columns on, fields are read record by record


def _fields_by_record(values: list, columns: list[Column]) -> dict | None:
    """field -> its values, read one record at a time, for wide records; None for narrow ones.

    Reading a column at a time looks one key up in every record's dict in turn: once a dict
    spans many cache lines, nearly every lookup misses the cache (0.27 us a field at 500 fields,
    0.03 at 10). One record at a time keeps its dict in cache for all its lookups (0.10 us at
    500), and one C-level transpose makes the columns; below about 30 fields the per-record
    calls cost more than the misses saved (benchmarks/README.md, "Wide records")."""
    keys = list(dict.fromkeys(c.path[0] for c in columns if len(c.path) == 1))
    if len(keys) < ROW_MAJOR_FIELDS:
        return None
    by_record = [list(map(r.get, keys)) for r in values]
    return dict(zip(keys, map(list, zip(*by_record))))


_UNFIT = (ValueError, TypeError, OverflowError, RecursionError)  # _Unfit, UnicodeEncodeError, ...


def _copy_lines_by_record(batch: Batch, columns: list[Column]) -> list[str]:
    """The reference: ``copy_lines`` one record at a time; ``BadRecordError`` at the first
    record with a value that does not fit its column."""
    values = batch.values
    meta = {c.name: _metadata_by_record(batch, c.name) for c in columns if not c.path}
    # (0, metadata text by index) or (1, key, converter) or (2, getter, converter)
    convs = [(0, meta[c.name], None) if not c.path else
             (1, c.path[0], _CONVERTERS[c.base]) if len(c.path) == 1 else
             (2, field_getter(c.path), _CONVERTERS[c.base]) for c in columns]
    join = "\t".join
    lines = []
    for n, r in enumerate(values):
        try:
            row = [at(n) if how == 0 else conv(r.get(at)) if how == 1 else conv(at(r)) for how, at, conv in convs]
            line = join(row) + "\n"
            if not line.isascii():
                line.encode()
        except _UNFIT as exc:
            raise BadRecordError.in_batch(f"value does not fit its column: {exc}", batch, n) from None
        lines.append(line)
    return lines


def _metadata_by_record(batch: Batch, name: str):
    """A function record index -> the COPY text of metadata column ``name``."""
    if name == "_timestamp":
        stamps = batch.timestamps
        return lambda n: "\\N" if stamps[n] is None else _ms_text(stamps[n])
    if name == "_key":
        keys = batch.keys
        return lambda n: _c_text(_key_text(keys[n]))
    col = metadata_text(batch, name)
    return col.__getitem__


_PY = {"bigint": int, "integer": int, "smallint": int}


def _text_param(v):
    s = _text_value(v)
    if not s.isascii():
        s.encode()  # a lone surrogate: UnicodeEncodeError, a bad record, as on PostgreSQL
    return s


class JsonText(str):
    """A json column's value, already JSON text (kpipe's encoder): ``json_serializer`` binds it as
    it is, so what lands is what COPY sends on PostgreSQL (Decimal ``1.50`` stays ``1.50``)."""


def json_serializer(v) -> str:
    """The engine's ``json_serializer``: kpipe's JSON text as it is; anything else (a JSON type
    kpipe did not fill) through the same encoder."""
    return str(v) if type(v) is JsonText else _json_text(v)


def _json_param(v):
    # sets, bytes, int keys converted as in COPY, and only values JSON can hold exactly
    return JsonText(_json_text(v))


def _utc(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is None else when.astimezone(_UTC)


def _coerce(col: Column):
    """The generic path's converter for a column: the same rules as COPY's (``_CONVERTERS``)."""
    base = col.base
    if base == "timestamptz":
        # MariaDB's DATETIME and SQLite keep the wall clock and drop an offset: UTC's, then
        return lambda v: None if v is None else _utc(parse_timestamp(v))
    if base == "timestamp":
        return lambda v: None if v is None else parse_timestamp(v)
    if base == "date":
        return lambda v: None if v is None or isinstance(v, dt.date) else dt.date.fromisoformat(v)
    if base in ("text", "varchar", "uuid"):
        return lambda v: None if v is None else _text_param(v)
    if base in _PY:
        lo, hi = _INT_RANGE[base]
        return lambda v: None if v is None else _int_value(v, lo, hi)
    if base in ("double", "real"):
        return lambda v: None if v is None else _double_value(v)
    if base == "boolean":
        return lambda v: v if v is None or type(v) is bool else _c_bool(v)
    if base == "json":
        return lambda v: None if v is None else _json_param(v)
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
    if col.base in _PY and isinstance(value, str):  # a key is often text: "42" is the key 42
        if not value.strip().lstrip("-").isdigit():
            raise ValueError(f"{value!r} is not an integer")
        value = int(value)
    if col.base == "boolean" and value is not None and type(value) is not bool:
        return _bool(value)
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
            for name, vals in meta:
                v = row[name] = vals[n]
                if type(v) is _Unfit:  # metadata_values' mark: a Kafka timestamp past year 9999
                    raise v
        except (ValueError, TypeError, OverflowError, OSError, RecursionError) as exc:
            raise BadRecordError(f"value does not fit its column: {exc}", index=n,
                                 topic=batch.topic, partition=batch.partition) from exc
        rows.append(row)
    return rows

"""csv: RFC 4180 with ``\\r\\n`` line ends and a header row.

The header is the union of the records' fields in first-seen order, computed over the records
of the object before any row is written, so every object carries its own complete header.

A cell holds the value's plain text (``cell_text``), quoted only where RFC 4180 needs it, with
one addition: the empty string is always quoted (``""``), so that it differs from null, which is
an empty unquoted cell (the convention of DuckDB's and Spark's CSV writers). Python 3.11's
``csv.writer`` cannot make that difference (``QUOTE_NOTNULL`` came in 3.12), so the lines are
joined here; that is no slower, as each cell goes through Python code anyway.

A record that is not an object becomes a single ``value`` column.
"""
from __future__ import annotations

import base64
import io
import re
from datetime import date, datetime, time
from decimal import Decimal
from uuid import UUID

from orjson import dumps as _orjson_dumps, loads as _orjson_loads

from .base import EncodeError, Writer, as_row, check_columns, encode_in_steps, json_default
from .jsontext import dumps, short_time

__all__ = ["CsvWriter", "encode_csv", "cell_text"]

_NEEDS_QUOTES = re.compile(r'[",\r\n]').search
PLAIN_DECIMAL_ZEROS = 1000
"""A Decimal is written in plain notation unless that takes more zeros than this beyond its
digits (``Decimal("1E+99999")``): then in Python's scientific notation, exact all the same."""


def _field(value) -> str:
    """``value`` as one CSV field: its ``cell_text``, quoted where needed; null as nothing."""
    t = type(value)
    if t is str:
        return value if value and _NEEDS_QUOTES(value) is None else _quote(value)
    if value is None:
        return ""
    if t is int or t is float:
        return repr(value)  # digits, or inf, -inf, nan: never a character that needs quotes
    if t is bool:
        return "true" if value else "false"
    if t is dict or t is list:
        return _quote(_json_text(value))
    plain = _PLAIN.get(t)
    if plain is not None:
        return plain(value) or '""'  # b"" is base64 "": an empty value, not null
    return _quote(cell_text(value))


def _json_text(value) -> str:
    """``jsontext.dumps(value)``, its common case inlined (a nested cell is hot): orjson's text
    is final unless it failed, or holds a null (where Infinity or NaN could hide) or a time."""
    try:
        data = _orjson_dumps(value, default=json_default)
    except TypeError:  # orjson.JSONEncodeError
        return dumps(value).decode()  # the exact fallback, or NotJson (a ValueError)
    if data.find(b"null") >= 0 or short_time(data) is not None:  # find, not in: faster on short text
        data = dumps(value)
    return data.decode()


def _quote(text: str) -> str:
    if text and _NEEDS_QUOTES(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


def cell_text(value) -> str:
    """The text a non-null cell holds for ``value``, before CSV quoting: strings as they are;
    booleans ``true``/``false``; numbers as Python writes them (``nan``, ``inf`` included);
    a Decimal exactly, in plain notation (``decimal_text``); a value whose JSON text is a string
    (datetime, date, time in ISO 8601 with their zone, uuid, bytes in base64, a duration in
    ISO 8601) that string without its quotes; anything else (objects, arrays, sets) its JSON text
    (``jsontext.dumps``: exact, Infinity and NaN refused). Raises ``ValueError`` or
    ``TypeError`` for a value with no text."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)  # an int subclass (IntEnum) by its digits, not its repr
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, (date, time)):  # datetime too; isoformat keeps a zone's seconds, orjson does not
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _base64(value)
    data = dumps(value)  # or NotJson (a ValueError)
    if data[:1] == b'"':  # a datetime, a uuid, base64 bytes: the string, not its JSON quotes
        return _orjson_loads(data)
    return data.decode()


def decimal_text(d: Decimal) -> str:
    """``d``'s exact digits in plain notation, its scale kept: ``12.340``, ``0E-10`` as
    ``0.0000000000``, ``1E+2`` as ``100``; Python's notation when plain would take more than
    ``PLAIN_DECIMAL_ZEROS`` extra zeros, and for NaN and infinities (``NaN``, ``Infinity``)."""
    if not d.is_finite():
        return str(d)
    _, digits, exponent = d.as_tuple()
    zeros = exponent if exponent > 0 else -exponent - len(digits)
    return format(d, "f") if zeros <= PLAIN_DECIMAL_ZEROS else str(d)


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


# Exact types whose text never needs CSV quotes (ISO 8601, uuid, digits, base64): no _quote.
_PLAIN = {datetime: datetime.isoformat, date: date.isoformat, time: time.isoformat, UUID: UUID.__str__,
          Decimal: decimal_text, bytes: _base64}


class CsvWriter(Writer):
    __slots__ = ("out", "columns", "order")

    def __init__(self, out, columns: list | None = None):
        self.out = out
        self.columns: list | None = None
        self.order = columns  # the dataset's column order: the header starts with it

    def write(self, values: list) -> None:
        rows = [as_row(v) for v in values]
        if self.columns is None:
            seen: dict[str, None] = dict.fromkeys(self.order or ())
            for row in rows:
                for k in row:
                    seen.setdefault(k, None)
            check_columns(seen, rows, "CSV")
            self.columns = list(seen)
            self.out.write((",".join([_quote(str(k)) for k in self.columns]) + "\r\n").encode())
        encode_in_steps(rows, self._encode, self.out.write)

    def _encode(self, rows: list) -> bytes:
        columns = self.columns
        try:
            return _lines([",".join(map(_field, map(row.get, columns))) for row in rows])
        except (TypeError, ValueError):  # a nested value JSON cannot hold, a lone surrogate
            for i, row in enumerate(rows):
                try:
                    _lines([",".join(map(_field, map(row.get, columns)))])
                except (TypeError, ValueError) as exc:
                    raise EncodeError(f"cannot write as CSV: {exc}", i) from None
            raise

    def close(self) -> None:
        pass


def _lines(lines: list) -> bytes:
    lines.append("")  # every row ends in \r\n
    return "\r\n".join(lines).encode()


def encode_csv(values: list) -> bytes:
    """The whole CSV text of ``values`` (header included) as one bytes object."""
    out = io.BytesIO()
    CsvWriter(out).write(values)
    return out.getvalue()

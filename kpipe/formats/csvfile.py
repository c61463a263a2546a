"""csv: RFC 4180 with ``\\r\\n`` line ends and a header row.

The header is the union of the records' fields in first-seen order, computed over the records
of the object before any row is written, so every object carries its own complete header.
Nested values are written as JSON text (``jsontext.dumps``: exact, Infinity and NaN refused), ``null`` as an empty cell, booleans as ``true``/``false``.
A record that is not an object becomes a single ``value`` column.
"""
from __future__ import annotations

import csv
import io

from orjson import dumps as _orjson_dumps

from .base import EncodeError, Writer, as_row, check_columns, encode_in_steps, json_default
from .jsontext import dumps

__all__ = ["CsvWriter", "encode_csv"]


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # jsontext.dumps, with its common case inlined (a cell is hot): orjson's text is final
    # unless it failed or holds a null, where Infinity or NaN could hide.
    try:
        data = _orjson_dumps(value, default=json_default)
    except TypeError:  # orjson.JSONEncodeError
        data = dumps(value)  # the exact fallback, or NotJson (a ValueError)
    else:
        if data.find(b"null") >= 0:  # find, not in: half the cost on short text
            data = dumps(value)
    return data.decode()


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
            self.out.write(_lines([self.columns]))
        encode_in_steps(rows, self._encode, self.out.write)

    def _encode(self, rows: list) -> bytes:
        columns = self.columns
        try:
            return _lines([[_cell(row.get(c)) for c in columns] for row in rows])
        except (TypeError, ValueError):  # a nested value JSON cannot hold, a lone surrogate
            for i, row in enumerate(rows):
                try:
                    _lines([[_cell(row.get(c)) for c in columns]])
                except (TypeError, ValueError) as exc:
                    raise EncodeError(f"cannot write as CSV: {exc}", i) from None
            raise

    def close(self) -> None:
        pass


def _lines(lines: list) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows(lines)
    return text.getvalue().encode()


def encode_csv(values: list) -> bytes:
    """The whole CSV text of ``values`` (header included) as one bytes object."""
    out = io.BytesIO()
    CsvWriter(out).write(values)
    return out.getvalue()

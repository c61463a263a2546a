"""What every format writer shares: the writer protocol, its error, and how non-object records
become rows."""
from __future__ import annotations

import base64
from decimal import Decimal

import orjson

__all__ = ["EncodeError", "Writer", "as_row", "json_default", "encode_in_steps", "check_columns"]

STEP_BYTES = 1 << 20
"""About how many encoded bytes one step produces: bounds what a step holds in memory whatever
the record size, while keeping the per-step overhead negligible."""


def encode_in_steps(values: list, encode, write) -> None:
    """``write(encode(part))`` for consecutive parts of ``values`` of about ``STEP_BYTES`` each
    (the part size adapts to the records seen). ``EncodeError`` indexes are made relative to
    ``values``."""
    n = len(values)
    i, step = 0, 256
    while i < n:
        part = values if (i == 0 and n <= step) else values[i:i + step]
        try:
            data = encode(part)
        except EncodeError as exc:
            exc.index += i
            raise
        write(data)
        i += len(part)
        step = max(16, min(16384, STEP_BYTES * len(part) // (len(data) or 1)))


class EncodeError(ValueError):
    """Record ``index`` (of the list given to ``write``) cannot be written in this format."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


class Writer:
    """Writes records into a binary target, one object or file at a time.

    ``write(values)`` encodes a list of records and streams the bytes to the target as it goes;
    ``close()`` finishes the format (and the compression) without closing the target. Formats
    with a header or a schema (csv, avro, parquet) fix it from the records of the first
    ``write``; the sinks write each object with one call.
    """

    def write(self, values: list) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


_Fragment = getattr(orjson, "Fragment", None)  # orjson 3.9.14+


def json_default(obj):
    """orjson's fallback: bytes values (the ``bytes`` deserializer) become base64 text, so every
    record stays valid JSON; a finite Decimal its exact number, as msgspec (``jsontext``'s exact
    encoder) writes it, so that a datetime beside a decimal keeps orjson's text (msgspec writes
    UTC as ``Z``); anything else orjson cannot write is an error."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, Decimal) and _Fragment is not None and obj.is_finite():
        return _Fragment(str(obj))  # always a valid JSON number: 12.340, 1E+2, 0E-10
    raise TypeError(f"cannot write a value of type {type(obj).__name__} as JSON")


def as_row(value) -> dict:
    """A record as a row: objects as they are, anything else as a single ``value`` field."""
    return value if isinstance(value, dict) else {"value": value}


def check_columns(columns, rows: list, fmt: str) -> None:
    """Raise ``EncodeError`` at the first row holding a column name that is not valid UTF-8 text
    (a lone surrogate): no file format can write it as a name."""
    for k in columns:
        if type(k) is str:
            try:
                k.encode()
            except UnicodeEncodeError:
                i = next(i for i, row in enumerate(rows) if k in row)
                raise EncodeError(f"cannot write as {fmt}: the field name {k!r} is not valid UTF-8", i) from None

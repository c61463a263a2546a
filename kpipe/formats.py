"""What is written: turning a batch of values into the bytes of one file.

Kept apart from *where* the bytes go (a local directory now, object storage later), so every
destination shares one implementation of each format. Output depends only on the values, never
on the clock or the process, so replaying the same offsets produces byte-identical files.
"""
from __future__ import annotations

import base64
import csv
import io
from typing import Callable

import orjson

__all__ = ["FORMATS", "EXTENSIONS", "encode_jsonl", "encode_csv"]


def _default(obj):
    # bytes values (the `bytes` deserializer) are written as base64 text, so every line
    # stays valid JSON; anything else orjson cannot write is an error.
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    raise TypeError(f"cannot write a value of type {type(obj).__name__} as JSON")


def encode_jsonl(values: list) -> bytes:
    """One JSON document per line, each line ending in a newline."""
    out = io.BytesIO()
    write = out.write
    # One growing buffer, not a list of small bytes joined at the end: thousands of live
    # per-record buffers fragmented the heap and made malloc a quarter of the pipeline's CPU.
    if values and type(values[0]) is bytes:
        b64 = base64.b64encode
        try:
            for v in values:
                write(b'"%s"\n' % b64(v))  # base64 never needs JSON escaping
            return out.getvalue()
        except TypeError:  # not all bytes after all (a tombstone): take the general path
            out = io.BytesIO()
            write = out.write
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    for v in values:
        write(dumps(v, default=_default, option=opt))
    return out.getvalue()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return orjson.dumps(value, default=_default).decode()


def encode_csv(values: list) -> bytes:
    """RFC 4180 CSV with a header row: the union of the records' fields, in first-seen order.

    Nested values are written as JSON text. A non-object value becomes a single ``value`` column.
    """
    columns: dict[str, None] = {}
    rows = []
    for v in values:
        row = v if isinstance(v, dict) else {"value": v}
        rows.append(row)
        for k in row:
            columns.setdefault(k, None)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue().encode()


FORMATS: dict[str, Callable[[list], bytes]] = {"jsonl": encode_jsonl, "csv": encode_csv}
EXTENSIONS = {"jsonl": ".jsonl", "csv": ".csv"}

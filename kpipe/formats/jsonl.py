"""jsonl: one JSON document per line, each line ending in a newline, written by orjson."""
from __future__ import annotations

import base64
import io

import msgspec
import orjson

from .base import EncodeError, Writer, encode_in_steps, json_default

__all__ = ["encode_jsonl", "JsonlWriter"]


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
        try:
            write(dumps(v, default=json_default, option=opt))
        except TypeError:  # orjson.JSONEncodeError: see _exact
            write(_exact(v))
    return out.getvalue()


# orjson stops at 64-bit integers and does not write Decimal; JSON itself has neither limit,
# and both arrive from real data (msgspec keeps big JSON integers exact, Avro has decimals).
# msgspec writes them exactly, as numbers; only records orjson refuses pay for the second try.
_EXACT = msgspec.json.Encoder(decimal_format="number")


def _exact(v) -> bytes:
    return _EXACT.encode(v) + b"\n"


def _encode_checked(values: list) -> bytes:
    try:
        return encode_jsonl(values)
    except (TypeError, msgspec.EncodeError):  # neither encoder can write some value (an unknown type)
        for i, v in enumerate(values):  # find the record, as encode_jsonl tries it
            try:
                encode_jsonl([v])
            except (TypeError, msgspec.EncodeError) as exc:
                raise EncodeError(f"cannot write as JSON: {exc}", i) from None
        raise


class JsonlWriter(Writer):
    __slots__ = ("out",)

    def __init__(self, out):
        self.out = out

    def write(self, values: list) -> None:
        encode_in_steps(values, _encode_checked, self.out.write)

    def close(self) -> None:
        pass  # jsonl has no trailer

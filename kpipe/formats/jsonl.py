"""jsonl: one JSON document per line, each line ending in a newline, written by orjson, with
``jsontext``'s exact fallback (msgspec) for what orjson refuses."""
from __future__ import annotations

import base64
import io
from itertools import repeat
from operator import countOf

import orjson

from .base import EncodeError, Writer, encode_in_steps, json_default
from .jsontext import NotJson, _nonfinite, dumps_exact

__all__ = ["encode_jsonl", "JsonlWriter"]


def encode_jsonl(values: list) -> bytes:
    """One JSON document per line, each line ending in a newline. Raises ``EncodeError`` at the
    index of a record JSON cannot hold exactly (see ``jsontext``: Infinity, NaN, an unknown type,
    a lone surrogate, nesting too deep)."""
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
        except TypeError:  # orjson.JSONEncodeError: past 64 bits, Decimal, too deep, or unknown
            try:
                write(dumps_exact(v) + b"\n")
            except NotJson as exc:
                # every line written so far ends in exactly one newline (JSON escapes its own)
                raise EncodeError(str(exc), out.getvalue().count(b"\n")) from None
    data = out.getvalue()
    if b"null" in data:  # both encoders write Infinity and NaN as null: look where one could hide
        _check_finite(values, data)
    return data


def _check_finite(values: list, data: bytes) -> None:
    """Raise ``EncodeError`` at the first record holding Infinity or NaN (written as ``null``).

    Counting, not walking: every top-level ``None`` of an object writes exactly one ``null``,
    and so does every non-finite float, so a record (or a whole step) whose text holds no more
    ``null`` than its objects have top-level ``None`` values cannot hold Infinity or NaN. Both
    counts run in C. Only records that fail the count (nested nulls, "null" inside a string, a
    non-object record) are walked."""
    try:
        if data.count(b"null") == sum(map(countOf, map(dict.values, values), repeat(None))):
            return
    except TypeError:  # a record that is not an object
        pass
    lines = data.split(b"\n")
    for i, v in enumerate(values):
        if type(v) is dict:
            line = lines[i]
            if line.count(b"null") == countOf(v.values(), None):
                continue
        if _nonfinite(v):
            raise EncodeError("cannot write as JSON: Infinity and NaN have no JSON form", i)


class JsonlWriter(Writer):
    __slots__ = ("out",)

    def __init__(self, out):
        self.out = out

    def write(self, values: list) -> None:
        encode_in_steps(values, encode_jsonl, self.out.write)

    def close(self) -> None:
        pass  # jsonl has no trailer

"""jsonl: one JSON document per line, each line ending in a newline, written by orjson, with
``jsontext``'s exact fallback (msgspec) for what orjson refuses; or, verbatim (``encode_verbatim``),
the JSON text each value came with."""
from __future__ import annotations

import base64
import io
import math
import re
from operator import countOf

import msgspec
import orjson

from .base import EncodeError, Writer, encode_in_steps, json_default
from .jsontext import NotJson, _nonfinite, dumps_exact, short_time

__all__ = ["encode_jsonl", "encode_verbatim", "JsonlWriter"]


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
    if short_time(data) is not None:  # orjson may have written a time wrong: those lines again
        data = _rewrite_times(values, data)
    if _NULL(data) is not None:  # both encoders write Infinity and NaN as null: look where one could hide
        _check_finite(values, data)
    return data


def _rewrite_times(values: list, data: bytes) -> bytes:
    """``data`` with each line that may hold a time orjson wrote wrong written by msgspec."""
    lines = data.split(b"\n")[:-1]
    for i, line in enumerate(lines):
        if short_time(line) is not None:
            try:
                lines[i] = dumps_exact(values[i])
            except NotJson as exc:
                raise EncodeError(str(exc), i) from None
    lines.append(b"")
    return b"\n".join(lines)


_NULL = re.compile(b"null").search  # on a step's text, faster than bytes.find (about 3 GB/s vs 2)

# Every Python float is one msgpack float64: 0xcb, then the IEEE 754 bytes, big-endian, where
# Infinity and NaN (exponent all ones) start 7f/ff then f0..ff. msgspec's msgpack encoder is C, so
# one encode and one regex search clear a whole step of records whose nulls are nested. A match
# (or a type msgpack cannot hold, such as an integer past 64 bits) only means: look closer.
_MSGPACK = msgspec.msgpack.Encoder().encode
_NONFINITE_FLOAT64 = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")
_MSGPACK_FLOATS_OK = all(_NONFINITE_FLOAT64.match(_MSGPACK(x)) for x in (math.inf, -math.inf, math.nan)) \
    and _MSGPACK(1.5) == bytes.fromhex("cb3ff8000000000000")


def _check_finite(values: list, data: bytes) -> None:
    """Raise ``EncodeError`` at the first record holding Infinity or NaN (written as ``null``).

    The step's msgpack encoding shows in C whether any float is non-finite. Only when it may be
    (or msgpack cannot hold a value) are the records looked at one by one: a record whose text
    holds no more ``null`` than its top-level ``None`` values (every one writes exactly one
    ``null``, as every non-finite float does) cannot hold one; the others are walked."""
    if _MSGPACK_FLOATS_OK:
        try:
            if _NONFINITE_FLOAT64.search(_MSGPACK(values)) is None:
                return
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
            pass  # a value msgpack cannot hold: look at each record
    lines = data.split(b"\n")
    for i, v in enumerate(values):
        if type(v) is dict:
            line = lines[i]
            if line.count(b"null") == countOf(v.values(), None):
                continue
        if _nonfinite(v):
            raise EncodeError("cannot write as JSON: Infinity and NaN have no JSON form", i)


def encode_verbatim(values: list) -> bytes:
    """Each value's own JSON text on a line: raw bytes the ``json`` deserializer has checked
    (``SinkPlugin.raw_values``) as they came, a tombstone (None) as ``null``. A text with a line
    break in it (whitespace between tokens; JSON strings escape theirs) is decoded and written
    again by ``encode_jsonl``, and so is any value that is not bytes, so every line holds exactly
    one value. Raises ``EncodeError`` as ``encode_jsonl`` does."""
    try:
        text = b"\n".join(values) + b"\n"
    except TypeError:  # a tombstone or a decoded value among them
        pass
    else:
        if text.count(b"\n") == len(values) and text.find(b"\r") < 0:
            return text
    out = []
    for i, v in enumerate(values):
        if type(v) is bytes and v.find(b"\n") < 0 and v.find(b"\r") < 0:
            out.append(v + b"\n")
            continue
        try:
            out.append(encode_jsonl([_decode_json(v) if type(v) is bytes else v]))
        except EncodeError as exc:
            raise EncodeError(str(exc), i) from None
    return b"".join(out)


_decode_json = msgspec.json.Decoder().decode


class JsonlWriter(Writer):
    __slots__ = ("out", "_encode")

    def __init__(self, out, verbatim: bool = False):
        self.out = out
        self._encode = encode_verbatim if verbatim else encode_jsonl

    def write(self, values: list) -> None:
        encode_in_steps(values, self._encode, self.out.write)

    def close(self) -> None:
        pass  # jsonl has no trailer

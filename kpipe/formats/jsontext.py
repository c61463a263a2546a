"""JSON text of one value, exactly or not at all: the one encoder every writer of JSON text shares
(jsonl lines, csv cells, parquet's text columns, and any sink that stores JSON text).

orjson first (fast; a ``Decimal`` as its exact number through ``base.json_default``); what it
refuses (integers past 64 bits, nesting past its 255 levels) goes to msgspec, which writes them
exactly, as JSON numbers, with datetimes in orjson's form (``+00:00``, where msgspec writes
``Z``). JSON has no Infinity and no NaN: both encoders would write ``null`` for them, a silent
change, so a value that holds a non-finite float anywhere is refused instead. So is a value neither encoder can write (an
unknown type, a string with a lone surrogate, nesting past msgspec's recursion limit).

    from kpipe.formats.jsontext import dumps, NotJson
    dumps({"n": 2**70})          # b'{"n":1180591620717411303424}'
    dumps(float("nan"))          # raises NotJson (a ValueError)
"""
from __future__ import annotations

import math
import re
from datetime import datetime, time

import msgspec
import orjson

from .base import json_default

__all__ = ["NotJson", "dumps", "dumps_exact", "has_nonfinite", "short_time"]


class NotJson(ValueError):
    """The value cannot be written as JSON text without changing it."""


_SHORT_TIME = re.compile(rb'\d\d:\d\d:\d\d\.\d{5}"')
_FIVE_DIGITS = re.compile(rb'\.\d{5}"').finditer


def short_time(data: bytes):
    """Where orjson's text may hold a time it wrote wrong: orjson 3.13 writes a ``time`` with 10000 to
    99999 microseconds with five digits (``00:00:00.10000`` for 0.01 s). A match (or a string that
    looks the same) sends the value to msgspec, which writes times right.

    The first match of ``_SHORT_TIME``, found from its rare tail (``.`` and five digits) first: the
    pattern searched whole tried a match at every digit pair, 0.8 µs per 100-byte record with
    timestamps in it, most of what encoding a jsonl batch cost."""
    for m in _FIVE_DIGITS(data):
        start = m.start() - 8
        if start >= 0:
            found = _SHORT_TIME.match(data, start)
            if found is not None:
                return found
    return None

# msgspec writes bytes as base64 (as json_default does), Decimal as a number keeping its scale.
_EXACT = msgspec.json.Encoder(decimal_format="number")
_isfinite = math.isfinite


def has_nonfinite(value) -> bool:
    """``value`` holds a float Infinity or NaN at any depth (containers: dict values, lists,
    tuples, sets). Called only when encoded text contains ``null``, where such a float could hide."""
    t = type(value)
    if t is dict:
        value = value.values()
    elif t is not list and t is not tuple and t is not set and t is not frozenset:
        return isinstance(value, float) and not _isfinite(value)
    for v in value:
        tv = type(v)
        if tv is str or tv is int or v is None or tv is bool:
            continue
        if tv is float:
            if not _isfinite(v):
                return True
        elif tv is dict or tv is list or tv is tuple or tv is set or tv is frozenset:
            if has_nonfinite(v):
                return True
        elif isinstance(v, float) and not _isfinite(v):
            return True
    return False


def dumps_exact(value) -> bytes:
    """msgspec's exact encoding (the fallback for what orjson refuses); raises ``NotJson``.
    Does not check for non-finite floats: ``dumps`` does."""
    try:
        data = _EXACT.encode(value)
        if data.find(b'Z"') >= 0:  # maybe a UTC datetime, which msgspec writes as Z
            data = _EXACT.encode(_times_as_text(value))
        return data
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
        raise NotJson(f"cannot write as JSON: {type(exc).__name__}: {exc}") from None


def _times_as_text(value):
    """``value`` with every datetime and time replaced by the text the orjson path writes for
    it (``+00:00``, not msgspec's ``Z``), so a record's text does not depend on the encoder."""
    t = type(value)
    if t is dict:
        return {k: _times_as_text(v) for k, v in value.items()}
    if t is list or t is tuple or t is set or t is frozenset:
        return [_times_as_text(v) for v in value]
    if isinstance(value, datetime):
        return orjson.loads(orjson.dumps(value))
    if isinstance(value, time):  # orjson refuses an aware time, and writes some wrong (short_time)
        return value.isoformat()
    return value


def dumps(value) -> bytes:
    """The JSON text of ``value``, exact, as compact UTF-8 bytes; raises ``NotJson`` when it
    cannot be written exactly (a non-finite float, an unknown type, a lone surrogate, too deep)."""
    try:
        data = orjson.dumps(value, default=json_default)
    except TypeError:  # orjson.JSONEncodeError
        data = dumps_exact(value)
    else:
        if short_time(data) is not None:
            data = dumps_exact(value)
    if data.find(b"null") >= 0 and _nonfinite(value):  # find, not in: half the cost on short text
        raise NotJson("cannot write as JSON: Infinity and NaN have no JSON form")
    return data


def _nonfinite(value) -> bool:
    try:
        return has_nonfinite(value)
    except RecursionError:  # deeper than Python's stack: refused, like msgspec refuses it
        return True

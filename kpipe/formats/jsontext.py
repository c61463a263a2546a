"""JSON text of one value, exactly or not at all: the one encoder every writer of JSON text shares
(jsonl lines, csv cells, parquet's text columns, and any sink that stores JSON text).

orjson first (fast; a ``Decimal`` as its exact number through ``base.json_default``); what it
refuses (integers past 64 bits, nesting past its 255 levels) goes to msgspec, which writes them
exactly, as JSON numbers (msgspec writes a UTC datetime as ``Z``, orjson as ``+00:00``: the same
instant). JSON has no Infinity and no
NaN: both encoders would write ``null`` for them, a silent change, so a value that holds a
non-finite float anywhere is refused instead. So is a value neither encoder can write (an
unknown type, a string with a lone surrogate, nesting past msgspec's recursion limit).

    from kpipe.formats.jsontext import dumps, NotJson
    dumps({"n": 2**70})          # b'{"n":1180591620717411303424}'
    dumps(float("nan"))          # raises NotJson (a ValueError)
"""
from __future__ import annotations

import math

import msgspec
import orjson

from .base import json_default

__all__ = ["NotJson", "dumps", "dumps_exact", "has_nonfinite"]


class NotJson(ValueError):
    """The value cannot be written as JSON text without changing it."""


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
        return _EXACT.encode(value)
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
        raise NotJson(f"cannot write as JSON: {type(exc).__name__}: {exc}") from None


def dumps(value) -> bytes:
    """The JSON text of ``value``, exact, as compact UTF-8 bytes; raises ``NotJson`` when it
    cannot be written exactly (a non-finite float, an unknown type, a lone surrogate, too deep)."""
    try:
        data = orjson.dumps(value, default=json_default)
    except TypeError:  # orjson.JSONEncodeError
        data = dumps_exact(value)
    if data.find(b"null") >= 0 and _nonfinite(value):  # find, not in: half the cost on short text
        raise NotJson("cannot write as JSON: Infinity and NaN have no JSON form")
    return data


def _nonfinite(value) -> bool:
    try:
        return has_nonfinite(value)
    except RecursionError:  # deeper than Python's stack: refused, like msgspec refuses it
        return True

"""Checking JSON values as the ``json`` deserializer would decode them, without decoding them.

For a sink that parses the values itself (``SinkPlugin.raw_values``): the runner still rejects,
at stage ``deserialize`` and with the deserializer's own message, every value the deserializer
would reject, and nothing else. msgspec skipping a value into ``msgspec.Raw`` checks its
syntax (about a sixth of a decode's time) but neither the UTF-8 inside strings nor whether a
number fits a float; values where either could matter (non-ASCII bytes; an exponent of three
digits or more; 300 digits in a row) are decoded for real. A fuzz of the two against each
other is in tests/test_sql_server_parse.py.
"""
from __future__ import annotations

import re

import msgspec

from kpipe.api import BadRecordError

__all__ = ["check_json"]

_skip = msgspec.json.Decoder(msgspec.Raw).decode
_decode = msgspec.json.Decoder().decode
_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)  # as JsonDeserializer
# A number that may not fit a float (1e309, or 309 digits before a point): decoding decides.
# Found in the text with digits as 0, E as e and signs dropped: "e000" or 300 zeros (a regex
# over the text itself took 30 times as long).
_SHAPE = bytes.maketrans(b"123456789E", b"000000000e")
_DIGITS = b"0" * 300
# "e000" through re's literal search, not `in`: in a text of many zeros (dates, ids) `in` keeps
# stopping on a candidate, re skips on: 0.03 µs a 100-byte value against 0.075
# (benchmarks/floor.py's check_json step). `in` stays faster for the 300 zeros.
_LONG_EXPONENT = re.compile(b"e000").search


def _plain(text: bytes) -> bool:
    """No byte past ASCII, and no number that may not fit a float (see ``_SHAPE``)."""
    if not text.isascii():
        return False
    shape = text.translate(_SHAPE, b"+-")
    return _LONG_EXPONENT(shape) is None and _DIGITS not in shape


def check_json(raw: list) -> list:
    """``[(index, BadRecordError)]`` for the values of ``raw`` that ``JsonDeserializer`` rejects,
    each error as it words it; None (a tombstone) is no value and passes."""
    values = [v for v in raw if v is not None] if None in raw else raw
    try:
        for v in values:
            _skip(v)
        if _plain(b"".join(values)):
            return []
    except _ERRORS:
        pass
    bad = []
    for i, v in enumerate(raw):
        if v is None:
            continue
        try:
            _skip(v)
            if _plain(v):
                continue
        except _ERRORS:
            pass
        try:
            _decode(v)
        except _ERRORS as exc:
            bad.append((i, BadRecordError(f"invalid JSON: {type(exc).__name__}: {exc}", index=i)))
    return bad

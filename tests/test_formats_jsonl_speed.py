"""The jsonl + gzip path's fast parts (issue 16) give what the plain versions give.

- ``short_time`` (found from its tail first) finds the same first match as the whole pattern
  searched from the start, on text made of the characters that matter;
- a ``time`` that orjson writes wrong still lands right in a jsonl batch of many records.
"""
from __future__ import annotations

import json
import re
from datetime import time

from hypothesis import given, settings
from hypothesis import strategies as st

from kpipe.formats import encode_jsonl
from kpipe.formats.jsontext import short_time

WHOLE = re.compile(rb'\d\d:\d\d:\d\d\.\d{5}"').search
TIMEISH = st.binary(max_size=60).map(lambda b: bytes(b"0123456789:.\"x"[c % 14] for c in b))


@settings(max_examples=2000, deadline=None)
@given(st.lists(TIMEISH | st.sampled_from([b"12:34:56.12345\"", b"1:2:3.12345\"", b".12345\""]), max_size=8))
def test_short_time_finds_what_the_whole_pattern_finds(parts):
    data = b"".join(parts)
    want, got = WHOLE(data), short_time(data)
    assert (got is None) == (want is None)
    if want is not None:
        assert got.span() == want.span()


def test_a_time_orjson_writes_wrong_lands_right_among_many_records():
    values = [{"n": i, "at": "2026-11-01T00:00:00Z"} for i in range(500)]
    values[321]["t"] = time(0, 0, 0, 10000)  # orjson 3.13: "00:00:00.10000"
    lines = encode_jsonl(values).splitlines()
    assert len(lines) == 500
    assert json.loads(lines[321])["t"] == "00:00:00.010000"
    assert [json.loads(x)["n"] for x in lines] == list(range(500))


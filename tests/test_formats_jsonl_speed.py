"""The jsonl + gzip path's fast parts (issue 16) give what the plain versions give.

- ``short_time`` (found from its tail first) finds the same first match as the whole pattern
  searched from the start, on text made of the characters that matter;
- a ``time`` that orjson writes wrong still lands right in a jsonl batch of many records;
- gzip level 1 through ISA-L (the ``isal`` package, ``kpipe[fast-gzip]``) decompresses, with the
  standard ``gzip`` module, to exactly the bytes written, as zlib's levels do.
"""
from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from datetime import time

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from kpipe.formats import encode_jsonl
from kpipe.formats import compression
from kpipe.formats.compression import GzipStream
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


def gzipped(chunks: list, level: int) -> bytes:
    out = io.BytesIO()
    stream = GzipStream(out, level)
    for c in chunks:
        stream.write(c)
    stream.close()
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=3000) | st.just(b'{"a":1}\n' * 500), max_size=6), st.sampled_from([1, 2, 6, 9]))
def test_gzip_decompresses_to_the_bytes_written(chunks, level):
    data = gzipped(chunks, level)
    assert gzip.decompress(data) == b"".join(chunks)
    assert data == gzipped(chunks, level)  # the same bytes on a replay


def test_level_1_is_isal_where_installed_and_zlib_otherwise(monkeypatch):
    isal_zlib = pytest.importorskip("isal.isal_zlib")  # kpipe[fast-gzip], in the test extra
    text = b"".join(b'{"order_id":%d,"country":"DE"}\n' % i for i in range(20000))
    fast = gzipped([text], 1)
    assert type(compression.deflater(1)) is type(isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15))
    assert type(compression.deflater(6)) is type(zlib.compressobj(6, zlib.DEFLATED, -15))
    monkeypatch.setattr(compression, "_ISAL", [None])  # as without the package
    slow = gzipped([text], 1)
    assert fast != slow  # really two engines
    assert gzip.decompress(fast) == gzip.decompress(slow) == text
    assert len(fast) <= len(slow) * 1.05

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
    assert gzip.decompress(data) == b"".join(chunks)  # the gzip module checks the CRC-32 and size
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


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8)
RECORDS = st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), JSON_VALUES, min_size=1), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(RECORDS)
def test_readers_see_the_same_rows_whichever_engine_gzipped_them(tmp_path_factory, records):
    """json, DuckDB's read_json and pyarrow.json read an ISA-L file as they read zlib's."""
    import duckdb
    import pyarrow as pa
    import pyarrow.json as pj

    text = encode_jsonl(records)
    d = tmp_path_factory.mktemp("gz")
    paths = []
    for engine in ("isal", "zlib"):
        saved = compression._ISAL[:]
        if engine == "zlib":
            compression._ISAL[:] = [None]  # as without the package
        try:
            path = d / f"{engine}.jsonl.gz"
            path.write_bytes(gzipped([text], 1))
            paths.append(path)
        finally:
            compression._ISAL[:] = saved
    assert [json.loads(x) for x in gzip.decompress(paths[0].read_bytes()).splitlines()] == records
    seen = []
    for path in paths:
        try:
            duck = duckdb.sql(f"SELECT * FROM read_json('{path}', format='newline_delimited')").fetchall()
        except duckdb.Error as exc:  # a shape DuckDB refuses: refused alike for both
            duck = type(exc).__name__
        try:
            with pa.input_stream(str(path), compression="gzip") as f:
                arrow = pj.read_json(f).to_pylist()
        except Exception as exc:  # pyarrow 26 refuses or trips on some shapes (lists of nulls)
            arrow = type(exc).__name__
        seen.append((repr(duck), repr(arrow)))
    assert seen[0] == seen[1]

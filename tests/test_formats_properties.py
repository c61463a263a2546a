"""Property tests (issue 14): arbitrary JSON-like records into every file format through the
files sink, with the runner's reaction to a bad record replayed. Whatever the values:

- nothing but ``BadRecordError`` ever escapes ``write``;
- every file written opens with its independent reader (json, csv, fastavro, pyarrow);
- each record either reads back equal under the documented conversions (docs/sinks/files.md,
  "How values land") or is reported bad, exactly once.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

import fastavro
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpipe.api import BadRecordError, SinkContext
from kpipe.sinks.files.sink import FilesSink
from s3kit import make_batch

CTX = SinkContext(pipeline="p", group="g")

# -- values ----------------------------------------------------------------------------------

HOSTILE_TEXT = st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x\udfffy", "null", "NaN", "\r\n,\"", "é€𝄞"])
TEXT = st.text(max_size=6) | HOSTILE_TEXT
INTS = st.integers(-(2**70), 2**70) | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64,
                                                      2**53 + 1])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, math.inf, -math.inf, math.nan])
SCALARS = st.none() | st.booleans() | INTS | FLOATS | TEXT
KEYS = st.sampled_from(["a", "b", "c", "value"]) | TEXT


def _nest(depth: int, kind: str):
    v = 1
    for _ in range(depth):
        v = {"a": v} if kind == "dict" else [v]
    return v


DEEP = st.builds(_nest, st.integers(95, 101), st.just("dict")) | st.builds(_nest, st.integers(46, 52), st.just("list")) \
    | st.builds(_nest, st.integers(250, 300), st.just("list"))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=8)
RECORDS = st.lists(st.dictionaries(KEYS, VALUES | DEEP, max_size=4) | VALUES, min_size=1, max_size=6)
# Avro rewrites keys that are not Avro names (documented): its records use names only.
AVRO_KEYS = st.sampled_from(["a", "b", "c", "value"])
AVRO_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(AVRO_KEYS, inner, max_size=3), max_leaves=8)
AVRO_RECORDS = st.lists(st.dictionaries(AVRO_KEYS, AVRO_VALUES, max_size=4) | AVRO_VALUES, min_size=1, max_size=6)

# -- equality under the documented conversions ------------------------------------------------


def same(got, want, *, absent_is_null=False, int_as_float=False) -> bool:
    """``got`` (read back) is ``want`` (written): same types (bool, int, float, str, None),
    NaN equals NaN, -0.0 keeps its sign, tuples read back as lists. ``absent_is_null``: a
    field missing from an object reads back as null (Avro, Parquet structs). ``int_as_float``:
    an integer may read back as the float of the same value (a Parquet column with floats)."""
    kw = {"absent_is_null": absent_is_null, "int_as_float": int_as_float}
    if want is None or isinstance(want, (bool, str)):
        return type(got) is type(want) and got == want
    if isinstance(want, int):
        return (type(got) is int and got == want) or (int_as_float and type(got) is float and got == want)
    if isinstance(want, float):
        if type(got) is not float:
            return False
        if math.isnan(want):
            return math.isnan(got)
        return got == want and math.copysign(1, got) == math.copysign(1, want)
    if isinstance(want, (list, tuple)):
        return type(got) is list and len(got) == len(want) and all(same(g, w, **kw) for g, w in zip(got, want))
    if isinstance(want, dict):
        if type(got) is not dict:
            return False
        if absent_is_null:
            keys = set(got) | set(want)
            return set(want) <= set(got) and all(same(got.get(k), want.get(k), **kw) for k in keys)
        return got.keys() == want.keys() and all(same(got[k], want[k], **kw) for k in want)
    raise AssertionError(f"unexpected value {want!r}")


def as_row(v) -> dict:
    return v if isinstance(v, dict) else {"value": v}


def csv_cell_ok(cell: str, want) -> bool:
    """csv: null an empty cell, text as it is, booleans true/false, numbers as Python writes
    them (``repr``: nan, inf, -0.0 included), anything nested as exact JSON text."""
    if want is None:
        return cell == ""
    if isinstance(want, str):
        return cell == want
    if isinstance(want, bool):
        return cell == ("true" if want else "false")
    if isinstance(want, int):
        return int(cell) == want
    if isinstance(want, float):
        return same(float(cell), want)
    return same(json.loads(cell), want)


def parquet_value_ok(got, want, typ) -> bool:
    """parquet: a typed column reads back as written (a field missing from a struct is null,
    an integer in a column with floats is that float); a text column, or a text field of a
    struct or list, holds text as it is and anything else as exact JSON text (the dataset's
    schema widens a scalar that meets another kind to text)."""
    import pyarrow as pa
    if want is None:
        return got is None
    if pa.types.is_string(typ) and not isinstance(want, str):
        return isinstance(got, str) and same(json.loads(got), want)
    if pa.types.is_struct(typ) and isinstance(want, dict) and isinstance(got, dict):
        return set(want) <= set(got) and all(
            parquet_value_ok(got[typ.field(i).name], want.get(typ.field(i).name), typ.field(i).type)
            for i in range(typ.num_fields))
    if pa.types.is_list(typ) and isinstance(want, (list, tuple)) and isinstance(got, list):
        return len(got) == len(want) and all(parquet_value_ok(g, w, typ.value_type) for g, w in zip(got, want))
    return same(got, want, absent_is_null=True, int_as_float=True)


# -- the run ---------------------------------------------------------------------------------

EXT = {"jsonl": "jsonl", "csv": "csv", "avro": "avro", "parquet": "parquet"}


def write_like_runner(fmt: str, values: list, path: Path) -> tuple[list[int], bytes | None]:
    """The runner under ``errors.sink: skip``: each reported record is dropped
    (``Batch.without``) and the rest written again. Returns the reported offsets and the file."""
    s = FilesSink({"path": str(path), "format": fmt, "compression": "none", "fsync": False}, CTX)
    s.open()
    b = make_batch(values, topic="t")
    rejected = []
    while True:
        try:
            s.write([b])  # anything but BadRecordError fails the test
            break
        except BadRecordError as exc:
            assert 0 <= exc.index < len(b.values), exc
            assert exc.offset == b.offset_of(exc.index), exc
            rejected.append(exc.offset)
            b = b.without(exc.index)
    files = list((path / "t" / "0").glob("*." + EXT[fmt]))
    assert len(files) == (1 if b.values else 0), files
    return rejected, files[0].read_bytes() if files else None


def check(fmt: str, values: list) -> None:
    with tempfile.TemporaryDirectory() as d:
        rejected, data = write_like_runner(fmt, values, Path(d))
    assert len(set(rejected)) == len(rejected), f"a record reported bad twice: {rejected}"
    kept = [v for i, v in enumerate(values) if i not in set(rejected)]
    if data is None:
        assert kept == []
        return
    if fmt == "jsonl":
        got = [json.loads(line) for line in data.splitlines()]
        assert len(got) == len(kept)
        for g, want in zip(got, kept):
            assert same(g, want), (g, want)
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
        header, rows = rows[0] if rows else [], rows[1:]
        assert len(rows) == len(kept), (rows, kept)
        for row, want in zip(rows, kept):
            want = as_row(want)
            assert set(want) <= set(header)
            cells = dict(zip(header, row)) if header else {}
            for c in header:
                assert csv_cell_ok(cells.get(c, ""), want.get(c)), (c, cells.get(c), want.get(c))
    elif fmt == "avro":
        got = list(fastavro.reader(io.BytesIO(data)))
        assert len(got) == len(kept)
        for g, want in zip(got, kept):
            assert same(g, as_row(want), absent_is_null=True), (g, want)
    else:
        table = pq.read_table(io.BytesIO(data))
        got = table.to_pylist()
        assert len(got) == len(kept)
        for g, want in zip(got, kept):
            want = as_row(want)
            assert set(want) <= set(g)
            for c in g:
                assert parquet_value_ok(g[c], want.get(c), table.schema.field(c).type), (c, g[c], want.get(c))


PROPS = settings(max_examples=int(os.environ.get("KPIPE_PROPERTY_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(RECORDS)
def test_jsonl_lands_exactly_or_reports_bad(values):
    check("jsonl", values)


@PROPS
@given(RECORDS)
def test_csv_lands_exactly_or_reports_bad(values):
    check("csv", values)


@PROPS
@given(AVRO_RECORDS)
def test_avro_lands_exactly_or_reports_bad(values):
    check("avro", values)


@PROPS
@given(RECORDS)
def test_parquet_lands_exactly_or_reports_bad(values):
    check("parquet", values)

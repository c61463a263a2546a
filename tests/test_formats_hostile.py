"""Issue 14, hostile values in the file formats (shared by the files and S3 sinks): a record lands
exactly as it was, or it is a bad record at its own index; never a crash, never a silent change,
and every file opens with the independent readers (json, csv, fastavro, pyarrow)."""
from __future__ import annotations

import csv
import io
import json
import uuid
from decimal import Decimal

import fastavro
import pyarrow.parquet as pq
import pytest

from kpipe.api import BadRecordError, SinkContext
from kpipe.formats import open_writer
from kpipe.sinks.files.sink import FilesSink
from s3kit import bucket, make_batch, moto_server, objects, s3  # noqa: F401  (fixtures)

CTX = SinkContext(pipeline="p", group="g")
EXT = {"jsonl": "jsonl", "csv": "csv", "avro": "avro", "parquet": "parquet"}
INF, NAN = float("inf"), float("nan")


def through_sink(tmp_path, fmt: str, values: list) -> tuple[list[int], list[bytes]]:
    """Write ``values`` (offsets 0..) through the files sink as the runner does under
    ``errors.sink: skip``: drop each reported record and write again. Returns the offsets
    reported bad and the bytes of the files written."""
    s = FilesSink({"path": str(tmp_path), "format": fmt, "compression": "none", "fsync": False}, CTX)
    s.open()
    rejected = write_dropping_bad(s, values)
    files = sorted((tmp_path / "t" / "0").glob("*." + EXT[fmt]))
    return rejected, [f.read_bytes() for f in files]


def through_s3(moto_server, client, bucket_name: str, fmt: str, values: list) -> tuple[list[int], list[bytes]]:
    """``through_sink`` for the S3 sink on moto, each call under a prefix of its own; the bytes
    are the objects written."""
    from kpipe.sinks.s3.sink import S3Sink

    prefix = uuid.uuid4().hex
    s = S3Sink({"bucket": bucket_name, "endpoint_url": moto_server.url, "region": "us-east-1", "prefix": prefix,
                "format": fmt, "compression": "none"}, CTX)
    s.open()
    try:
        rejected = write_dropping_bad(s, values)
    finally:
        s.close()
    return rejected, list(objects(client, bucket_name, prefix + "/").values())


def write_dropping_bad(s, values: list) -> list[int]:
    """Write ``values`` (topic t, partition 0, offsets 0..) through the open sink ``s`` as the
    runner does under ``errors.sink: skip``; returns the offsets reported bad."""
    b = make_batch(values, topic="t")
    rejected = []
    for _ in range(len(values) + 1):
        try:
            s.write([b])
            break
        except BadRecordError as exc:
            assert 0 <= exc.index < len(b.values)
            assert exc.offset == b.offset_of(exc.index)
            rejected.append(exc.offset)
            b = b.without(exc.index)
    return rejected


def jsonl_rows(data: bytes) -> list:
    return [json.loads(line) for line in data.splitlines()]


def csv_rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def parquet_rows(data: bytes) -> list[dict]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


def avro_rows(data: bytes) -> list[dict]:
    return list(fastavro.reader(io.BytesIO(data)))


def nest(depth: int, leaf=1, kind: str = "dict"):
    v = leaf
    for _ in range(depth):
        v = {"a": v} if kind == "dict" else [v]
    return v


# -- 1. jsonl: Infinity and NaN are bad records, at any depth ---------------------------------


@pytest.mark.parametrize("hostile", [INF, -INF, NAN, [1.5, NAN], {"x": {"y": [0.0, -INF]}}, [[{"z": NAN}]]])
def test_jsonl_refuses_infinity_and_nan_at_any_depth(tmp_path, hostile):
    values = [{"i": 0, "v": 1.5}, {"i": 1, "v": hostile}, {"i": 2, "v": None}, None, {"i": 4, "v": [None, 2.5]}]
    rejected, files = through_sink(tmp_path, "jsonl", values)
    assert rejected == [1]
    assert jsonl_rows(files[0]) == [values[0], values[2], None, values[4]]


def test_jsonl_infinity_as_a_whole_record_or_beside_nulls_and_null_text(tmp_path):
    values = [{"null": "null", "n": None}, NAN, {"a": None, "b": INF}, "null", {"k": {"n": None}, "f": 1e308}]
    rejected, files = through_sink(tmp_path, "jsonl", values)
    assert rejected == [1, 2]
    assert jsonl_rows(files[0]) == [values[0], "null", values[4]]


def test_csv_and_parquet_refuse_nested_infinity(tmp_path):
    # nested values are JSON text in csv (and in parquet's text columns): JSON has no Infinity
    values = [{"a": [1.5]}, {"a": [INF]}, {"a": "text"}]
    rejected, files = through_sink(tmp_path / "csv", "csv", values)
    assert rejected == [1]
    assert csv_rows(files[0]) == [{"a": "[1.5]"}, {"a": "text"}]
    rejected, files = through_sink(tmp_path / "pq", "parquet", values)
    assert rejected == [1]
    assert parquet_rows(files[0]) == [{"a": "[1.5]"}, {"a": "text"}]


# -- 2. avro: integers past 64 bits are bad records, never rounded to doubles ------------------


@pytest.mark.parametrize("big", [2**63, -(2**63) - 1, 2**64, 2**100])
@pytest.mark.parametrize("others", [[1, 2], [1.5, 2]])
def test_avro_refuses_integers_past_64_bits(tmp_path, big, others):
    values = [{"n": others[0]}, {"n": big}, {"n": others[1]}, {"n": [{"m": big}]}]
    rejected, files = through_sink(tmp_path, "avro", values)
    assert rejected == [1, 3]
    assert avro_rows(files[0]) == [{"n": others[0]}, {"n": others[1]}]


def test_avro_with_a_declared_double_refuses_integers_past_64_bits():
    schema = {"type": "record", "name": "R", "fields": [{"name": "n", "type": ["null", "long", "double"]}]}
    out = io.BytesIO()
    w = open_writer("avro", out, "none", seed="s", avro_schema=schema)
    from kpipe.formats import EncodeError
    with pytest.raises(EncodeError) as info:
        w.write([{"n": 1}, {"n": 2**63}])
    assert info.value.index == 1


def test_avro_keeps_the_64_bit_edges_exactly(tmp_path):
    values = [{"n": 2**63 - 1}, {"n": -(2**63)}, {"n": 0.5}]
    rejected, files = through_sink(tmp_path, "avro", values)
    assert rejected == []
    assert avro_rows(files[0]) == values


# -- 3. parquet: an empty object lands as JSON text ---------------------------------------------


@pytest.mark.parametrize("empty", [{}, {"e": {}}, [{}], [[], [{}]]])
def test_parquet_empty_objects_land_as_json_text(tmp_path, empty):
    values = [{"i": 0, "v": empty}, {"i": 1, "v": None}]
    rejected, files = through_sink(tmp_path, "parquet", values)
    assert rejected == []
    rows = parquet_rows(files[0])
    assert [r["i"] for r in rows] == [0, 1]
    assert json.loads(rows[0]["v"]) == empty and rows[1]["v"] is None


def test_parquet_empty_object_beside_filled_ones_stays_a_struct(tmp_path):
    values = [{"v": {}}, {"v": {"x": 1}}]
    rejected, files = through_sink(tmp_path, "parquet", values)
    assert rejected == []
    assert parquet_rows(files[0]) == [{"v": {"x": None}}, {"v": {"x": 1}}]


# -- 4. parquet: nesting deeper than readers open is a bad record, the file still opens -------


@pytest.mark.parametrize("kind,depth", [("dict", 99), ("dict", 200), ("list", 50), ("list", 120)])
def test_parquet_too_deep_is_a_bad_record_and_the_file_opens(tmp_path, kind, depth):
    values = [{"i": 0, "w": nest(3, kind=kind)}, {"i": 1, "v": nest(depth, kind=kind)}, {"i": 2, "v": None}]
    rejected, files = through_sink(tmp_path, "parquet", values)
    assert rejected == [1]
    rows = parquet_rows(files[0])
    assert rows == [{"i": 0, "w": nest(3, kind=kind), "v": None}, {"i": 2, "w": None, "v": None}]


@pytest.mark.parametrize("kind,depth", [("dict", 98), ("list", 49)])
def test_parquet_as_deep_as_readers_open_lands(tmp_path, kind, depth):
    values = [{"v": nest(depth, kind=kind)}]
    rejected, files = through_sink(tmp_path, "parquet", values)
    assert rejected == []
    assert parquet_rows(files[0]) == values


# -- 5. one exact JSON text encoder for jsonl, csv and parquet's text columns -----------------


HARD = [{"big": 2**70, "neg": -(2**65)}, [Decimal("12.340"), 2**64], nest(300)]


@pytest.mark.parametrize("value", HARD, ids=["big-ints", "decimal", "deep-300"])
def test_csv_and_parquet_text_write_what_jsonl_writes(tmp_path, value):
    values = [{"k": value}, {"k": "plain"}]
    rejected, files = through_sink(tmp_path / "j", "jsonl", values)
    assert rejected == []
    line = files[0].splitlines()[0]
    expected = json.loads(line)["k"]
    assert expected == json.loads(json.dumps(value, default=float)) if isinstance(value, list) else expected == value

    rejected, files = through_sink(tmp_path / "c", "csv", values)
    assert rejected == []
    cells = csv_rows(files[0])
    assert json.loads(cells[0]["k"]) == expected and cells[1]["k"] == "plain"

    rejected, files = through_sink(tmp_path / "p", "parquet", values)
    assert rejected == []
    rows = parquet_rows(files[0])
    assert json.loads(rows[0]["k"]) == expected and rows[1]["k"] == "plain"
    # the same bytes: one encoder
    assert cells[0]["k"].encode() == rows[0]["k"].encode() == line[len(b'{"k":'):-1]


def test_one_shared_encoder():
    from kpipe.formats import csvfile, jsonl, jsontext, parquet
    assert csvfile.dumps is jsontext.dumps and parquet.dumps is jsontext.dumps
    assert jsonl.dumps_exact is jsontext.dumps_exact
    assert jsontext.dumps({"n": 2**70}) == b'{"n":1180591620717411303424}'
    with pytest.raises(ValueError):
        jsontext.dumps([NAN])


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "avro"])
def test_lone_surrogates_are_bad_records(tmp_path, fmt):
    values = [{"s": "ok"}, {"s": "a\ud800b"}, {"s": "nul\x00ok"}]
    rejected, files = through_sink(tmp_path, fmt, values)
    assert rejected == [1]
    read = {"csv": csv_rows, "parquet": parquet_rows, "jsonl": jsonl_rows, "avro": avro_rows}[fmt]
    assert read(files[0]) == [values[0], values[2]]


# -- parquet: pyarrow's silent coercions (found by the property tests) ------------------------


@pytest.mark.parametrize("col", [[1.5, True], [[0.0, False]], [{"a": 1.5}, {"a": True}], [b"x", "a"]],
                         ids=["bool-after-float", "nested-list", "nested-struct", "text-after-bytes"])
def test_parquet_mixed_booleans_and_floats_land_as_json_text(tmp_path, col):
    values = [{"v": v} for v in col]
    rejected, files = through_sink(tmp_path, "parquet", values)
    assert rejected == []
    got = [r["v"] for r in parquet_rows(files[0])]
    for g, want in zip(got, col):
        assert isinstance(g, str)
        if isinstance(want, str):
            assert g == want
        elif isinstance(want, bytes):
            assert json.loads(g) == "eA=="  # bytes are base64 in JSON text
        else:
            assert json.dumps(json.loads(g)) == json.dumps(want)  # false stays false, not 0.0


def test_parquet_refuses_a_file_of_only_empty_objects(tmp_path):
    # Parquet without a column has no row count: the rows would vanish
    rejected, files = through_sink(tmp_path, "parquet", [{}, {"a": 1}])
    assert rejected == [] and parquet_rows(files[0]) == [{"a": None}, {"a": 1}]
    rejected, files = through_sink(tmp_path / "only", "parquet", [{}])
    assert rejected == [0] and files == []


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_a_field_name_with_a_lone_surrogate_is_a_bad_record(tmp_path, fmt):
    values = [{"a": 1}, {"\ud800": 2}, {"a": 3}]
    rejected, files = through_sink(tmp_path, fmt, values)
    assert rejected == [1]
    read = {"csv": csv_rows, "parquet": parquet_rows, "jsonl": jsonl_rows}[fmt]
    assert [r["a"] for r in read(files[0])] == (["1", "3"] if fmt == "csv" else [1, 3])


@pytest.mark.parametrize("fmt", ["avro", "jsonl", "csv", "parquet"])
@pytest.mark.parametrize("kind", ["dict", "list"])
def test_nesting_past_the_stack_is_a_bad_record_not_a_crash(tmp_path, fmt, kind):
    values = [{"k": {"a": 1}}, {"k": nest(3000, kind=kind)}, {"k": {"a": 2}}]
    rejected, files = through_sink(tmp_path, fmt, values)
    assert rejected == [1]
    read = {"csv": csv_rows, "parquet": parquet_rows, "jsonl": jsonl_rows, "avro": avro_rows}[fmt]
    got = read(files[0])
    assert len(got) == 2


# -- the S3 sink shares the writers ------------------------------------------------------------


@pytest.mark.parametrize("fmt,hostile,read", [("jsonl", {"a": [NAN]}, jsonl_rows),
                                              ("avro", {"a": 2**64}, avro_rows),
                                              ("parquet", {"a": nest(99)}, parquet_rows)])
def test_s3_sink_reports_the_hostile_record_at_its_offset(moto_server, s3, bucket, fmt, hostile, read):
    from kpipe.sinks.s3.sink import S3Sink
    sk = S3Sink({"bucket": bucket, "endpoint_url": moto_server.url, "region": "us-east-1", "format": fmt,
                 "compression": "none"}, CTX)
    sk.open()
    b = make_batch([{"a": None}, hostile, {"a": None}], 10)
    with pytest.raises(BadRecordError) as info:
        sk.write([b])
    assert info.value.offset == 11
    sk.write([b.without(info.value.index)])
    got = objects(s3, bucket)
    assert [r for key in sorted(got) for r in read(got[key])] == [{"a": None}, {"a": None}]


def test_jsonl_finds_nan_beside_values_msgpack_cannot_hold(tmp_path):
    # the C pre-check (msgpack) cannot encode integers past 64 bits: the records are looked at one by one
    values = [{"big": 2**70, "n": {"x": None}}, {"v": [{"w": NAN}], "n": {"x": None}}, {"big": -(2**70), "f": 1.5}]
    rejected, files = through_sink(tmp_path, "jsonl", values)
    assert rejected == [1]
    assert jsonl_rows(files[0]) == [values[0], values[2]]


def test_the_shared_encoder_refuses_nan_inside_a_set():
    # a python transform may return a set; orjson writes its NaN as null without a word
    from kpipe.formats.jsontext import NotJson, dumps

    for value in ({float("nan")}, {"a": [frozenset({float("inf")})]}):
        with pytest.raises(NotJson, match="Infinity and NaN"):
            dumps(value)
    assert dumps({"a": {1.5}}) == b'{"a":[1.5]}'

"""The shared format and path code (kpipe.formats, kpipe.paths), read back with each format's
standard reader: json, csv, gzip, zstandard, fastavro, pyarrow."""
from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import random
from decimal import Decimal

import fastavro
import pyarrow.parquet as pq
import pytest
import zstandard

from kpipe.formats import EncodeError, FileFormat, encode_csv, encode_jsonl, extension, open_writer
from kpipe.formats.avro import infer_schema
from kpipe.paths import NULL_SEGMENT, Layout, PathTemplate, TemplateError, connect_name, object_name, \
    parse_connect_name, parse_object_name, segment
from s3kit import make_batch

RECORDS = [{"id": i, "name": f"n{i}", "amount": i * 0.5, "ok": i % 2 == 0, "tags": ["a", str(i)],
            "nested": {"x": i, "y": None}} for i in range(3000)]


def written(fmt: str, values: list, compression: str | None = None, **kw) -> bytes:
    out = io.BytesIO()
    w = open_writer(fmt, out, compression, seed="orders+0+0+9", **kw)
    w.write(values)
    w.close()
    return out.getvalue()


# -- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_jsonl_reads_back_with_json(compression):
    data = written("jsonl", RECORDS + [None, "text", 7, b"\x00\xff"], compression)
    if compression == "gzip":
        data = gzip.decompress(data)
    elif compression == "zstd":
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    assert [json.loads(line) for line in data.splitlines()] == RECORDS + [None, "text", 7, "AP8="]


def test_gzip_output_is_byte_identical_and_has_no_mtime_or_name():
    a, b = written("jsonl", RECORDS, "gzip"), written("jsonl", RECORDS, "gzip")
    assert a == b
    assert a[:4] == b"\x1f\x8b\x08\x00" and a[4:8] == b"\0\0\0\0"  # no FNAME flag, mtime 0
    assert gzip.decompress(a) == encode_jsonl(RECORDS)


def test_csv_header_is_the_union_of_fields_in_first_seen_order():
    values = [{"a": 1, "b": "x,y"}, {"c": True, "a": None}, {"b": {"n": [1]}}, "plain"]
    rows = list(csv.reader(io.StringIO(gzip.decompress(written("csv", values, "gzip")).decode(), newline="")))
    assert rows == [["a", "b", "c", "value"], ["1", "x,y", "", ""], ["", "", "true", ""],
                    ["", '{"n":[1]}', "", ""], ["", "", "", "plain"]]
    assert encode_csv(values) == written("csv", values)


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_avro_reads_back_with_fastavro(compression):
    data = written("avro", RECORDS, compression)
    reader = fastavro.reader(io.BytesIO(data))
    assert reader.codec == {"none": "null", "gzip": "deflate", "zstd": "zstandard"}[compression]
    assert list(reader) == RECORDS
    assert data == written("avro", RECORDS, compression)  # the sync marker comes from the seed


def test_avro_schema_is_inferred_nullable_and_names_are_made_valid():
    values = [{"id": 1, "created-at": "x", "2nd": 1.5}, {"id": "s", "deep": {"k": [1, None]}}, 7]
    schema, _ = infer_schema(values)
    fields = {f["name"]: f["type"] for f in schema["fields"]}
    assert list(fields) == ["id", "created_at", "_2nd", "deep", "value"]
    assert fields["id"] == ["null", "long", "string"]
    assert all(f["default"] is None and f["type"][0] == "null" for f in schema["fields"])
    got = list(fastavro.reader(io.BytesIO(written("avro", values))))
    assert got[0] == {"id": 1, "created_at": "x", "_2nd": 1.5, "deep": None, "value": None}
    assert got[1]["deep"] == {"k": [1, None]} and got[2]["value"] == 7


def test_avro_with_a_given_schema_and_a_record_that_does_not_fit():
    schema = {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "long"}]}
    out = io.BytesIO()
    w = open_writer("avro", out, avro_schema=schema, seed="s")
    with pytest.raises(EncodeError) as info:
        w.write([{"id": 1}, {"id": 2}, {"id": "three"}])
    assert info.value.index == 2


@pytest.mark.parametrize("compression", ["snappy", "none", "gzip", "zstd"])
def test_parquet_reads_back_with_pyarrow(compression):
    data = written("parquet", RECORDS, compression)
    table = pq.read_table(io.BytesIO(data))
    assert table.to_pylist() == RECORDS
    assert pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0).compression == compression.upper() \
        .replace("NONE", "UNCOMPRESSED")
    assert data == written("parquet", RECORDS, compression)


def test_parquet_mixed_columns_become_text():
    rows = pq.read_table(io.BytesIO(written("parquet", [{"a": 1}, {"a": "x"}, {"a": None, "b": None}, 5]))).to_pylist()
    assert rows == [{"a": "1", "b": None, "value": None}, {"a": "x", "b": None, "value": None},
                    {"a": None, "b": None, "value": None}, {"a": None, "b": None, "value": 5}]


def test_jsonl_writes_big_integers_and_decimals_exactly_as_numbers():
    records = [{"a": 1}] * 300 + [{"a": 2**70, "d": Decimal("12.340"), "n": -2**80}, {"b": 2}]
    lines = written("jsonl", records).splitlines()
    back = [json.loads(line, parse_float=Decimal) for line in lines]
    assert back == records and back[300]["d"].as_tuple() == Decimal("12.340").as_tuple()
    assert lines[300] == b'{"a":1180591620717411303424,"d":12.340,"n":-1208925819614629174706176}'


def test_jsonl_names_the_record_json_cannot_hold():
    with pytest.raises(EncodeError) as info:
        written("jsonl", [{"a": 1}] * 3000 + [{"a": object()}])
    assert info.value.index == 3000


def test_extensions_follow_kafka_connect():
    assert [extension(f, c) for f, c in [("jsonl", "none"), ("jsonl", "gzip"), ("csv", "zstd"), ("avro", "gzip"),
                                          ("parquet", "snappy")]] == [".jsonl", ".jsonl.gz", ".csv.zst", ".avro",
                                                                      ".parquet"]
    assert [extension(f, c, "kafka-connect") for f, c in [("jsonl", "none"), ("jsonl", "gzip"), ("csv", "gzip"),
                                                          ("parquet", "snappy"), ("parquet", "none"),
                                                          ("parquet", "zstd")]] == \
        [".json", ".json.gz", ".csv.gz", ".snappy.parquet", ".parquet", ".zstd.parquet"]


def test_format_config_rejects_impossible_pairs():
    with pytest.raises(ValueError, match="cannot use compression 'snappy'"):
        FileFormat.from_config({"format": "jsonl", "compression": "snappy"})
    assert FileFormat.from_config({"format": "parquet"}).compression == "snappy"


# -- paths -----------------------------------------------------------------------------------


def test_template_is_evaluated_per_record():
    day = 86_400_000
    t0 = int(dt.datetime(2026, 11, 26, 23, 59, tzinfo=dt.timezone.utc).timestamp() * 1000)
    values = [{"country": "DE"}, {"country": "FR"}, {"country": "DE"}, {"other": 1}, "text", {"country": "DE"}]
    stamps = [t0, t0, t0 + day, t0, None, t0]
    b = make_batch(values, 100, timestamps=stamps)
    groups = PathTemplate("{topic}/dt={timestamp:%Y-%m-%d}/country={value.country}").group(b)
    assert groups == [
        ("orders/dt=2026-11-26/country=DE", [0, 5]),
        ("orders/dt=2026-11-26/country=FR", [1]),
        ("orders/dt=2026-11-27/country=DE", [2]),
        (f"orders/dt=2026-11-26/country={NULL_SEGMENT}", [3]),
        (f"orders/dt={NULL_SEGMENT}/country={NULL_SEGMENT}", [4]),
    ]


def test_template_without_record_fields_is_one_group():
    b = make_batch([{"a": 1}] * 5, 0, partition=3)
    assert PathTemplate("{topic}/{partition}").group(b) == [("orders/3", None)]


def test_timestamp_cache_agrees_with_strftime_across_boundaries():
    rng = random.Random(7)
    stamps = sorted(rng.randrange(1_700_000_000_000, 1_800_000_000_000) for _ in range(3000))
    stamps += [1_795_000_000_000 + d for d in (-1, 0, 999, 1000, 59_999, 60_000, 3_599_999, 3_600_000)]
    for fmt in ("%Y-%m-%d", "%Y/%m/%d/%H", "%H:%M", "%S", "%Y%m%d%H%M%S%f"):
        t = PathTemplate("x={timestamp:" + fmt + "}")
        got = t._timestamps(fmt, stamps)
        want = ["/".join(segment(p) for p in dt.datetime.fromtimestamp(s / 1000, dt.timezone.utc).strftime(fmt)
                         .split("/")) for s in stamps]
        assert got == want, fmt


def test_values_are_made_path_safe():
    assert segment("a/b") == "a%2Fb"
    assert segment("..") == "%2E." and segment(".x") == "%2Ex" and segment("_kpipe") == "%5Fkpipe"
    assert segment("Zürich 1~") == "Z%C3%BCrich%201%7E"
    assert segment("\x00\n") == "%00%0A"
    assert segment("") == NULL_SEGMENT
    b = make_batch([{"k": "../../etc"}, {"k": True}, {"k": 1.5}, {"k": [1, 2]}, {"k": ""}], 0,
                   keys=[b"k/1", None, b"x", b"y", b"z"])
    assert [p for p, _ in PathTemplate("{value.k}").group(b)] == \
        ["%2E.%2F..%2Fetc", "true", "1.5", "%5B1%2C2%5D", NULL_SEGMENT]
    assert [p for p, _ in PathTemplate("{key}").group(b)] == ["k%2F1", NULL_SEGMENT, "x", "y", "z"]


@pytest.mark.parametrize("template", ["{nope}", "/abs", "a//b", "a/", "{value}", "a/../b", "_hidden/{topic}",
                                      "{timestamp:}", "a{", "a\\b"])
def test_bad_templates_are_refused(template):
    with pytest.raises(TemplateError):
        PathTemplate(template)


def test_names_round_trip():
    assert object_name("orders.v1", 3, 0, 9_999, ".jsonl.gz") == "orders.v1+3+0000000000000000000+0000000000000009999.jsonl.gz"
    assert parse_object_name("orders.v1+3+0000000000000000000+0000000000000009999.snappy.parquet") == \
        ("orders.v1", 3, 0, 9_999)
    assert connect_name("orders", 3, 42, ".json.gz") == "orders+3+0000000042.json.gz"
    assert parse_connect_name("orders+3+0000000042.json.gz") == ("orders", 3, 42)


def test_layouts():
    kp = Layout("kpipe", "/raw/orders/", None, ".jsonl")
    assert kp.key("orders", 3, "orders/3", 10, 19) == "raw/orders/orders/3/orders+3+0000000000000000010+0000000000000000019.jsonl"
    kc = Layout("kafka-connect", "", None, ".json.gz")
    assert kc.key("orders", 3, "partition=3", 42, 99) == "topics/orders/partition=3/orders+3+0000000042.json.gz"
    assert kc.owner("topics/orders/partition=3/orders+3+0000000042.json.gz") == ("orders", 3, 42)
    assert kp.owner("raw/orders/orders/3/orders+3+0000000000000000010+0000000000000000019.jsonl") == ("orders", 3, 10)


def test_avro_uses_the_deserializers_schema_when_every_record_fits():
    order = {"type": "record", "name": "Order", "namespace": "shop",
             "fields": [{"name": "id", "type": "long"}, {"name": "note", "type": ["null", "string"], "default": None}]}
    fits = written("avro", [{"id": 1, "note": None}, {"id": 2, "note": "x"}], value_schema=order)
    reader = fastavro.reader(io.BytesIO(fits))
    assert reader.writer_schema["name"] == "shop.Order" and list(reader) == [{"id": 1, "note": None},
                                                                             {"id": 2, "note": "x"}]
    odd = written("avro", [{"id": 1}, {"id": "two"}], value_schema=order)  # does not fit: inferred
    reader = fastavro.reader(io.BytesIO(odd))
    assert reader.writer_schema["name"] == "kpipe.Record" and list(reader) == [{"id": 1}, {"id": "two"}]
    json_schema = {"type": "object", "properties": {"id": {"type": "integer"}}}  # not Avro: ignored
    assert fastavro.reader(io.BytesIO(written("avro", [{"id": 1}], value_schema=json_schema))).writer_schema[
        "name"] == "kpipe.Record"

"""Issue 15, item 1 on S3: the objects under one prefix share one schema, kept in
``_kpipe/schema.json`` and changed only by compare-and-set, so writers in several processes
widen it without losing a column; what lands reads back as one table with pyarrow.dataset (and
DuckDB where installed) over a copy of the prefix."""
from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from kpipe.api import SinkContext
from kpipe.sinks.s3.sink import S3Sink
from s3kit import bucket, make_batch, moto_server, objects, s3  # noqa: F401  (fixtures)
from test_dataset_schema import at_once, by_id, duckdb, read_duckdb

CTX = SinkContext(pipeline="p", group="g", log=logging.getLogger("test.s3.schema"))


def sink(moto_server, bucket, **config) -> S3Sink:
    s = S3Sink({"bucket": bucket, "endpoint_url": moto_server.url, "region": "us-east-1", "prefix": "lake",
                "format": "parquet", **config}, CTX)
    s.open()
    return s


def download(s3, bucket, prefix, into) -> None:
    for key, data in objects(s3, bucket, prefix, state=True).items():
        path = into / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_two_processes_widen_one_s3_dataset(moto_server, s3, bucket, tmp_path, caplog):
    a, b = sink(moto_server, bucket), sink(moto_server, bucket)  # two runs, two cached copies
    a.write([make_batch([{"id": 0, "v": 1, "n": None}], 0, partition=0)])
    b.write([make_batch([{"id": 1, "v": 7.25, "only_b": "x"}], 0, partition=1)])
    a.write([make_batch([{"id": 2, "v": 2, "only_a": True}], 1, partition=0)])  # a's copy is stale
    assert "widened from bigint to double" in caplog.text
    state = json.loads(objects(s3, bucket, "lake/_kpipe/schema.json", state=True)["lake/_kpipe/schema.json"])
    assert state["columns"] == {"id": "bigint", "v": "double", "n": "null", "only_b": "text", "only_a": "boolean"}
    download(s3, bucket, "lake", tmp_path)
    rows = by_id(ds.dataset(str(tmp_path / "lake"), format="parquet").to_table().to_pylist())
    assert rows == {0: {"id": 0, "v": 1.0, "n": None, "only_b": None, "only_a": None},
                    1: {"id": 1, "v": 7.25, "n": None, "only_b": "x", "only_a": None},
                    2: {"id": 2, "v": 2.0, "n": None, "only_b": None, "only_a": True}}
    duck = read_duckdb(tmp_path / "lake")
    if duck is not None:
        assert {r["id"]: (r["v"], r["only_b"], r["only_a"]) for r in duck} == {
            0: (1.0, None, None), 1: (7.25, "x", None), 2: (2.0, None, True)}
    assert pq.read_schema(tmp_path / "lake" / "_common_metadata").field("v").type == pa.float64()


def test_concurrent_s3_writers_lose_no_column(moto_server, s3, bucket, tmp_path):
    def work(p):
        s = sink(moto_server, bucket)
        for k in range(3):
            s.write([make_batch([{"id": p * 10 + k, f"f{p}_{k}": k}], k, partition=p)])

    at_once(3, work)
    state = json.loads(objects(s3, bucket, "lake/_kpipe/schema.json", state=True)["lake/_kpipe/schema.json"])
    assert set(state["columns"]) == {"id"} | {f"f{p}_{k}" for p in range(3) for k in range(3)}
    download(s3, bucket, "lake", tmp_path)
    # the reader files are of the newest schema, whichever writer's PUT landed last
    assert pq.read_schema(tmp_path / "lake" / "+schema.parquet").names == list(state["columns"])
    rows = by_id(ds.dataset(str(tmp_path / "lake"), format="parquet").to_table().to_pylist())
    assert all(rows[p * 10 + k][f"f{p}_{k}"] == k for p in range(3) for k in range(3))


def s3_table(moto_server, path: str):
    """pyarrow.dataset over exactly ``bucket/prefix`` on the S3 server, as a reader does it."""
    from pyarrow import fs

    from kpipe.sinks.s3.testing import CREDENTIALS
    s3fs = fs.S3FileSystem(endpoint_override=moto_server.url.split("://", 1)[1], scheme="http",
                           access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                           region="us-east-1")
    return ds.dataset(path, filesystem=s3fs, format="parquet").to_table()


def test_kafka_connect_layout_a_table_per_topic_directory(moto_server, s3, bucket, tmp_path):
    # Connect's layout makes each topics/<topic>/ a table of its own: its schema and reader
    # files are the topic's, in that directory, where a table defined over it sees them.
    s = sink(moto_server, bucket, layout="kafka-connect")
    s.write([make_batch([{"id": 0, "v": 1}], 0, partition=0)])
    s.write([make_batch([{"id": 1, "v": 7.25, "note": "x"}], 0, partition=1)])  # widens v, after partition 0's file
    s.write([make_batch([{"pid": "p-1"}], 0, topic="payments", partition=0)])
    orders = s3_table(moto_server, f"{bucket}/lake/topics/orders")
    assert orders.schema.field("v").type == pa.float64()
    assert by_id(orders.to_pylist()) == {0: {"id": 0, "v": 1.0, "note": None}, 1: {"id": 1, "v": 7.25, "note": "x"}}
    assert s3_table(moto_server, f"{bucket}/lake/topics/payments").to_pylist() == [{"pid": "p-1"}]
    state = objects(s3, bucket, "lake/_kpipe/schema/", state=True)
    assert json.loads(state["lake/_kpipe/schema/orders.json"])["columns"] == {"id": "bigint", "v": "double",
                                                                              "note": "text"}
    download(s3, bucket, "lake", tmp_path)
    assert pq.read_schema(tmp_path / "lake/topics/orders/_common_metadata").names == ["id", "v", "note"]
    if duckdb is not None:
        got = duckdb.sql(f"select id, v, note from read_parquet('{tmp_path}/lake/topics/orders/**/*.parquet', "
                         "union_by_name = true) order by id").fetchall()
        assert got == [(0, 1.0, None), (1, 7.25, "x")]

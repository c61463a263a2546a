"""The delta sink: the conformance kit on a local table and on S3 (moto), read back with
deltalake and with pyarrow over the current version's files (an independent reader); fencing
of a stale writer by Delta's own txn actions; schema mapping and bad records; S3 safety."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from deltalake import DeltaTable

from kpipe.api import BadRecordError, FatalError, OffsetConflict, SinkContext
from kpipe.sinks.delta import plugin as delta_plugin
from kpipe.sinks.delta.sink import DeltaSink, app_id
from kpipe.testing import SinkConformance
from s3kit import bucket, make_batch, moto_server, s3  # noqa: F401


def rows(uri, options=None):
    """Every row of the table's current version: deltalake's reader, checked against pyarrow
    reading the very files that version lists."""
    dt = DeltaTable(uri, storage_options=options)
    got = dt.to_pyarrow_table().to_pylist()
    if options is None:
        files = [u.removeprefix("file://") for u in dt.file_uris()]
        raw = pads.dataset(files, format="parquet").to_table().to_pylist() if files else []
        parts = set(dt.metadata().partition_columns)  # in the paths, not the files
        key = lambda r: sorted((k, str(v)) for k, v in r.items() if v is not None and k not in parts)  # noqa: E731
        assert sorted(map(key, raw)) == sorted(map(key, got))
    return got


class TestDeltaLocal(SinkConformance):
    plugin = delta_plugin

    def config(self, tmp_path):
        return {"uri": str(tmp_path / "table")}

    def deletes_config(self, tmp_path):
        return {"uri": str(tmp_path / "upsert"), "mode": "upsert", "key": ["id"]}

    def bad_value(self, topic, partition, offset):
        return {"id": f"{topic}/{partition}/{offset}", "n": "not a number", "text": "bad"}

    def read_back(self, config):
        if not DeltaTable.is_deltatable(config["uri"], storage_options=config.get("storage_options")):
            return []
        return rows(config["uri"], config.get("storage_options"))


class TestDeltaS3(TestDeltaLocal):
    @pytest.fixture(autouse=True)
    def _server(self, moto_server, bucket):  # noqa: F811
        self.options = {"AWS_ENDPOINT_URL": moto_server.url, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        self.bucket = bucket

    def config(self, tmp_path):
        return {"uri": f"s3://{self.bucket}/{tmp_path.name}/t", "storage_options": self.options}

    def deletes_config(self, tmp_path):
        return {**self.config(tmp_path), "uri": f"s3://{self.bucket}/{tmp_path.name}/u", "mode": "upsert",
                "key": ["id"]}


def sink(config, group="g", tombstones="skip", value_schema=lambda: None):
    s = DeltaSink(config, SinkContext(pipeline="p", group=group, tombstones=tombstones, value_schema=value_schema))
    s.open()
    return s


def test_a_stale_writer_that_read_the_same_version_is_fenced(tmp_path):
    """Two writers load the table at one version; the first commits; the second's commit of the
    same partition must not land (Delta's conflict check on our txn app id), and it learns the
    position the winner stored."""
    uri = str(tmp_path / "t")
    first = sink({"uri": uri})
    first.write([make_batch([{"id": 0}], 0)])
    zombie, fresh = sink({"uri": uri}), sink({"uri": uri})
    zombie._load()
    fresh.write([make_batch([{"id": 1}], 1)])
    stale, real = [zombie.table], zombie._load
    zombie._load = lambda: stale.pop() if stale else real()  # it read its positions before the winner committed
    with pytest.raises(OffsetConflict) as exc:
        zombie.write([make_batch([{"id": 99}], 1)])
    assert exc.value.partitions == {("orders", 0): 2}
    assert sorted(r["id"] for r in rows(uri)) == [0, 1]
    assert DeltaTable(uri).transaction_version(app_id("g", "orders", 0)) == 2


def test_fencing_one_partition_lets_the_others_land(tmp_path):
    uri = str(tmp_path / "t")
    sink({"uri": uri}).write([make_batch([{"id": 0}], 0, partition=0)])
    s = sink({"uri": uri})
    with pytest.raises(OffsetConflict) as exc:
        s.write([make_batch([{"id": 5}], 0, partition=0), make_batch([{"id": 7}], 0, partition=1)])
    assert exc.value.partitions == {("orders", 0): 1}
    assert sorted(r["id"] for r in rows(uri)) == [0, 7]
    assert s.load_offsets([("orders", 0), ("orders", 1)]) == {("orders", 0): 1, ("orders", 1): 1}


def test_new_fields_become_nullable_columns_and_a_misfit_is_a_bad_record(tmp_path):
    uri = str(tmp_path / "t")
    s = sink({"uri": uri, "columns": {"price": "numeric(10,2)"}})
    s.write([make_batch([{"id": 1, "price": "1.50"}], 0)])
    s.write([make_batch([{"id": 2, "price": 2, "country": "DE"}], 1)])
    got = {r["id"]: r for r in rows(uri)}
    assert str(got[1]["price"]) == "1.50" and got[1]["country"] is None and got[2]["country"] == "DE"
    assert pa.schema(DeltaTable(uri).schema().to_arrow()).field("price").type == pa.decimal128(10, 2)
    with pytest.raises(BadRecordError) as exc:
        s.write([make_batch([{"id": 3}, {"id": "three"}, {"id": 4}], 2)])
    assert exc.value.index == 1 and exc.value.offset == 3
    assert sorted(r["id"] for r in rows(uri)) == [1, 2]  # nothing of the batch landed


def test_a_column_of_only_empty_lists_waits_for_a_value_to_type_it(tmp_path):
    uri = str(tmp_path / "t")
    s = sink({"uri": uri})
    s.write([make_batch([{"id": 1, "a": []}], 0)])
    assert DeltaTable(uri).schema().to_arrow().names == ["id"]
    s.write([make_batch([{"id": 2, "a": [1, 2]}], 1)])
    assert sorted(rows(uri), key=lambda r: r["id"]) == [{"id": 1, "a": None}, {"id": 2, "a": [1, 2]}]


def test_upsert_keeps_the_last_record_per_key_and_deletes_tombstones(tmp_path):
    uri = str(tmp_path / "t")
    s = sink({"uri": uri, "mode": "upsert", "key": ["id"]}, tombstones="delete")
    s.write([make_batch([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], 0)])
    s.write([make_batch([{"id": 1, "v": "c"}, None, {"id": 1, "v": "d"}, {"id": 3, "v": "e"}], 2,
                        keys=[None, b"2", None, None])])
    assert sorted((r["id"], r["v"]) for r in rows(uri)) == [(1, "d"), (3, "e")]
    assert s.load_offsets([("orders", 0)]) == {("orders", 0): 6}


def test_alter_offsets_is_fenced_like_a_write(tmp_path):
    uri = str(tmp_path / "t")
    s = sink({"uri": uri})
    s.write([make_batch([{"id": 0}], 0)])
    with pytest.raises(OffsetConflict):
        s.alter_offsets("g", {("orders", 0): 0}, {("orders", 0): 5})
    s.alter_offsets("g", {("orders", 0): 0}, {("orders", 0): 1})
    assert s.load_offsets([("orders", 0)]) == {("orders", 0): 0}
    assert [r["id"] for r in rows(uri)] == [0]


@pytest.mark.parametrize("options, why", [
    ({"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}, "UNSAFE_RENAME"),
    ({"aws_s3_allow_unsafe_rename": "TRUE"}, "UNSAFE_RENAME"),
    ({"AWS_S3_LOCKING_PROVIDER": "dynamodb"}, "DELTA_DYNAMO_TABLE_NAME"),
    ({"AWS_S3_LOCKING_PROVIDER": "redis"}, "not one delta-rs knows"),
])
def test_an_unsafe_s3_configuration_is_refused(options, why):
    with pytest.raises(FatalError, match=why):
        sink({"uri": "s3://nowhere/t", "storage_options": options})


def test_partition_by_and_declared_types_shape_a_new_table(tmp_path):
    uri = str(tmp_path / "t")
    schema = {"type": "object", "properties": {"id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                                               "country": {"type": "string"}}}
    s = sink({"uri": uri, "partition_by": ["country"]}, value_schema=lambda: schema)
    s.write([make_batch([{"id": 1, "at": "2026-01-02T03:04:05Z", "country": "DE"},
                         {"id": 2, "at": "2026-01-02T03:04:05+01:00", "country": "FR"}], 0)])
    dt = DeltaTable(uri)
    assert dt.metadata().partition_columns == ["country"]
    assert pa.schema(dt.schema().to_arrow()).field("at").type == pa.timestamp("us", tz="UTC")
    assert {r["id"]: r["at"].isoformat() for r in rows(uri)} == {1: "2026-01-02T03:04:05+00:00",
                                                                 2: "2026-01-02T02:04:05+00:00"}
    assert sorted(p.name for p in (tmp_path / "t").iterdir() if p.is_dir()) == ["_delta_log", "country=DE",
                                                                                 "country=FR"]


def test_tombstones_delete_needs_upsert(tmp_path):
    with pytest.raises(FatalError, match="mode: upsert"):
        sink({"uri": str(tmp_path / "t")}, tombstones="delete")


def test_evolve_fail_makes_a_new_field_a_bad_record(tmp_path):
    uri = str(tmp_path / "t")
    s = sink({"uri": uri, "evolve": "fail"})
    s.write([make_batch([{"id": 1}], 0)])
    with pytest.raises(BadRecordError) as exc:
        s.write([make_batch([{"id": 2}, {"id": 3, "extra": 1}], 1)])
    assert exc.value.index == 1


def test_an_unwritable_table_fails_at_open_not_at_the_first_batch(moto_server):  # noqa: F811
    options = {"AWS_ENDPOINT_URL": moto_server.url, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with pytest.raises(FatalError, match="kp-no-such-bucket.*does not exist"):
        sink({"uri": "s3://kp-no-such-bucket/t", "storage_options": options})


def test_a_store_that_does_not_answer_is_retryable_a_refusal_fatal(tmp_path):
    """By deltalake's exception types first; delta-rs reports every object store failure as a
    plain OSError, so within it the store's own words tell a refusal from no answer."""
    from kpipe.api import RetryableError
    from kpipe.broker import free_port

    options = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_REGION": "us-east-1",
               "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with pytest.raises(RetryableError, match="delta: reading s3://kp-any/t: OSError"):
        sink({"uri": "s3://kp-any/t", "storage_options": options})
    table = tmp_path / "file-in-the-way"
    table.write_text("not a directory")
    with pytest.raises(FatalError, match="file-in-the-way"):
        sink({"uri": str(table / "t")})


@pytest.mark.parametrize("exc, kind", [
    ("CommitFailedError('Transaction failed: version already exists')", "RetryableError"),
    ("DeltaProtocolError('Invariant violations')", "FatalError"),
    ("SchemaMismatchError('Cannot cast schema')", "FatalError"),
    ("TableNotFoundError('Could not create local directory: /x\\nPermission denied')", "FatalError"),
    ("DeltaError('Failed to parse parquet: External: Generic S3 error: Error performing PUT http://h/b')",
     "RetryableError"),
    ("DeltaError('Generic error: unsupported feature')", "FatalError"),
    ("OSError('Generic S3 error\\n  Error performing GET http://h/b in 3s, after 10 retries')", "RetryableError"),
    ("OSError('Generic LocalFileSystem error\\n  Permission denied (os error 13)')", "FatalError"),
    ("OSError('Generic S3 error: Client error with status 403 Forbidden: AccessDenied')", "FatalError"),
    ("FileNotFoundError('Object at location t/_p not found')", "FatalError"),
    ("ValueError('a pyarrow cast')", "FatalError"),
])
def test_errors_are_classified_by_deltalake_type_then_by_the_stores_words(tmp_path, exc, kind):
    from deltalake.exceptions import (CommitFailedError, DeltaError, DeltaProtocolError,  # noqa: F401
                                      SchemaMismatchError, TableNotFoundError)

    got = DeltaSink({"uri": str(tmp_path)}, SinkContext(pipeline="p", group="g"))._classify("writing", eval(exc))
    assert type(got).__name__ == kind, got
    assert str(got).startswith(f"delta: writing {tmp_path}: {exc.split('(')[0]}: ")


def test_the_orders_to_delta_pipeline_keeps_one_row_per_order(brokers, tmp_path):
    """pipelines/orders-to-delta.yaml end to end: every order twice, the later copy wins."""
    import os
    import uuid

    import orjson

    from kit import run_kpipe
    from kpipe.demo import sample_orders
    from kpipe.kafka_admin import create_topic, produce

    topic = f"orders-{uuid.uuid4().hex[:8]}"
    create_topic(brokers, topic, 4)
    events = list(sample_orders(300))
    produce(brokers, topic, iter(events))
    produce(brokers, topic, ((k, orjson.dumps({**orjson.loads(v), "version": 2})) for k, v in events))
    uri = tmp_path / "orders"
    env = {**os.environ, "KAFKA_BROKERS": brokers, "ORDERS_TOPIC": topic, "DELTA_URI": str(uri)}
    proc = run_kpipe("run", "pipelines/orders-to-delta.yaml", "--until-caught-up", env=env)
    assert proc.returncode == 0, proc.stderr
    got = rows(str(uri))
    assert len(got) == 300 and {r["order_id"] for r in got} == set(range(300))
    assert {r["version"] for r in got} == {2}
    assert pa.schema(DeltaTable(str(uri)).schema().to_arrow()).field("amount").type == pa.decimal128(10, 2)
    check = run_kpipe("check", "pipelines/orders-to-delta.yaml", env=env)
    assert check.returncode == 0 and "ok: sink delta: opened; stored offset of" in check.stdout, check.stdout
    lag = run_kpipe("lag", "--json", "pipelines/orders-to-delta.yaml", env=env)
    assert lag.returncode == 0, lag.stderr
    # the positions come from the table's txn actions: every one of the 600 messages
    assert sum(p["committed"] for p in orjson.loads(lag.stdout)["partitions"]) == 600, lag.stdout


def test_housekeeping_checkpoints_every_n_commits_and_keeps_the_offsets(tmp_path):
    uri = tmp_path / "t"
    s = sink({"uri": str(uri), "checkpoint_every": 3})
    checkpoints = lambda: sorted(p.name for p in (uri / "_delta_log").glob("*.checkpoint.parquet"))  # noqa: E731
    for i in range(7):
        s.write([make_batch([{"id": i}], i)])
        s.housekeep()
    assert checkpoints() == [f"{v:020d}.checkpoint.parquet" for v in (2, 5)]
    for f in (uri / "_delta_log").glob("0000000000000000000[0-5].json"):
        f.unlink()  # a reader now starts from the checkpoint of version 5
    assert DeltaTable(str(uri)).transaction_version(app_id("g", "orders", 0)) == 7
    assert sorted(r["id"] for r in DeltaTable(str(uri)).to_pyarrow_table().to_pylist()) == list(range(7))


def test_upsert_adds_a_new_field_as_a_column_in_the_merge(tmp_path):
    uri = str(tmp_path / "t")
    s = sink({"uri": uri, "mode": "upsert", "key": ["id"]})
    s.write([make_batch([{"id": 1, "v": "a"}], 0)])
    s.write([make_batch([{"id": 1, "v": "b", "extra": 2.5}, {"id": 2, "v": "c"}], 1)])
    assert sorted((r["id"], r["v"], r["extra"]) for r in rows(uri)) == [(1, "b", 2.5), (2, "c", None)]

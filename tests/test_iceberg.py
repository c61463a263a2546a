"""The iceberg sink passes the conformance kit on pyiceberg's SQL catalog (SQLite, local
warehouse), and its table reads back with readers other than kpipe: pyiceberg's scan, and
pyarrow over the data files the table lists."""
from __future__ import annotations

import os
import uuid

import pyarrow.dataset as ds
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpipe.api import Batch, OffsetConflict, SinkContext
from kpipe.sinks.iceberg import plugin
from kpipe.testing import SinkConformance
from s3kit import bucket, moto_server, s3  # noqa: F401
from sqlkit import TcpProxy

pytest.importorskip("pyiceberg")
from pyiceberg.catalog import load_catalog  # noqa: E402


def _catalog(config):
    props = dict(config["catalog"])
    return load_catalog(props.pop("name", "kpipe"), **props)  # the SQL catalog keys its tables by this name


def _files(table):
    """The current snapshot's data files as a pyarrow dataset, read without pyiceberg."""
    import pyarrow.fs as pafs

    paths = [t.file.file_path for t in table.scan().plan_files()]
    if not paths:
        return None
    if paths[0].startswith("s3://"):
        props = table.io.properties
        fs = pafs.S3FileSystem(endpoint_override=props["s3.endpoint"], access_key=props["s3.access-key-id"],
                               secret_key=props["s3.secret-access-key"], region=props["s3.region"], scheme="http")
        return ds.dataset([p.removeprefix("s3://") for p in paths], format="parquet", filesystem=fs)
    return ds.dataset([p.removeprefix("file://") for p in paths], format="parquet")


def _scan(config):
    from pyiceberg.exceptions import NoSuchTableError

    try:
        table = _catalog(config).load_table(config["table"])
    except NoSuchTableError:
        return None
    return table


class TestIcebergSink(SinkConformance):
    plugin = plugin

    def config(self, tmp_path):
        return {"catalog": {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db",
                            "warehouse": f"file://{tmp_path}/warehouse"},
                "table": "kpipe.records"}

    def deletes_config(self, tmp_path):
        return self.config(tmp_path) | {"table": "kpipe.keyed", "key": ["id"]}

    def bad_value(self, topic, partition, offset):
        return {"id": f"{topic}/{partition}/{offset}", "n": "not a number"}  # n is a long column

    def read_back(self, config):
        table = _scan(config)
        if table is None:
            return []
        rows = table.scan().to_arrow().to_pylist()
        # the same rows through pyarrow alone, over the data files the current snapshot lists
        files = _files(table)
        direct = files.to_table().column("id").to_pylist() if files is not None else []
        assert sorted(r["id"] for r in rows) == sorted(direct)  # copy-on-write: no delete files
        return rows


class TestIcebergSinkPostgresS3(TestIcebergSink):
    """The SQL catalog on PostgreSQL (a catalog name per test), the warehouse on S3 (moto)."""

    @pytest.fixture(autouse=True)
    def _s3(self, moto_server, bucket):  # noqa: F811
        self.endpoint, self.bucket = moto_server.url, bucket
        self.catalog_name = f"t{uuid.uuid4().hex[:12]}"
        self.proxy = TcpProxy(("127.0.0.1", 5432)).start()  # cut: the catalog database is down
        yield
        self.proxy.cut()

    def destination_down(self, config):
        return self.proxy.down()

    def config(self, tmp_path):
        return {"catalog": {"name": self.catalog_name, "type": "sql",
                            "uri": f"postgresql+psycopg://postgres@127.0.0.1:{self.proxy.port}/test",
                            "warehouse": f"s3://{self.bucket}/warehouse", "s3.endpoint": self.endpoint,
                            "s3.access-key-id": "testing", "s3.secret-access-key": "testing",
                            "s3.region": "us-east-1"},
                "table": "kpipe.records"}


def _sink(config, group="g"):
    sink = plugin.create(config, SinkContext(pipeline="t", group=group))
    sink.open()
    return sink


def _batch(start, stop, partition=0):
    return Batch("t", partition, start, stop, [{"id": f"{partition}/{o}", "n": o} for o in range(start, stop)], [])


def test_a_commit_never_forgets_partitions_it_did_not_write(tmp_path):
    config = TestIcebergSink().config(tmp_path)
    sink = _sink(config)
    sink.write([_batch(0, 5, 0), _batch(0, 3, 1)])
    sink.write([_batch(5, 7, 0)])
    assert _sink(config).load_offsets([("t", 0), ("t", 1)]) == {("t", 0): 7, ("t", 1): 3}
    summary = _scan(config).current_snapshot().summary.additional_properties
    assert summary["kpipe.offsets.g"] == '[["t",0,7],["t",1,3]]'  # what another tool reads


def test_a_stale_writer_loses_the_compare_and_set(tmp_path):
    """A zombie that read the table before a second writer committed must not land its rows,
    even though pyiceberg would rebase an append onto the winner's snapshot."""
    config = TestIcebergSink().config(tmp_path)
    zombie, winner = _sink(config), _sink(config)
    zombie.write([_batch(0, 2)])
    winner._reload()
    winner.write([_batch(2, 4)])
    with pytest.raises(OffsetConflict) as exc:
        zombie.write([_batch(2, 4)])  # its table object still shows offset 2
    assert exc.value.partitions == {("t", 0): 4}
    ids = sorted(r["id"] for r in _scan(config).scan().to_arrow().to_pylist())
    assert ids == ["0/0", "0/1", "0/2", "0/3"]


def test_other_groups_keep_their_own_positions(tmp_path):
    config = TestIcebergSink().config(tmp_path)
    _sink(config, "a").write([_batch(0, 3)])
    _sink(config, "b").write([_batch(0, 1, 5)])
    assert _sink(config, "a").load_offsets([("t", 0)]) == {("t", 0): 3}
    assert _sink(config, "b").load_offsets([("t", 5)]) == {("t", 5): 1}


def test_housekeeping_keeps_the_snapshots_holding_current_offsets(tmp_path):
    config = TestIcebergSink().config(tmp_path) | {"keep_snapshots": 1, "max_snapshot_age": "0s"}
    _sink(config, "a").write([_batch(0, 3)])
    sink = _sink(config, "b")
    for n in range(4):
        sink.write([_batch(n, n + 1, 1)])
    assert sink.expire_snapshots() == 3  # b's older snapshots; a's only one stays
    assert _sink(config, "a").load_offsets([("t", 0)]) == {("t", 0): 3}
    assert _sink(config, "b").load_offsets([("t", 1)]) == {("t", 1): 4}


def _rows(config):
    return sorted(_scan(config).scan().to_arrow().to_pylist(), key=lambda r: r["id"])


def _messages(values, start=0, keys=None):
    from kpipe.transforms.testing import FakeMessage

    keys = keys or [f"k{start + i}".encode() for i in range(len(values))]
    return [FakeMessage(v, k, [], 1_795_000_000_000, start + i, "t", 0) for i, (v, k) in enumerate(zip(values, keys))]


def _typed_batch(values, start=0, keys=None):
    return Batch("t", 0, start, start + len(values), values, _messages(values, start, keys))


def test_declared_types_map_to_iceberg_types_and_duckdb_reads_the_files(tmp_path):
    import datetime as dt
    import decimal

    import duckdb

    config = TestIcebergSink().config(tmp_path) | {
        "columns": {"id": "text", "price": "numeric(10,2)", "at": "timestamptz", "day": "date", "blob": "bytes"}}
    _sink(config).write([_typed_batch([{"id": "a", "price": "12.30", "at": "2026-01-02T03:04:05.123456Z",
                                        "day": "2026-01-02", "blob": b"hi", "tags": ["x", "y"],
                                        "addr": {"city": "Oslo"}}])])
    table = _scan(config)
    types = {f.name: str(f.field_type) for f in table.schema().fields}
    assert types == {"id": "string", "price": "decimal(10, 2)", "at": "timestamptz", "day": "date",
                     "blob": "binary", "tags": "list<string>", "addr": "struct<9: city: optional string>"}
    files = [t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()]
    got = duckdb.connect().execute("SET TimeZone='UTC'; SELECT price, \"at\", day, blob, tags, addr.city "
                                   f"FROM read_parquet({files!r})").fetchall()
    assert got == [(decimal.Decimal("12.30"), dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc),
                    dt.date(2026, 1, 2), b"hi", ["x", "y"], "Oslo")]


def test_a_value_that_does_not_fit_is_a_bad_record_at_its_index(tmp_path):
    from kpipe.api import BadRecordError

    config = TestIcebergSink().config(tmp_path)
    _sink(config).write([_typed_batch([{"id": "a", "n": 1}])])
    with pytest.raises(BadRecordError) as exc:
        _sink(config).write([_typed_batch([{"id": "b", "n": 2}, {"id": "c", "n": "three"}], start=1)])
    assert exc.value.index == 1
    assert [r["id"] for r in _rows(config)] == ["a"]


def test_a_new_field_becomes_an_optional_column_or_with_evolve_fail_a_bad_record(tmp_path):
    from kpipe.api import BadRecordError

    config = TestIcebergSink().config(tmp_path)
    _sink(config).write([_typed_batch([{"id": "a"}])])
    _sink(config).write([_typed_batch([{"id": "b", "extra": 5}], start=1)])
    assert _rows(config) == [{"id": "a", "extra": None}, {"id": "b", "extra": 5}]
    strict = config | {"table": "kpipe.strict", "evolve": "fail"}
    _sink(strict).write([_typed_batch([{"id": "a"}])])
    with pytest.raises(BadRecordError) as exc:
        _sink(strict).write([_typed_batch([{"id": "b"}, {"id": "c", "extra": 5}], start=1)])
    assert exc.value.index == 1


def test_a_column_of_only_empty_lists_waits_for_a_value_to_type_it(tmp_path):
    """``[]`` types no item: the column is left out until ``[1, 2]`` gives it list<long>; a
    value with a leaf in a column still untyped would be a bad record, never a fatal error."""
    from kpipe.api import BadRecordError

    config = TestIcebergSink().config(tmp_path)
    _sink(config).write([_typed_batch([{"id": 1, "a": []}])])
    assert _scan(config).schema().column_names == ["id"]
    _sink(config).write([_typed_batch([{"id": 2, "a": [1, 2]}], start=1)])
    assert str(_scan(config).schema().find_field("a").field_type) == "list<long>"
    assert _rows(config) == [{"id": 1, "a": None}, {"id": 2, "a": [1, 2]}]
    with pytest.raises(BadRecordError) as exc:
        _sink(config).write([_typed_batch([{"id": 3, "s": {"x": 1, "y": None}}], start=2)])
    assert exc.value.index == 0


def test_upsert_keeps_the_last_value_per_key_and_a_tombstone_deletes(tmp_path):
    config = TestIcebergSink().config(tmp_path) | {"mode": "upsert", "key": ["id"]}
    sink = plugin.create(config, SinkContext(pipeline="t", group="g", tombstones="delete"))
    sink.open()
    sink.write([_typed_batch([{"id": "a", "n": 1}, {"id": "b", "n": 1}, {"id": "a", "n": 2}])])
    sink.write([_typed_batch([{"id": "b", "n": 3}, None, {"id": "c", "n": 1}], start=3,
                             keys=[b"b", b"a", b"c"])])
    assert _rows(config) == [{"id": "b", "n": 3}, {"id": "c", "n": 1}]
    assert sink.load_offsets([("t", 0)]) == {("t", 0): 6}


def test_partition_by_gives_the_created_table_its_spec(tmp_path):
    config = TestIcebergSink().config(tmp_path) | {"partition_by": [{"field": "country"},
                                                                    {"field": "n", "transform": "bucket[4]"}]}
    _sink(config).write([_typed_batch([{"id": "a", "country": "NO", "n": 1}, {"id": "b", "country": "SE", "n": 2}])])
    table = _scan(config)
    assert [str(f.transform) for f in table.spec().fields] == ["identity", "bucket[4]"]
    assert len(list(table.scan().plan_files())) == 2


def test_alter_offsets_moves_the_positions_fenced_like_a_write(tmp_path):
    config = TestIcebergSink().config(tmp_path)
    sink = _sink(config)
    sink.write([_batch(0, 5), _batch(0, 2, 1)])
    with pytest.raises(OffsetConflict):
        sink.alter_offsets("g", {("t", 0): 1}, {("t", 0): 4})
    sink.alter_offsets("g", {("t", 0): 1}, {("t", 0): 5})
    assert _sink(config).load_offsets([("t", 0), ("t", 1)]) == {("t", 0): 1, ("t", 1): 2}
    assert len(_rows(config)) == 7  # the rows stay; the next run writes 1..4 again


@settings(max_examples=int(os.environ.get("KPIPE_VALUE_EXAMPLES", "12")), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 9) | st.none()), max_size=6),
                min_size=1, max_size=4))
def test_upsert_with_tombstones_matches_a_dict_model(tmp_path_factory, writes):
    """Writes of (key, n) records and (key, None) tombstones land as a dict that keeps each
    key's last value and drops a tombstoned key would."""
    config = TestIcebergSink().config(tmp_path_factory.mktemp("model")) | {"mode": "upsert", "key": ["id"]}
    sink = plugin.create(config, SinkContext(pipeline="t", group="g", tombstones="delete"))
    sink.open()
    model, start = {}, 0
    for write in writes:
        values = [None if n is None else {"id": k, "n": n} for k, n in write]
        sink.write([_typed_batch(values, start, keys=[k.encode() for k, _ in write])])
        start += len(values)
        for k, n in write:
            if n is None:
                model.pop(k, None)
            else:
                model[k] = n
    table = _scan(config)
    got = {r["id"]: r["n"] for r in table.scan().to_arrow().to_pylist()} if table is not None else {}
    assert got == model

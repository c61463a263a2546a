"""The iceberg sink passes the conformance kit on pyiceberg's SQL catalog (SQLite, local
warehouse), and its table reads back with readers other than kpipe: pyiceberg's scan, and
pyarrow over the data files the table lists."""
from __future__ import annotations

import pyarrow.dataset as ds
import pytest

from kpipe.api import Batch, OffsetConflict, SinkContext
from kpipe.sinks.iceberg import plugin
from kpipe.testing import SinkConformance

pytest.importorskip("pyiceberg")
from pyiceberg.catalog import load_catalog  # noqa: E402


def _catalog(config):
    return load_catalog("kpipe", **config["catalog"])  # the SQL catalog keys its tables by this name


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
        files = [t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()]
        direct = ds.dataset(files, format="parquet").to_table().column("id").to_pylist() if files else []
        assert sorted(r["id"] for r in rows) == sorted(direct)  # copy-on-write: no delete files
        return rows


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

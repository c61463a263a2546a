"""Hostile values in the SQL sinks (issue 14): a record lands exactly as it was, or it is a bad
record at its own index in the batch given to ``write``; never a crash, never a silent change.
Every check reads the table back with plain SQL, not through kpipe.

Each value in each column type is a row of the value table (kpipe/sinks/sql/value_table.py,
tested by test_sql_values_table.py); this module covers what that table does not: Kafka
timestamps, and json columns a restarted run reflects."""
from __future__ import annotations

import json

import pytest

from kpipe.api import Batch
from kpipe.transforms.testing import FakeMessage
from sqlkit import dbs, fake_batch, sink_on, write_like_runner  # noqa: F401

ALL_DBS = ["sqlite", "postgres", "mariadb"]


# -- 1. json columns after a restart ------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_DBS)
def test_a_json_column_stays_json_after_a_restart(dbs, kind):
    """A new run reflects the json column kpipe created (SQLite's ``JSON TEXT``, MariaDB's
    LONGTEXT with a json_valid CHECK) and binds it as the first run did: None is SQL NULL, and
    the JSON text is stored as it is (no number affinity on SQLite)."""
    db = dbs(kind)
    table, group = db.table("jr"), db.group("jr")
    with sink_on(db, table, group) as sink:  # columns: auto, so o becomes a json column
        assert write_like_runner(sink, [fake_batch(0, 1, [(0, 0, {"id": 0, "o": {"a": 1}})])]) == []
    items = [(1, 1, {"id": 1, "o": "123"}), (2, 2, {"id": 2, "o": None}), (3, 3, {"id": 3}),
             (4, 4, {"id": 4, "o": 2**70}), (5, 5, {"id": 5, "o": 7})]
    with sink_on(db, table, group) as sink:
        assert write_like_runner(sink, [fake_batch(1, 6, items)]) == []
    cast = "::text" if kind == "postgres" else ""
    raw = dict(db.driver_rows(f"SELECT id, {db.q('o')}{cast} FROM {db.q(table)}"))
    assert all(v is None or type(v) is str for v in raw.values()), raw
    assert {i: None if v is None else json.loads(v) for i, v in raw.items()} == \
        {0: {"a": 1}, 1: "123", 2: None, 3: None, 4: 2**70, 5: 7}


# -- 2. timestamps outside Python's datetime range ----------------------------------------------


def _batch_with_timestamps(stamps: list) -> Batch:
    msgs = [FakeMessage({"id": o}, str(o).encode(), None, ts, o, "orders", 0) for o, ts in enumerate(stamps)]
    return Batch("orders", 0, 0, len(stamps), [{"id": o} for o in range(len(stamps))], msgs)


@pytest.mark.parametrize("columns", ["declared", "auto"])
@pytest.mark.parametrize("kind", ALL_DBS)
def test_kafka_timestamp_past_year_9999_is_a_bad_record(dbs, kind, columns):
    db = dbs(kind)
    table, group = db.table("kts"), db.group("kts")
    config = {"metadata_columns": ["_timestamp"]}
    if columns == "declared":
        config["columns"] = {"id": {"type": "bigint"}}
    past_9999 = 253_402_300_800_000  # 10000-01-01T00:00:00Z
    stamps = [1_700_000_000_123, past_9999, 1_700_000_000_456, 2**62]
    with sink_on(db, table, group, **config) as sink:
        rejected = write_like_runner(sink, [_batch_with_timestamps(stamps)])
    assert rejected == [("orders", 0, 1), ("orders", 0, 3)]
    assert sorted(r[0] for r in db.rows(f"SELECT id FROM {db.q(table)}")) == [0, 2]
    assert db.offsets(group) == {("orders", 0): len(stamps)}

"""Zombie fencing in the SQL sink, driven directly on real databases: a writer whose batch
starts behind the stored offset writes nothing, and the others in its call still land."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from kpipe.api import Batch, OffsetConflict, SinkContext
from kpipe.sinks.sql.sink import SqlSink
from sqlkit import db_url  # noqa: F401 (a fixture)


def batch(start: int, n: int, partition: int = 0) -> Batch:
    return Batch("orders", partition, start, start + n,
                 [{"id": start + k, "p": partition} for k in range(n)], [])


def test_a_zombie_cannot_write_behind_the_owner(db_url):
    url = db_url
    table, group = f"fence_{uuid.uuid4().hex[:8]}", f"fence-{uuid.uuid4().hex[:8]}"
    ctx = SinkContext(pipeline="fence", group=group)
    config = {"url": url, "table": table, "mode": "insert"}
    owner, zombie = SqlSink(config, ctx), SqlSink(config, ctx)
    owner.open()
    zombie.open()
    engine = sa.create_engine(url)
    try:
        owner.write([batch(0, 100)])
        with pytest.raises(OffsetConflict) as info:
            # the zombie still holds offsets 50.. from before it lost the partition
            zombie.write([batch(50, 100), batch(0, 10, partition=1)])
        assert info.value.partitions == {("orders", 0): 100}
        owner.write([batch(100, 5)])  # the owner goes on undisturbed
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT p, count(*), count(DISTINCT id), min(id), max(id) "
                                        f"FROM {table} GROUP BY p ORDER BY p")).all()
        assert [tuple(r) for r in rows] == [(0, 105, 105, 0, 104), (1, 10, 10, 0, 9)]
        assert owner.load_offsets([("orders", 0), ("orders", 1)]) == {("orders", 0): 105, ("orders", 1): 10}
    finally:
        owner.close()
        zombie.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            conn.execute(sa.text("DELETE FROM kpipe_offsets WHERE group_id = :g"), {"g": group})
        engine.dispose()

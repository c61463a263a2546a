"""A write of many partitions costs one offsets statement and one insert (one COPY on
PostgreSQL), not one of each per partition, and the fencing stays exact per partition."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from kpipe.api import Batch, BadRecordError, OffsetConflict, SinkContext
from kpipe.sinks.sql import offsets
from kpipe.sinks.sql.sink import SqlSink
from sqlkit import db_url  # noqa: F401 (a fixture)

PARTITIONS = 50


def batches(starts: dict[int, int], n: int = 3, bad: tuple[int, int] | None = None) -> list[Batch]:
    """A batch of ``n`` records for each partition, from its start offset; ``bad`` = (partition,
    index) holds a value only the database refuses (its CHECK)."""
    out = []
    for p, start in starts.items():
        values = [{"id": start + k, "p": p} for k in range(n)]
        if bad and bad[0] == p:
            values[bad[1]]["id"] = -1
        out.append(Batch("orders", p, start, start + n, values, []))
    return out


class Statements:
    """What the sink sends: SQL through SQLAlchemy, and COPYs through psycopg's own cursor."""

    def __init__(self, sink: SqlSink, monkeypatch):
        self.sql: list[str] = []
        self.copies = 0
        sa.event.listen(sink.engine, "before_cursor_execute", self._seen)
        if sink.fast:
            import psycopg
            copy = psycopg.Cursor.copy

            def counted(cur, *args, **kwargs):
                self.copies += 1
                return copy(cur, *args, **kwargs)
            monkeypatch.setattr(psycopg.Cursor, "copy", counted)

    def _seen(self, _conn, _cursor, statement, _params, _context, _executemany):
        self.sql.append(" ".join(statement.split()))

    def count(self, head: str, table: str) -> int:
        return sum(1 for s in self.sql if s.upper().startswith(head) and table in s)

    def clear(self) -> None:
        self.sql.clear()
        self.copies = 0


@pytest.fixture
def setup(db_url):
    url = db_url
    table, group = f"many_{uuid.uuid4().hex[:8]}", f"many-{uuid.uuid4().hex[:8]}"
    config = {"url": url, "table": table, "mode": "insert"}
    sinks = []

    def sink() -> SqlSink:
        s = SqlSink(config, SinkContext(pipeline="many", group=group))
        s.open()
        sinks.append(s)
        return s
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id BIGINT CHECK (id >= 0), p INTEGER)"))
    yield sink, table, engine
    for s in sinks:
        s.close()
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(sa.text("DELETE FROM kpipe_offsets WHERE group_id = :g"), {"g": group})
    engine.dispose()


def rows_per_partition(engine, table) -> dict[int, tuple]:
    with engine.connect() as conn:
        return {p: (n, lo, hi) for p, n, lo, hi in conn.execute(sa.text(
            f"SELECT p, count(*), min(id), max(id) FROM {table} GROUP BY p"))}


def test_one_offsets_statement_and_one_insert_for_many_partitions(setup, monkeypatch):
    sink, table, engine = setup
    owner = sink()
    owner.write(batches({p: 0 for p in range(PARTITIONS)}))  # first write: the offsets rows appear
    seen = Statements(owner, monkeypatch)
    owner.write(batches({p: 3 for p in range(PARTITIONS)}))
    assert seen.count("UPDATE", "kpipe_offsets") == 1
    assert seen.count("SELECT", "kpipe_offsets") == 0
    if owner.fast:
        assert seen.copies == 1
    else:
        assert seen.count("INSERT", table) == 1
    assert rows_per_partition(engine, table) == {p: (6, 0, 5) for p in range(PARTITIONS)}
    assert owner.load_offsets([("orders", p) for p in range(PARTITIONS)]) == {
        ("orders", p): 6 for p in range(PARTITIONS)}


def test_a_zombie_is_fenced_on_exactly_its_stale_partition(setup, monkeypatch):
    sink, table, engine = setup
    monkeypatch.setattr(offsets, "_GENERIC_ROWS", 7)  # MariaDB, SQLite: several statements of a write
    owner, zombie = sink(), sink()
    owner.write(batches({p: 0 for p in range(PARTITIONS)}))
    owner.write(batches({17: 3}))  # the owner moved partition 17 on
    # the zombie still thinks partition 17 is at 3: everything else of its write lands
    with pytest.raises(OffsetConflict) as info:
        zombie.write(batches({p: 3 for p in range(PARTITIONS)}))
    assert info.value.partitions == {("orders", 17): 6}
    expected = {p: (6, 0, 5) for p in range(PARTITIONS)}
    assert rows_per_partition(engine, table) == expected
    # the next write of every partition goes back to one statement, and still fences 17
    with pytest.raises(OffsetConflict) as info:
        zombie.write(batches({p: 6 for p in range(PARTITIONS) if p != 17} | {17: 3}))
    assert info.value.partitions == {("orders", 17): 6}
    assert rows_per_partition(engine, table) == {p: (9, 0, 8) if p != 17 else (6, 0, 5)
                                                 for p in range(PARTITIONS)}


def test_a_bad_record_is_found_in_its_own_partition_and_nothing_lands(setup):
    sink, table, engine = setup
    owner = sink()
    owner.write(batches({p: 0 for p in range(PARTITIONS)}))
    before = rows_per_partition(engine, table)
    with pytest.raises(BadRecordError) as info:
        owner.write(batches({p: 3 for p in range(PARTITIONS)}, bad=(30, 2)))
    assert (info.value.topic, info.value.partition, info.value.index) == ("orders", 30, 2)
    assert rows_per_partition(engine, table) == before
    assert owner.load_offsets([("orders", p) for p in range(PARTITIONS)]) == {
        ("orders", p): 3 for p in range(PARTITIONS)}


def test_an_upsert_of_many_partitions_is_one_offsets_statement_and_the_last_batch_wins(db_url, monkeypatch):
    table, group = f"manyup_{uuid.uuid4().hex[:8]}", f"manyup-{uuid.uuid4().hex[:8]}"
    sink = SqlSink({"url": db_url, "table": table, "mode": "upsert", "key": ["id"]},
                   SinkContext(pipeline="many", group=group))
    sink.open()
    engine = sa.create_engine(db_url)
    try:
        def write(start: int) -> None:
            # every partition writes ids 0..2: the batch listed last holds the row that stays
            sink.write([Batch("orders", p, start, start + 3, [{"id": k, "p": p, "s": start} for k in range(3)], [])
                        for p in range(PARTITIONS)])
        write(0)
        seen = Statements(sink, monkeypatch)
        write(3)
        assert seen.count("UPDATE", "kpipe_offsets") == 1
        # a statement per partition: a bad row another partition's row would replace unseen in
        # one statement must still be reported (test_sql_properties)
        assert (seen.copies if sink.fast else seen.count("INSERT", table)) == PARTITIONS
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT id, p, s FROM {table} ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(k, PARTITIONS - 1, 3) for k in range(3)]
    finally:
        sink.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            conn.execute(sa.text("DELETE FROM kpipe_offsets WHERE group_id = :g"), {"g": group})
        engine.dispose()

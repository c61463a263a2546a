"""The SQL sink's round trips per write, driven directly on real databases: no savepoint
unless a row is rejected, and a pooled connection pinged only after it sat unused."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from kpipe.api import Batch, BadRecordError, RetryableError, SinkContext
from kpipe.sinks.sql.sink import SqlSink

URLS = {
    "postgres": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}


def batch(start: int, values: list, partition: int = 0) -> Batch:
    return Batch("orders", partition, start, start + len(values), values, [])


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def url(request, tmp_path):
    return URLS.get(request.param) or f"sqlite:///{tmp_path / 'rt.db'}"


@pytest.fixture
def sink(url):
    table, group = f"rt_{uuid.uuid4().hex[:8]}", f"rt-{uuid.uuid4().hex[:8]}"
    s = SqlSink({"url": url, "table": table, "mode": "insert",
                 "columns": {"id": {"type": "bigint"}, "n": {"type": "bigint", "nullable": False}}},
                SinkContext(pipeline="rt", group=group))
    s.open()
    statements: list = []
    sa.event.listen(s.engine, "before_cursor_execute",
                    lambda conn, cursor, statement, *args: statements.append(statement.upper()))
    s.statements = statements
    yield s
    s.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(sa.text("DELETE FROM kpipe_offsets WHERE group_id = :g"), {"g": group})
    engine.dispose()


def _rows(s: SqlSink) -> list:
    with s.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT id, n FROM {s.table_name} ORDER BY id"))]


def test_a_clean_write_takes_no_savepoint_and_a_bad_row_is_still_narrowed(sink):
    # The first write of a partition inserts its offsets row, in a savepoint of its own.
    sink.write([batch(0, [{"id": i, "n": i} for i in range(5)]), batch(0, [{"id": 100, "n": 1}], 1)])
    sink.statements.clear()
    sink.write([batch(5, [{"id": i, "n": i} for i in range(5, 10)]), batch(1, [{"id": 101, "n": 1}], 1)])
    assert not [s for s in sink.statements if "SAVEPOINT" in s]
    if sink.engine.dialect.name == "sqlite":
        return  # it stores any value in any column: nothing for the database to reject
    sink.statements.clear()
    # a NULL in a NOT NULL column: only the database finds it (kpipe itself refuses 2**70 for a
    # bigint before the write, without the database: see "How values land")
    bad = [{"id": 10, "n": 10}, {"id": 11, "n": 11}, {"id": 12, "n": None}, {"id": 13, "n": 13}]
    with pytest.raises(BadRecordError) as info:
        sink.write([batch(10, bad)])
    assert info.value.index == 2
    assert [s for s in sink.statements if "SAVEPOINT" in s]  # the second try narrowed it
    assert [r[0] for r in _rows(sink)] == list(range(10)) + [100, 101]  # nothing of the failed write
    assert sink.load_offsets([("orders", 0)]) == {("orders", 0): 10}


def test_a_connection_is_pinged_only_after_sitting_unused(sink, monkeypatch):
    pings = []
    real = sink.engine.dialect.do_ping
    monkeypatch.setattr(sink.engine.dialect, "do_ping", lambda c: pings.append(1) or real(c))
    sink.ping_after_idle = 3600.0
    for k in range(3):
        sink.write([batch(k, [{"id": k, "n": k}])])
    assert pings == []
    sink.ping_after_idle = 0.0
    for k in range(3, 5):
        sink.write([batch(k, [{"id": k, "n": k}])])
    assert len(pings) == 2
    assert len(_rows(sink)) == 5


def _terminate_pooled_connection(sink) -> None:
    with sink.engine.connect() as conn:  # the pooled connection the writes use
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    other = sa.create_engine(URLS["postgres"], poolclass=sa.pool.NullPool)
    with other.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar()
    other.dispose()


@pytest.mark.parametrize("idle", [True, False])
def test_a_connection_the_server_dropped_is_replaced(sink, idle):
    if sink.engine.dialect.name != "postgresql":
        pytest.skip("terminating a backend is PostgreSQL's")
    sink.write([batch(0, [{"id": 0, "n": 0}])])
    _terminate_pooled_connection(sink)
    if idle:  # as if it had sat unused: the ping finds it gone and the pool reconnects
        sink.ping_after_idle = 0.0
    else:  # used a moment ago, so not pinged: the write fails as retryable, and its retry works
        sink.ping_after_idle = 3600.0
        with pytest.raises(RetryableError):
            sink.write([batch(1, [{"id": 1, "n": 1}])])
    sink.write([batch(1, [{"id": 1, "n": 1}])])
    assert _rows(sink) == [(0, 0), (1, 1)]
    assert sink.load_offsets([("orders", 0)]) == {("orders", 0): 2}

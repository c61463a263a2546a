"""Helpers for the SQL sink tests: real databases, specs, offsets, a cuttable TCP proxy.

The databases are the real servers of the test machine (PostgreSQL and MariaDB) and SQLite
files in ``tmp_path``. Every test uses its own table and consumer group, so tests never see
each other's rows; the shared ``kpipe_offsets`` table is keyed by group.
"""
from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from kit import SESSION, committed, unique  # noqa: F401 (committed: for the SQL tests)

PG_URL = os.environ.get("KPIPE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("KPIPE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


# -- databases -------------------------------------------------------------------------------


class Db:
    """One database under test: its URL, the sink type to use, and cleanup of what we made."""

    def __init__(self, kind: str, url: str, sink_type: str):
        self.kind = kind
        self.url = url
        self.sink_type = sink_type
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.tables: list[str] = []
        self.groups: list[str] = []

    def table(self, prefix: str = "t") -> str:
        name = unique(f"kp_{prefix}")
        self.tables.append(name)
        return name

    def group(self, prefix: str = "g") -> str:
        name = unique(f"kpg-{prefix}")
        self.groups.append(name)
        return name

    def q(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote(name)

    def rows(self, sql: str, **params) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]

    def scalar(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def execute(self, sql: str) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(sql)

    def count(self, table: str) -> int:
        """Rows in ``table``; 0 while it does not exist yet."""
        try:
            return self.scalar(f"SELECT count(*) FROM {self.q(table)}")
        except sa.exc.ProgrammingError:
            return 0
        except sa.exc.OperationalError as exc:  # SQLite: no such table
            if "no such table" in str(exc):
                return 0
            raise

    def offsets(self, group: str) -> dict[tuple[str, int], int]:
        return {(t, p): o for t, p, o in self.rows(
            "SELECT topic, kafka_partition, next_offset FROM kpipe_offsets WHERE group_id = :g", g=group)}

    def select(self, table: str, *names: str, order_by: str | None = None) -> list[tuple]:
        """Typed values (through the reflected column types), unlike ``rows``."""
        t = sa.Table(table, sa.MetaData(), autoload_with=self.engine)
        stmt = sa.select(*[t.c[n] for n in names])
        if order_by:
            stmt = stmt.order_by(t.c[order_by])
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(stmt)]

    def driver_rows(self, sql: str) -> list[tuple]:
        """Rows as the DB-API driver itself returns them (psycopg, pymysql, sqlite3), with no
        SQLAlchemy type processing in between: an independent reader."""
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            conn.close()

    def columns(self, table: str) -> dict[str, dict]:
        return {c["name"]: c for c in sa.inspect(self.engine).get_columns(table)}

    def cleanup(self) -> None:
        try:
            with self.engine.begin() as conn:
                for t in self.tables:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.q(t)}")
                if self.groups and sa.inspect(conn).has_table("kpipe_offsets"):
                    conn.execute(sa.text("DELETE FROM kpipe_offsets WHERE group_id IN :gs")
                                 .bindparams(sa.bindparam("gs", expanding=True)), {"gs": self.groups})
        finally:
            self.engine.dispose()


def make_db(kind: str, tmp_path: Path) -> Db:
    if kind == "postgres":
        return Db(kind, PG_URL, "postgres")
    if kind == "mariadb":
        return Db(kind, MARIADB_URL, "sql")
    if kind == "sqlite":
        return Db(kind, f"sqlite:///{tmp_path / 'sink.db'}", "sql")
    raise ValueError(kind)


# -- specs -----------------------------------------------------------------------------------


def write_sql_spec(tmp_path: Path, brokers: str, topic: str, *, group: str, sink: dict,
                   name: str | None = None, max_records: int = 10000, max_age: str = "1s",
                   retry: dict | None = None, options: dict | None = None,
                   filename: str | None = None) -> Path:
    doc = {
        "name": name or group,
        "source": {"brokers": brokers, "topic": topic, "group": group,
                   "options": {**SESSION, **(options or {})}},
        "sink": sink,
        "batch": {"max_records": max_records, "max_bytes": "16MiB", "max_age": max_age},
    }
    if retry:
        doc["retry"] = retry
    spec = tmp_path / (filename or f"{group}.yaml")
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


# -- Kafka -----------------------------------------------------------------------------------


def offsets_state(db: Db, brokers: str, topic: str, table: str, group: str):
    """What the runs of ``group`` left: ({partition: [offsets of its rows in ``table``]},
    the group's ``kpipe_offsets`` rows, its committed Kafka offsets)."""
    per: dict[int, list[int]] = {}
    for p, o in db.rows(f"SELECT _partition, _offset FROM {db.q(table)}"):
        per.setdefault(p, []).append(o)
    return per, db.offsets(group), committed(brokers, group, topic)


# -- exactly once ----------------------------------------------------------------------------


def assert_rows_exactly_once(db: Db, table: str, topic: str, ids: range, *, strict_offsets: bool = True):
    """Every (topic, partition, offset) once, every id once, and nothing else.

    With ``strict_offsets``: event i is at partition i % 4, offset i // 4.
    """
    q = db.q
    dups = db.rows(f"SELECT _topic, _partition, _offset, count(*) FROM {q(table)} "
                   f"GROUP BY _topic, _partition, _offset HAVING count(*) > 1")
    assert dups == [], f"{len(dups)} duplicated (topic, partition, offset), e.g. {dups[:5]}"
    rows = db.rows(f"SELECT _topic, _partition, _offset, id FROM {q(table)}")
    assert len(rows) == len(ids), f"{len(rows)} rows, expected {len(ids)}"
    assert {r[0] for r in rows} == {topic}
    got_ids = sorted(r[3] for r in rows)
    assert got_ids == list(ids), "ids missing or duplicated: " + \
        f"missing {sorted(set(ids) - set(got_ids))[:5]}"
    for t, p, o, i in rows:
        assert p == i % 4, (p, o, i)
        if strict_offsets:
            assert o == i // 4, (p, o, i)
    # per partition, the offsets are exactly 0..n-1
    per: dict[int, list[int]] = {}
    for _, p, o, _ in rows:
        per.setdefault(p, []).append(o)
    for p, offs in per.items():
        assert sorted(offs) == list(range(len(offs))), f"partition {p}: offsets not contiguous from 0"
    return {p: len(offs) for p, offs in per.items()}


# -- a TCP proxy that can be cut -------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; ``cut()`` closes the listener and every connection,
    ``restore()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = 0
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.accepted = 0
        self.thread: threading.Thread | None = None

    def start(self) -> "TcpProxy":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self.listener = s
        self.thread = threading.Thread(target=self._accept, args=(s,), daemon=True)
        self.thread.start()
        return self

    restore = start

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self.conns.update((client, upstream))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select(1.0):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
                with self.lock:
                    if a not in self.conns:
                        return
        except OSError:
            return
        finally:
            sel.close()
            with self.lock:
                self.conns.discard(a)
                self.conns.discard(b)
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            conns, self.conns = list(self.conns), set()
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            listener.close()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        if self.thread is not None:
            self.thread.join(5)

    close = cut

    @contextlib.contextmanager
    def down(self):
        """The target unreachable for the block (``cut``), reachable again after it
        (``restore``): what a conformance kit's ``destination_down`` hook gives."""
        self.cut()
        try:
            yield
        finally:
            self.restore()


@pytest.fixture
def dbs(tmp_path):
    """A factory of ``Db`` objects that drops their tables and offsets rows afterwards."""
    made: list[Db] = []

    def make(kind: str) -> Db:
        db = make_db(kind, tmp_path)
        made.append(db)
        return db

    yield make
    for db in made:
        db.cleanup()


# -- driving the sink directly, as the runner does ---------------------------------------------


def open_sink(db: Db, table: str, group: str, *, tombstones: str = "skip", **config):
    """A fresh, opened SQL sink on ``db`` (a restarted runner makes a new one the same way)."""
    from kpipe.api import SinkContext
    from kpipe.sinks.sql.sink import SqlSink

    sink = SqlSink({"url": db.url, "table": table, **config},
                   SinkContext(pipeline=group, group=group, tombstones=tombstones))
    sink.open()
    return sink


@contextlib.contextmanager
def sink_on(db: Db, table: str, group: str, **config):
    """``open_sink``, closed on leaving the block."""
    sink = open_sink(db, table, group, **config)
    try:
        yield sink
    finally:
        sink.close()


def fake_batch(start: int, stop: int, items, partition: int = 0, topic: str = "orders"):
    """A Batch of ``topic[partition]`` covering ``[start, stop)`` with the ``(offset, key,
    value)`` records given; offsets not given were filtered (the range still covers them)."""
    from kpipe.api import Batch
    from kpipe.transforms.testing import FakeMessage

    items = list(items)
    msgs = [FakeMessage(v, None if k is None else str(k).encode(), None, 1_795_000_000_000 + o, o, topic, partition)
            for o, k, v in items]
    return Batch(topic, partition, start, stop, [v for _, _, v in items], msgs)


def write_like_runner(sink, batches: list, max_rejects: int = 100) -> list[tuple[str, int, int]]:
    """``sink.write(batches)`` as the runner does it under ``errors.sink: skip``: each record the
    sink reports is dropped (``Batch.without``) and the rest written again. Returns the rejected
    records' (topic, partition, offset), in the order reported. Checks that every report is
    an index into the batch the sink was given, consistent with the offset it names.

    A ``RetryableError`` is written again too, a few times, as the runner's ``retry:`` does: on
    MariaDB, tests running at once can deadlock on the first rows of ``kpipe_offsets``."""
    from kpipe.api import BadRecordError, RetryableError
    from kpipe.runtime.runner import _locate

    rejected = []
    retries = 5
    for _ in range(max_rejects + retries):
        try:
            sink.write(batches)
            return rejected
        except RetryableError:
            retries -= 1
            if retries < 0:
                raise
        except BadRecordError as exc:
            pos = _locate(batches, exc)
            bad = batches[pos]
            assert 0 <= exc.index < len(bad.values), (exc.index, bad)
            assert exc.offset == bad.offset_of(exc.index), \
                f"index {exc.index} is offset {bad.offset_of(exc.index)} of the batch, the sink named {exc.offset}"
            rejected.append((bad.topic, bad.partition, exc.offset))
            batches = batches[:pos] + [bad.without(exc.index)] + batches[pos + 1:]
    raise AssertionError(f"more than {max_rejects} records rejected: {rejected[:10]}")


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def db_url(request, tmp_path) -> str:
    """The URL of each database under test, in turn (SQLite: a file in ``tmp_path``)."""
    return {"postgres": PG_URL, "mariadb": MARIADB_URL}.get(request.param) or f"sqlite:///{tmp_path / 'sink.db'}"

"""Helpers for the SQL sink tests: real databases, kpipe subprocesses, a cuttable TCP proxy.

The databases are the real servers of the test machine (PostgreSQL and MariaDB) and SQLite
files in ``tmp_path``. Every test uses its own table and consumer group, so tests never see
each other's rows; the shared ``kpipe_offsets`` table is keyed by group.
"""
from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import ROOT, kpipe_cmd

PG_URL = os.environ.get("KPIPE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("KPIPE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
SESSION = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
_SUMMARY = re.compile(r"consumed (\d+), wrote (\d+) records in (\d+) batches")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


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


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(kpipe_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, stdin=subprocess.DEVNULL)


def summary(stderr: str) -> tuple[int, int, int]:
    """(consumed, written, batches) from the run's closing log line."""
    m = _SUMMARY.search(stderr)
    assert m, f"no summary line in stderr:\n{stderr[-3000:]}"
    return int(m[1]), int(m[2]), int(m[3])


class Proc:
    """A ``kpipe`` subprocess whose stdout and stderr go to files under ``logdir``."""

    def __init__(self, logdir: Path, tag: str, *args: str):
        logdir.mkdir(exist_ok=True)
        self.tag = tag
        self.err_path = logdir / f"{tag}.stderr"
        with open(logdir / f"{tag}.stdout", "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(kpipe_cmd(*args), stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL, cwd=ROOT)
        self.started = time.monotonic()

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def wait_for(cond, timeout: float, what: str, procs=(), interval: float = 0.05):
    """Poll ``cond`` until truthy; fail with the subprocesses' stderr on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        for proc in procs:
            assert proc.alive(), (f"{proc.tag} exited rc={proc.popen.returncode} while waiting for "
                                  f"{what}:\n{proc.stderr()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}:\n" + \
            "\n".join(f"--- {p.tag}:\n{p.stderr()[-3000:]}" for p in procs)
        time.sleep(interval)


_EVENT = re.compile(r"kpipe\.run: (assigned|revoked|lost) ([^\n]*)")


def ownership(proc: Proc) -> set[int]:
    """The partitions ``proc`` owns now, replaying its rebalance log lines in order."""
    text = proc.stderr()
    text = text[: text.rfind("\n") + 1]
    owned: set[int] = set()
    for kind, rest in _EVENT.findall(text):
        parts = {int(p) for p in re.findall(r"\[(\d+)\]", rest.split(" without ")[0])}
        owned = owned | parts if kind == "assigned" else owned - parts
    return owned


# -- Kafka -----------------------------------------------------------------------------------


def produce_values(brokers: str, topic: str, items) -> list[tuple[int, int, int]]:
    """Produce ``(partition, key, value)`` triples (value: a dict, or bytes as is), in order.

    Returns the (partition, offset, timestamp ms) of each, in the order given.
    """
    items = list(items)
    where: list = [None] * len(items)
    errors = []

    def cb(i):
        def on_delivery(err, msg):
            if err is not None:
                errors.append(err)
            else:
                where[i] = (msg.partition(), msg.offset(), msg.timestamp()[1])
        return on_delivery

    p = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "acks": "all",
                  "enable.idempotence": False, "batch.num.messages": 10000})
    for i, (partition, key, value) in enumerate(items):
        data = value if isinstance(value, (bytes, type(None))) else orjson.dumps(value)
        k = key.encode() if isinstance(key, str) else key
        while True:
            try:
                p.produce(topic, data, k, partition=partition, on_delivery=cb(i))
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0 and not errors, errors[:3]
    return where


def seal(brokers: str, topic: str, value_for) -> list[tuple[int, int, int]]:
    """One more record per partition, each alone in its produce batch.

    Works around the bundled broker (Tansu): its ListOffsets(LATEST) answers the base offset
    of the partition's last record batch + 1, so after a multi-record batch
    ``--until-caught-up`` would take a too-small end offset. ``value_for(p)`` gives the record.
    """
    return produce_values(brokers, topic, [(p, None, value_for(p)) for p in range(4)])


def committed(brokers: str, group: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    try:
        return {tp.partition: tp.offset for tp in
                c.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)}
    finally:
        c.close()


class BurstProducer(threading.Thread):
    """Produces JSON events ``{"id": i, ...}`` to partition ``i % 4`` in bursts until stopped."""

    def __init__(self, brokers: str, topic: str, start: int, burst: int = 200, pause: float = 0.05):
        super().__init__(daemon=True)
        self.brokers, self.topic = brokers, topic
        self.next_id = start
        self.burst, self.pause = burst, pause
        self.stop_event = threading.Event()
        self.failures: list = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            p = Producer({"bootstrap.servers": self.brokers, "linger.ms": 5, "acks": "all",
                          "enable.idempotence": False})

            def on_delivery(err, msg):
                if err is not None:
                    self.failures.append(err)

            while not self.stop_event.is_set():
                for i in range(self.next_id, self.next_id + self.burst):
                    p.produce(self.topic, orjson.dumps({"id": i, "name": f"event-{i}", "amount": i % 997}),
                              str(i).encode(), partition=i % 4, on_delivery=on_delivery)
                assert p.flush(30) == 0, "burst not delivered"
                self.next_id += self.burst
                self.stop_event.wait(self.pause)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> int:
        """Stop; returns how many ids were produced in all (ids are start..n-1)."""
        self.stop_event.set()
        self.join(60)
        assert not self.is_alive(), "producer thread did not stop"
        assert self.error is None, f"producer failed: {self.error!r}"
        assert not self.failures, f"deliveries failed: {self.failures[:3]}"
        return self.next_id


def event(i: int) -> dict:
    return {"id": i, "name": f"event-{i}", "amount": i % 997}


def produce_events(brokers: str, topic: str, n: int, start: int = 0) -> list:
    """Events ``start..start+n-1``, event i to partition i % 4 (so id = 4 * offset + partition
    on a fresh topic when every call starts at a multiple of 4)."""
    return produce_values(brokers, topic, ((i % 4, str(i), event(i)) for i in range(start, start + n)))


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

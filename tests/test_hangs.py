"""Nothing hangs (issue 13): a dependency that stops answering ends the run with exit 3 within
the spec's budget, and SIGTERM ends a run within 10 s even then, committing nothing that was
not written.

A stall is made with ``stallproxy.StallProxy``: connections stay open and no byte moves, so
only kpipe's own timeouts can end the wait (a cut connection would fail at once).
"""
from __future__ import annotations

import signal
import threading
import time

import pytest
import yaml
from confluent_kafka import Consumer

from conftest import records_in
from kit import FAST_SESSION, Proc, advertised_broker, produce_events, run_kpipe, unique, wait_for
from kpipe.broker import free_port
from kpipe.kafka_admin import create_topic
from s3kit import bucket, moto_server, s3, write_s3_spec  # noqa: F401 (fixtures)
from s3kit import committed as s3_committed
from sqlkit import committed, dbs, write_sql_spec  # noqa: F401 (dbs: a fixture)
from stallproxy import stall_proxy  # noqa: F401 (a fixture)

META = ["_topic", "_partition", "_offset"]
QUICK_RETRY = {"max_attempts": 2, "initial_backoff": "100ms", "max_backoff": "200ms"}


def _stalled_sql_run(brokers, topic, tmp_path, db, proxy, url, *, retry=None, **sink):
    """A long-running ``kpipe run`` writing ``topic`` through ``proxy``: 40 records written,
    then the proxy stalls and 40 more arrive. Returns (proc, table, group, when stalled)."""
    table, group = db.table("hang"), db.group("hang")
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_age="300ms", retry=retry,
                          options=FAST_SESSION,
                          sink={"type": db.sink_type, "url": url, "table": table, "metadata_columns": META, **sink})
    produce_events(brokers, topic, 40)
    proc = Proc(tmp_path / "logs", "run", "run", str(spec))
    try:
        wait_for(lambda: sum(db.offsets(group).values()) == 40, 30, "the first 40 records", [proc])
        proxy.stall()
        stalled_at = time.monotonic()
        produce_events(brokers, topic, 40, start=40)
    except BaseException:
        proc.kill()
        raise
    return proc, table, group, stalled_at


def _outcome(proc, since: float, timeout: float = 25):
    """(exit code or None, seconds from ``since`` to the exit, stderr); the process is gone after."""
    try:
        rc = proc.wait(timeout)
        return rc, time.monotonic() - since, proc.stderr()
    finally:
        proc.kill()


def _sigterm(proc, after: float) -> float:
    """SIGTERM ``proc`` ``after`` seconds from now (it must still run then); returns when sent."""
    time.sleep(after)
    assert proc.alive(), proc.stderr()[-3000:]
    proc.signal(signal.SIGTERM)
    return time.monotonic()


def _nothing_committed_past_the_rows(db, brokers, topic, table, group):
    """The stored offsets are exactly the rows written before the stall (10 per partition),
    and the group never committed past them."""
    rows = dict(db.rows(f"SELECT _partition, count(*) FROM {db.q(table)} GROUP BY _partition"))
    assert rows == {p: 10 for p in range(4)}, rows
    assert db.offsets(group) == {(topic, p): 10 for p in range(4)}
    assert all(o <= 10 for o in committed(brokers, group, topic).values())


def test_postgres_that_stops_answering_exits_3_within_the_budget(brokers, topic, tmp_path, dbs, stall_proxy):
    db = dbs("postgres")
    proxy = stall_proxy("127.0.0.1", 5432)
    url = f"postgresql+psycopg://postgres@{proxy.address}/test"
    retry = {**QUICK_RETRY, "max_elapsed": "1s", "attempt_timeout": "4s"}  # 4 s of silence is a stall
    proc, table, group, stalled_at = _stalled_sql_run(brokers, topic, tmp_path, db, proxy, url, retry=retry,
                                                      statement_timeout="2s")
    rc, took, err = _outcome(proc, stalled_at)
    assert rc == 3, f"rc={rc} after {took:.1f}s\n{err[-3000:]}"
    # 300 ms to cut the batch, 5 s of silence, then the drain of the shutdown: well under 12 s
    assert took < 12, took
    assert "no answer for" in err and "Traceback" not in err, err[-3000:]
    _nothing_committed_past_the_rows(db, brokers, topic, table, group)


def test_sigterm_ends_a_run_whose_database_stopped_answering(brokers, topic, tmp_path, dbs, stall_proxy):
    """No new spec keys: with the defaults alone (a stall is 2 minutes of silence) SIGTERM gets through."""
    db = dbs("postgres")
    proxy = stall_proxy("127.0.0.1", 5432)
    url = f"postgresql+psycopg://postgres@{proxy.address}/test"
    proc, table, group, _ = _stalled_sql_run(brokers, topic, tmp_path, db, proxy, url)
    try:
        sent = _sigterm(proc, after=1.5)  # the next batch is cut and its write is stuck in the silence
    except BaseException:
        proc.kill()
        raise
    rc, took, err = _outcome(proc, sent, timeout=10)
    assert rc is not None, f"still running 10 s after SIGTERM:\n{err[-3000:]}"
    assert rc == 3, f"rc={rc}\n{err[-3000:]}"  # the stuck write was given up: not a clean drain
    assert took < 10 and "did not answer within" in err, err[-3000:]
    _nothing_committed_past_the_rows(db, brokers, topic, table, group)


def test_mariadb_stall_is_a_failed_attempt_under_retry(brokers, topic, tmp_path, dbs, stall_proxy):
    """PyMySQL's read_timeout (sink.statement_timeout) ends each silent wait: every stall is
    one failed attempt, and the run exits 3 once the attempts and max_elapsed are spent."""
    db = dbs("mariadb")
    proxy = stall_proxy("127.0.0.1", 3306)
    url = f"mysql+pymysql://root@{proxy.address}/test"
    retry = {"max_attempts": 3, "initial_backoff": "100ms", "max_backoff": "200ms", "max_elapsed": "2s"}
    proc, table, group, stalled_at = _stalled_sql_run(brokers, topic, tmp_path, db, proxy, url, retry=retry,
                                                      statement_timeout="1s", connect_timeout="1s")
    rc, took, err = _outcome(proc, stalled_at)
    assert rc == 3, f"rc={rc} after {took:.1f}s\n{err[-3000:]}"
    assert "still failing after" in err and "retry 1/2" in err, err[-3000:]
    assert "no answer for" not in err  # the driver's timeout ended each attempt, not the runner's bound
    assert took < 15, took
    _nothing_committed_past_the_rows(db, brokers, topic, table, group)


def test_unreachable_broker_exits_3_within_connect_timeout(tmp_path):
    port = free_port()  # nothing listens there
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "name": unique("nobroker"),
        "source": {"brokers": f"127.0.0.1:{port}", "topic": "t", "connect_timeout": "3s"},
        "sink": {"type": "files", "path": str(tmp_path / "out")}}))
    started = time.monotonic()
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    assert 3 <= took < 10, took
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.stderr
    assert f"cannot reach the brokers at 127.0.0.1:{port} within 3s (source.connect_timeout)" in errors[0]
    assert "Traceback" not in proc.stderr


# -- the group's assignment -------------------------------------------------------------------


class Holder:
    """A plain consumer that joins ``group`` first (so the group's leader), polls from a thread
    until ``freeze()``, then stops polling while librdkafka keeps its heartbeats going. A later
    rebalance waits for it to rejoin, which it only does from poll(): the group assigns nothing
    to anyone until its max.poll.interval.ms (5 minutes here) expires. Deterministic on Tansu
    (whose coordinator waits for the leader) and on Kafka (which waits for every member)."""

    def __init__(self, brokers: str, group: str, topic: str):
        self.assigned: list = []
        self.frozen = threading.Event()
        self.consumer = Consumer({"bootstrap.servers": brokers, "group.id": group, **FAST_SESSION,
                                  "max.poll.interval.ms": 300000, "enable.auto.commit": False})
        self.consumer.subscribe([topic], on_assign=lambda c, ps: self.assigned.append(len(ps)))
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        wait_for(lambda: self.assigned, 20, "the holder's assignment")

    def _poll(self) -> None:
        while not self.frozen.is_set():
            self.consumer.poll(0.1)

    def freeze(self) -> None:
        self.frozen.set()
        self.thread.join(5)

    def close(self) -> None:
        self.freeze()
        self.consumer.close()


def _files_spec(tmp_path, brokers, topic, group, **top_level):
    """A files pipeline in ``group`` that gives up on an assignment after 4 s."""
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "name": unique("assign"),
        "source": {"brokers": brokers, "topic": topic, "group": group, "assignment_timeout": "4s",
                   "options": FAST_SESSION},
        "sink": {"type": "files", "path": str(tmp_path / "out")}, **top_level}))
    return spec


def test_a_group_that_never_assigns_exits_3_naming_it(brokers, topic, tmp_path):
    group = unique("wedged")
    holder = Holder(brokers, group, topic)
    holder.freeze()
    try:
        spec = _files_spec(tmp_path, brokers, topic, group)
        started = time.monotonic()
        proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=40)
        took = time.monotonic() - started
    finally:
        holder.close()
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert took < 12, took
    assert (f"consumer group {group!r} received no partitions within 4s (source.assignment_timeout)"
            in proc.stderr), proc.stderr[-3000:]
    assert "the broker reports: " in proc.stderr and "we are member " in proc.stderr
    assert "no partitions assigned for" in proc.stderr  # the warning at half the timeout
    assert not list((tmp_path / "out").rglob("*.jsonl"))


def test_a_run_that_loses_its_partitions_for_good_goes_unready_then_exits_3(brokers, topic, tmp_path):
    from test_ops import get, serving_port

    group = unique("lost")
    spec = _files_spec(tmp_path, brokers, topic, group)
    holder = Holder(brokers, group, topic)  # the group's leader
    proc = Proc(tmp_path / "logs", "run", "run", str(spec), "--metrics-port", "0", "--metrics-host", "127.0.0.1")
    third = None
    try:
        port = serving_port(proc)
        wait_for(lambda: get(port, "/readyz")[0] == 200, 20, "the run's first assignment", [proc])
        holder.freeze()
        third = Consumer({"bootstrap.servers": brokers, "group.id": group, **FAST_SESSION})
        third.subscribe([topic])  # a rebalance the leader never joins: nobody is assigned again

        def unready():
            third.poll(0.1)
            status, body = get(port, "/readyz")
            return body if status == 503 else None

        body = wait_for(unready, 20, "/readyz to turn 503", [proc])
        assert "not ready: no partitions assigned for" in body, body
        deadline = time.monotonic() + 15
        while proc.alive() and time.monotonic() < deadline:
            third.poll(0.1)
        rc = proc.wait(0.1)
    finally:
        proc.kill()
        holder.close()
        if third is not None:
            third.close()
    err = proc.stderr()
    assert rc == 3, f"rc={rc}\n{err[-3000:]}"
    assert f"consumer group {group!r} got no partitions back after a rebalance within 4s" in err, err[-3000:]


# -- S3 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["budget", "sigterm"])
def test_s3_that_stops_answering(brokers, topic, tmp_path, moto_server, s3, bucket, stall_proxy, stop):
    """The S3 sink's requests run on its own pool threads, which the interpreter would join at
    exit: the process must end anyway, with nothing committed past what was written."""
    proxy = stall_proxy("127.0.0.1", moto_server.port)
    retry = {**QUICK_RETRY, "max_elapsed": "1s", "attempt_timeout": "4s" if stop == "budget" else "2m"}
    spec = write_s3_spec(tmp_path, brokers, topic, f"http://{proxy.address}", bucket, "x", name=unique("s3stall"),
                         addressing_style="path", max_age="300ms", options=FAST_SESSION, retry=retry)
    produce_events(brokers, topic, 40)
    proc = Proc(tmp_path / "logs", "run", "run", str(spec))
    try:
        wait_for(lambda: s3_committed(s3, bucket, "x", topic) == {p: 10 for p in range(4)}, 30,
                 "the first 40 records", [proc])
        proxy.stall()
        stalled_at = time.monotonic()
        produce_events(brokers, topic, 40, start=40)
        if stop == "sigterm":
            stalled_at = _sigterm(proc, after=1.5)  # the next batch is cut, its upload stuck in the silence
    except BaseException:
        proc.kill()
        raise
    rc, took, err = _outcome(proc, stalled_at)
    assert rc == 3, f"rc={rc} after {took:.1f}s\n{err[-3000:]}"
    assert took < (10 if stop == "sigterm" else 12), took
    assert ("did not answer within" if stop == "sigterm" else "no answer for") in err, err[-3000:]
    assert s3_committed(s3, bucket, "x", topic) == {p: 10 for p in range(4)}


# -- the broker -------------------------------------------------------------------------------


@pytest.fixture
def proxied_broker(stall_proxy):
    """(a broker of its own whose every connection goes through a ``StallProxy``, the proxy)."""
    for attempt in range(3):  # a free port can be taken by another worker before Tansu binds it
        broker_port, proxy_port = free_port(), free_port()
        proxy = stall_proxy("127.0.0.1", broker_port, proxy_port)
        broker = advertised_broker(broker_port, proxy_port)
        try:
            broker.start()
            break
        except RuntimeError:
            broker.stop()
            if attempt == 2:
                raise
    try:
        yield proxy.address, proxy
    finally:
        broker.stop()


@pytest.mark.parametrize("stop", ["budget", "sigterm"])
def test_a_broker_that_stops_answering(proxied_broker, tmp_path, stop):
    """The broker goes silent after the run fetched its records and before it committed them:
    the files land, the commit gets no answer. Exit 3 once commits have gone unanswered for
    the retry budget; or, on SIGTERM, an exit within 10 s, the group's offsets untouched."""
    brokers, proxy = proxied_broker
    topic, group = unique("t"), unique("brokerstall")
    create_topic(brokers, topic, 4)
    retry = {**QUICK_RETRY, "max_elapsed": "1s", "attempt_timeout": "4s" if stop == "budget" else "2m"}
    spec = _files_spec(tmp_path, brokers, topic, group, retry=retry,
                       batch={"max_records": 10000, "max_bytes": "16MiB", "max_age": "2s"})
    out = tmp_path / "out"
    produce_events(brokers, topic, 40)
    proc = Proc(tmp_path / "logs", "run", "run", str(spec))
    try:
        wait_for(lambda: "kpipe.run: assigned" in proc.stderr(), 30, "the assignment", [proc])
        time.sleep(1.0)  # the fetch (loopback: milliseconds), not the batch: it is cut 2 s after
        proxy.stall()
        stalled_at = time.monotonic()
        wait_for(lambda: records_in(out) == 40, 10, "the batch fetched before the stall", [proc])
        if stop == "sigterm":
            stalled_at = _sigterm(proc, after=0.5)  # its commit is waiting for an answer
    except BaseException:
        proc.kill()
        raise
    rc, took, err = _outcome(proc, stalled_at)
    if stop == "sigterm":
        assert rc is not None and took < 10, f"rc={rc} after {took:.1f}s\n{err[-3000:]}"
        assert rc == 0, err[-3000:]  # drained: the files hold their offsets, the commit only mirrors them
    else:
        assert rc == 3, f"rc={rc} after {took:.1f}s\n{err[-3000:]}"
        assert took < 15, f"{took:.1f}s\n{err[-3000:]}"
        # whichever notices first: the commit left unanswered, or the assignment the silent
        # coordinator took away (librdkafka's session timeout) and never gives back
        assert (f"no commit acknowledged by the brokers at {brokers}" in err
                or "got no partitions back after a rebalance" in err), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert records_in(out) == 40
    proxy.resume()
    assert all(o <= 10 for o in committed(brokers, group, topic).values())  # never past what was written

"""The Writer, driven through the runner by a fake consumer: writes in flight up to
``Capabilities.max_in_flight`` (never two for one partition, each partition in order), and a
``WriteOutcome`` that names the partitions a write made durable."""
from __future__ import annotations

import logging
import threading

import pytest

from kpipe.api import BadRecordError, Capabilities, FatalError, RetryableError, WriteOutcome
from kpipe.runtime.fakes import FakeCluster, Store, fake_spec, recording_registry
from kpipe.runtime.retry import Backoff
from kpipe.runtime.runner import Runner

FAST = Backoff(attempts=3, base=0.001, cap=0.001, max_elapsed=0.0)


def run(spec, cluster, store, caps=Capabilities(), **kw):
    def check(topic, partition, offset):  # no commit past what the sink holds durably
        with store.lock:
            assert offset <= store.durable.get((topic, partition), 0), (topic, partition, offset, store.durable)

    cluster.on_commit = check
    runner = Runner(spec, consumer_factory=cluster.factory, plugins=recording_registry(store, caps),
                    backoff=FAST, until_caught_up=True, **kw)
    return runner.run()


def test_two_writes_run_at_once_for_different_partitions_and_never_for_one():
    cluster, store = FakeCluster({"t": 3}), Store()
    cluster.produce("t", 0, [b'{"a": 0}'] * 3)
    cluster.produce("t", 1, [b'{"a": 1}'] * 9)
    cluster.produce("t", 2, [b'{"a": 2}'] * 9)
    cluster.chunk = 3  # one batch per consume: t[0] first, then t[1] while it is written
    first, second = threading.Event(), threading.Event()
    active: set = set()
    lock = threading.Lock()
    overlapped: list = []

    def hook(sink, batches):
        parts = {(b.topic, b.partition) for b in batches}
        if parts == {("t", 0)}:
            first.set()
        else:  # submitted while t[0] is written, but its thread may not have reached here yet
            first.wait(5)
        with lock:
            assert not parts & active, f"two writes at once for {parts & active}"
            if active:
                overlapped.append((set(active), parts))
                second.set()
            active.update(parts)
        try:
            if parts == {("t", 0)}:
                assert second.wait(5), "the second write never started beside the first"
        finally:
            with lock:
                active.difference_update(parts)

    result = run(fake_spec(sink_config={"hook": hook}), cluster, store, Capabilities(max_in_flight=2))
    assert result.exit_code == 0, result.reason
    assert overlapped  # the writes did overlap
    # Each partition's writes reached the sink in order (RecordingSink refuses a gap or an overlap).
    assert store.rows == {("t", 0): list(range(3)), ("t", 1): list(range(9)), ("t", 2): list(range(9))}
    assert cluster.committed == {("t", 0): 3, ("t", 1): 9, ("t", 2): 9}


def test_one_write_in_flight_by_default_every_call_on_one_thread():
    cluster, store = FakeCluster({"t": 2}), Store()
    cluster.produce("t", 0, [b"{}"] * 6)
    cluster.produce("t", 1, [b"{}"] * 6)
    cluster.chunk = 3
    threads, active = set(), []

    def hook(sink, batches):
        threads.add(threading.get_ident())
        active.append(1)
        assert len(active) == 1
        active.pop()

    result = run(fake_spec(sink_config={"hook": hook}), cluster, store)
    assert result.exit_code == 0, result.reason
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_a_write_outcome_commits_the_partitions_it_names_and_writes_the_rest_again(caplog):
    cluster, store = FakeCluster({"t": 2}), Store()
    cluster.produce("t", 0, [b"{}"] * 3)
    cluster.produce("t", 1, [b"{}"] * 3)
    calls: list = []

    def half(sink, batches):
        calls.append(sorted({(b.topic, b.partition) for b in batches}))
        if len(calls) == 1:
            return WriteOutcome(frozenset({("t", 0)}), "t[1]: upload failed")
        return None

    with caplog.at_level(logging.WARNING, logger="kpipe"):
        result = run(fake_spec(sink_config={"hook": half}), cluster, store)
    assert result.exit_code == 0, result.reason
    assert calls == [[("t", 0), ("t", 1)], [("t", 1)]]  # the rest, and only the rest, again
    assert store.rows == {("t", 0): [0, 1, 2], ("t", 1): [0, 1, 2]}
    assert cluster.committed == {("t", 0): 3, ("t", 1): 3}
    assert result.written == 6
    assert "another writer" not in caplog.text and "not durable yet: t[1]" in caplog.text


def test_what_a_write_outcome_made_durable_is_committed_when_the_rest_never_is():
    cluster, store = FakeCluster({"t": 2}), Store()
    cluster.produce("t", 0, [b"{}"] * 3)
    cluster.produce("t", 1, [b"{}"] * 3)

    def only_t0(sink, batches):
        return WriteOutcome(frozenset({("t", 0)}))

    result = run(fake_spec(sink_config={"hook": only_t0}), cluster, store)
    assert result.exit_code == 3, result.reason
    assert "not durable yet: t[1]" in result.reason
    assert cluster.committed.get(("t", 0)) == 3 and cluster.committed.get(("t", 1), 0) == 0
    assert ("t", 1) not in store.rows


@pytest.mark.parametrize("then, code", [
    (FatalError("the table was dropped"), 2),
    (RuntimeError("a bug in the sink"), 2),
    (BadRecordError("refused, but not located"), 2),  # the sink names no record: FatalError
    (RetryableError("connection refused"), 3),          # the retry budget runs out
])
def test_what_a_partial_write_made_durable_is_committed_when_the_retry_of_the_rest_fails(then, code):
    cluster, store = FakeCluster({"t": 3}), Store()
    for p in range(3):
        cluster.produce("t", p, [b"{}"] * 3)
    calls: list = []

    def partial_then_fail(sink, batches):
        calls.append(sorted({(b.topic, b.partition) for b in batches}))
        if len(calls) == 1:
            return WriteOutcome(frozenset({("t", 0), ("t", 2)}), "t[1]: upload failed")
        raise then

    result = run(fake_spec(sink_config={"hook": partial_then_fail}), cluster, store)
    assert result.exit_code == code, result.reason
    assert calls[0] == [("t", 0), ("t", 1), ("t", 2)] and all(c == [("t", 1)] for c in calls[1:]), calls
    # The durable partitions are committed (the run stops all the same); the other is not.
    assert store.durable == {("t", 0): 3, ("t", 2): 3}
    assert cluster.committed.get(("t", 0)) == 3 and cluster.committed.get(("t", 2)) == 3
    assert cluster.committed.get(("t", 1), 0) == 0


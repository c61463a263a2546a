"""The consumer loop driven by a fake consumer (kpipe.runtime.fakes), no broker: commits follow
durability, a revoke mid-write, bad records under each policy, retries that end, stop signals,
and the end of --until-caught-up. The broker tests (test_crash, test_group, ...) check the
same promises against Kafka; these pin the loop's logic, fast and deterministic."""
from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from kpipe.api import BadRecordError, Capabilities, RetryableError
from kpipe.runtime.fakes import FakeCluster, FakeDeadLetters, Store, fake_spec, recording_registry
from kpipe.runtime.retry import Backoff
from kpipe.runtime.runner import Runner

FAST = Backoff(attempts=3, base=0.001, cap=0.001, max_elapsed=0.0)


def values(n: int, bad: set = frozenset(), sink_bad: set = frozenset()) -> list:
    out = []
    for i in range(n):
        if i in bad:
            out.append(b"{not json")
        else:
            out.append(json.dumps({"i": i, "refuse": i in sink_bad}).encode())
    return out


def run(spec, cluster, store, caps=Capabilities(), **kw):
    dlq = FakeDeadLetters()
    runner = Runner(spec, consumer_factory=cluster.factory, plugins=recording_registry(store, caps),
                    dlq_factory=lambda spec, log: dlq, backoff=kw.pop("backoff", FAST), **kw)
    cluster.stop_with = runner.request_stop
    result = runner.run()
    return result, runner, dlq


def commits_follow_durability(cluster, store):
    """Fail the test at any commit past what the sink holds durably."""
    def check(topic, partition, offset):
        with store.lock:
            assert offset <= store.durable.get((topic, partition), 0), (topic, partition, offset, store.durable)
    cluster.on_commit = check


def test_until_caught_up_writes_each_offset_once_and_commits_the_ends():
    cluster, store = FakeCluster({"t": 2}), Store()
    cluster.produce("t", 0, values(10))
    cluster.produce("t", 1, values(4))
    commits_follow_durability(cluster, store)
    result, _, _ = run(fake_spec(), cluster, store, until_caught_up=True)
    assert result.exit_code == 0, result.reason
    assert store.rows == {("t", 0): list(range(10)), ("t", 1): list(range(4))}
    assert cluster.committed == {("t", 0): 10, ("t", 1): 4} == result.partitions
    assert all(len(call) >= 1 for call in store.calls)
    assert cluster.consumers[0].closed


def test_until_caught_up_stops_at_the_ends_seen_at_start():
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, values(5))
    cluster.at(2, lambda consumer: cluster.produce("t", 0, values(5)))  # arrives after the start
    result, _, _ = run(fake_spec(max_records=100), cluster, store, until_caught_up=True)
    assert result.exit_code == 0, result.reason
    assert cluster.committed[("t", 0)] >= 5 and store.durable[("t", 0)] == cluster.committed[("t", 0)]


def test_nothing_is_committed_before_the_write_returns_and_a_failed_commit_is_retried():
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, values(12))
    cluster.fail_commits(2)
    cluster.raise_commits(1)
    commits_follow_durability(cluster, store)
    result, _, _ = run(fake_spec(), cluster, store, until_caught_up=True)
    assert result.exit_code == 0, result.reason
    assert cluster.committed[("t", 0)] == 12
    assert store.rows[("t", 0)] == list(range(12))


def test_a_revoke_while_a_write_is_in_flight_settles_it_and_drops_the_buffer():
    cluster, store = FakeCluster({"t": 2}), Store()
    cluster.produce("t", 0, values(20))
    cluster.produce("t", 1, values(20))
    cluster.chunk = 5
    started, release = threading.Event(), threading.Event()
    seen: list = []

    def hook(sink, batches):
        if not started.is_set():  # the first write waits until the revoke has begun
            started.set()
            assert release.wait(5)

    def revoke_mid_write(consumer):
        assert started.wait(5) and not release.is_set()  # a write is in flight, blocked
        threading.Timer(0.05, release.set).start()  # let it end while the revoke waits for it
        consumer.fire("revoke")
        seen.append((dict(cluster.committed), dict(store.durable)))

    cluster.at(2, revoke_mid_write)
    cluster.at(3, "assign")
    commits_follow_durability(cluster, store)
    result, _, _ = run(fake_spec(sink_config={"hook": hook}), cluster, store, until_caught_up=True)
    assert result.exit_code == 0, result.reason
    # The write in flight was committed before the revoke returned.
    (committed, durable), = seen
    assert durable and all(committed.get(tp) == o for tp, o in durable.items()), (committed, durable)
    # Every offset once, in order: what was buffered was dropped and read again from there.
    assert store.rows == {("t", 0): list(range(20)), ("t", 1): list(range(20))}
    assert cluster.committed == {("t", 0): 20, ("t", 1): 20}


def test_a_sink_that_stores_offsets_resumes_from_them_after_a_lost_partition():
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, values(9))
    cluster.chunk = 3
    cluster.at(3, "lost")
    cluster.at(4, "assign")
    cluster.fail_commits(8)  # the group lags behind the sink: the sink's offsets decide
    result, _, _ = run(fake_spec(), cluster, store, Capabilities(stores_offsets=True), until_caught_up=True)
    assert result.exit_code == 0, result.reason
    assert store.rows[("t", 0)] == list(range(9))  # RecordingSink refuses an overlap
    assert cluster.committed[("t", 0)] == 9


@pytest.mark.parametrize("stage", ["deserialize", "sink"])
@pytest.mark.parametrize("policy", ["fail", "skip", "dlq"])
def test_a_bad_record_under_each_policy(stage, policy):
    cluster, store = FakeCluster({"t": 1}), Store()
    bad = 4
    cluster.produce("t", 0, values(10, bad={bad} if stage == "deserialize" else set(),
                                   sink_bad={bad} if stage == "sink" else set()))

    def refuse(sink, batches):
        for b in batches:
            for i, v in enumerate(b.values):
                if v["refuse"]:
                    raise BadRecordError.in_batch("refused", b, i)

    commits_follow_durability(cluster, store)
    result, _, dlq = run(fake_spec(policy=policy, sink_config={"hook": refuse}), cluster, store,
                         until_caught_up=True)
    if policy == "fail":
        assert result.exit_code == 2 and f"@{bad}" in result.reason and f"errors.{stage}: fail" in result.reason
        assert store.rows[("t", 0)] == list(range(bad))  # what precedes it, and nothing past it
        assert cluster.committed[("t", 0)] == bad
        return
    assert result.exit_code == 0, result.reason
    assert store.rows[("t", 0)] == [i for i in range(10) if i != bad]
    assert cluster.committed[("t", 0)] == 10
    assert result.rejected[(stage, policy)] == 1
    if policy == "dlq":
        assert [(o, s) for o, s, _ in dlq.sent] == [(bad, stage)] and result.dead_lettered == 1
    else:
        assert dlq.sent == [] and result.skipped == 1


def test_a_transient_failure_is_retried_then_succeeds():
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, values(6))
    failures = [RetryableError("down"), RetryableError("down")]

    def flaky(sink, batches):
        if failures:
            raise failures.pop()

    result, _, _ = run(fake_spec(sink_config={"hook": flaky}), cluster, store, until_caught_up=True)
    assert result.exit_code == 0, result.reason
    assert store.rows[("t", 0)] == list(range(6)) and cluster.committed[("t", 0)] == 6


def test_a_dependency_that_stays_down_fails_closed_with_exit_3_and_commits_nothing_past_it():
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, values(6))
    cluster.chunk = 3  # two consumes, two writes
    calls = []

    def down_after_first(sink, batches):
        calls.append(batches)
        if len(calls) > 1:
            raise RetryableError("connection refused")

    result, _, _ = run(fake_spec(sink_config={"hook": down_after_first}), cluster, store, until_caught_up=True)
    assert result.exit_code == 3, result.reason
    assert "connection refused" in result.reason
    assert cluster.committed.get(("t", 0), 0) == store.durable[("t", 0)] == 3


def test_a_stop_writes_and_commits_what_is_buffered():
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, values(5))
    cluster.at(3, "stop")
    result, runner, _ = run(fake_spec(max_records=100), cluster, store)
    assert result.exit_code == 0, result.reason
    assert store.rows[("t", 0)] == list(range(5)) and cluster.committed[("t", 0)] == 5
    assert runner.stop_requested == 1 and result.phase == "done"


def test_a_second_stop_drops_what_is_buffered():
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, values(5))
    cluster.at(3, "stop")
    cluster.at(3, "stop")
    result, _, _ = run(fake_spec(max_records=100), cluster, store)
    assert result.exit_code == 0, result.reason
    assert ("t", 0) not in store.rows and cluster.committed.get(("t", 0), 0) == 0


def test_sigterm_drains_like_a_stop():
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, values(5))
    cluster.at(3, lambda consumer: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    result, runner, _ = run(fake_spec(max_records=100), cluster, store)
    assert result.exit_code == 0, result.reason
    assert runner.stop_requested == 1
    assert store.rows[("t", 0)] == list(range(5)) and cluster.committed[("t", 0)] == 5
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


def test_a_message_error_is_logged_and_the_run_goes_on():
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, values(4))
    cluster.at(2, "error")
    result, _, _ = run(fake_spec(), cluster, store, until_caught_up=True)
    assert result.exit_code == 0, result.reason
    assert store.rows[("t", 0)] == list(range(4))


def test_the_fake_and_the_real_consumer_have_every_method_the_loop_uses():
    from confluent_kafka import Consumer

    from kpipe.runtime.consumer import ConsumerLike
    from kpipe.runtime.fakes import FakeConsumer

    names = [n for n in vars(ConsumerLike) if not n.startswith("_")]
    assert "consume" in names and "commit" in names
    for name in names:
        assert callable(getattr(Consumer, name, None)), name
        assert callable(getattr(FakeConsumer, name, None)), name

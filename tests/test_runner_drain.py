"""--until-caught-up, driven by a fake consumer (no broker): a small drain waits out no consume
timeout, the last batch of each partition ends at its target however the consume calls fell
(also when the broker's end-offset answer falls short, as Tansu's does), and the first consume
call is small while no value size is known."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpipe.runtime.fakes import FakeCluster, Store, fake_spec, recording_registry
from kpipe.runtime.retry import Backoff
from kpipe.runtime.drain import JOIN_POLL
from kpipe.runtime.runner import _COMMIT_POLL, Runner

FAST = Backoff(attempts=3, base=0.001, cap=0.001, max_elapsed=0.0)


def value(i: int, size: int = 30) -> bytes:
    return json.dumps({"i": i, "pad": "x" * max(0, size - 20)}).encode()


def drain(spec, cluster, store):
    runner = Runner(spec, consumer_factory=cluster.factory, plugins=recording_registry(store), backoff=FAST,
                    until_caught_up=True)
    return runner.run()


def boundaries(store) -> dict:
    """Per partition, the offset ranges of the writes, in order."""
    out: dict = {}
    for call in store.calls:
        for topic, p, start, end in call:
            out.setdefault((topic, p), []).append((start, end))
    return out


def model(n: int, max_records: int) -> list:
    """Batches of a partition of ``n`` records drained to ``n``: full batches, then the rest."""
    return [(lo, min(lo + max_records, n)) for lo in range(0, n, max_records)]


@pytest.mark.parametrize("size", [100, 1000, 100_000])
def test_a_small_drain_waits_out_no_consume_timeout(size):
    # A real consumer returns early only with as many messages as asked for: asking 10,000 of a
    # topic holding 8 waited out the loop's 1 s timeout once everything was read.
    cluster, store = FakeCluster({"t": 4}), Store()
    for p in range(4):
        cluster.produce("t", p, [value(i, size) for i in range(2)])
    result = drain(fake_spec(), cluster, store)
    assert result.exit_code == 0, result.reason
    assert store.rows == {("t", p): [0, 1] for p in range(4)}
    # At most: the short wait of the call the assignment arrives in, and the commit's answer.
    waits = cluster.consumers[0].waits
    assert sum(waits) <= JOIN_POLL + 2 * _COMMIT_POLL, waits


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=st.lists(st.integers(0, 30), min_size=1, max_size=3), max_records=st.integers(1, 8),
       chunk=st.none() | st.integers(1, 12), short=st.lists(st.floats(0, 1), min_size=3, max_size=3))
def test_the_last_batch_ends_at_the_end_whatever_the_chunks_and_a_short_end_answer(counts, max_records, chunk,
                                                                                    short):
    cluster, store = FakeCluster({"t": len(counts)}), Store()
    for p, n in enumerate(counts):
        cluster.produce("t", p, [value(i) for i in range(n)])
        # Tansu answers the end of a partition as its last batch's base offset + 1: short of it
        cluster.listed_ends[("t", p)] = min(n, 1 + int(short[p] * n))
    cluster.chunk = chunk
    result = drain(fake_spec(max_records=max_records), cluster, store)
    assert result.exit_code == 0, result.reason
    assert boundaries(store) == {("t", p): model(n, max_records) for p, n in enumerate(counts) if n}
    assert cluster.committed == {("t", p): n for p, n in enumerate(counts)}


@pytest.mark.parametrize("chunk", [None, 1, 4, 5, 11])
def test_records_produced_after_the_start_never_share_a_batch_with_the_last_ones_before_it(chunk):
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, [value(i) for i in range(10)])
    cluster.at(2, lambda consumer: cluster.produce("t", 0, [value(i) for i in range(10, 20)]))
    cluster.chunk = chunk
    result = drain(fake_spec(max_records=3), cluster, store)
    assert result.exit_code == 0, result.reason
    got = boundaries(store)[("t", 0)]
    assert got[:4] == [(0, 3), (3, 6), (6, 9), (9, 10)], got  # the end seen at the start: 10
    assert cluster.committed[("t", 0)] == store.durable[("t", 0)] >= 10


def test_the_first_consume_call_is_small_and_the_next_ones_grow():
    # Before any value is seen its size is unknown: 10,000 values of 1 MB would be 10 GB.
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, [value(i, 100) for i in range(5000)])
    asked: list = []

    def factory(conf):
        consumer = cluster.factory(conf)
        consume = consumer.consume

        def watched(num_messages=1, timeout=-1):
            asked.append(num_messages)
            return consume(num_messages, timeout)
        consumer.consume = watched
        return consumer

    spec = fake_spec(max_records=1000)
    result = Runner(spec, consumer_factory=factory, plugins=recording_registry(store), backoff=FAST,
                    until_caught_up=True).run()
    assert result.exit_code == 0, result.reason
    assert store.rows[("t", 0)] == list(range(5000))
    # At the largest value a broker sends by default (message.max.bytes, 1 MB), the first call
    # holds at most half of batch.max_buffered_bytes; once sizes are known, calls grow.
    assert asked[0] * 1_000_000 <= spec.max_buffered_bytes // 2, asked
    assert max(asked) >= 1000, asked


# -- the Drain alone ----------------------------------------------------------------------------

def _drain(cluster, positions: dict):
    from kpipe.runtime.buffer import PartitionBuffer
    from kpipe.runtime.drain import Drain

    buffers = {tp: PartitionBuffer(tp[0], tp[1], pos) for tp, pos in positions.items()}
    d = Drain({}, buffers, book=None, commits=None, retry=lambda what, fn: fn(), stored_positions=dict)
    d.consumer = cluster.factory({})
    return d, buffers


def test_the_drain_asks_for_what_is_left_and_waits_briefly_before_any_assignment():
    cluster = FakeCluster({"t": 2})
    cluster.produce("t", 0, [value(i) for i in range(10)])
    cluster.produce("t", 1, [value(i) for i in range(4)])
    d, buffers = _drain(cluster, {("t", 0): 3, ("t", 1): 4})
    d.snapshot([("t", 0), ("t", 1)])
    assert d.targets == {("t", 0): 10, ("t", 1): 4}
    assert d.ask(10_000, 1.0) == (7, 1.0) and d.left_to_read() == 7
    assert not d.all_read()
    buffers[("t", 0)].start = buffers[("t", 0)].position = 10  # read and handed to the Writer
    assert d.all_read() and d.ask(10_000, 1.0) == (1, 1.0)
    buffers.clear()  # nothing assigned (yet, or after an eager revoke)
    assert d.ask(33, 1.0) == (33, JOIN_POLL)


def test_a_short_end_is_raised_once_to_what_the_first_fetch_reports():
    cluster = FakeCluster({"t": 1})
    cluster.produce("t", 0, [value(i) for i in range(10)])
    cluster.listed_ends[("t", 0)] = 4  # Tansu: the last batch's base offset + 1
    d, _ = _drain(cluster, {("t", 0): 0})
    d.snapshot([("t", 0)])
    assert d.end(("t", 0)) == 4
    d.learn_end(("t", 0))
    assert d.end(("t", 0)) == 10
    cluster.produce("t", 0, [value(i) for i in range(10, 15)])  # produced after: not this run's
    d.learn_end(("t", 0))
    assert d.end(("t", 0)) == 10

"""Bounded memory, driven by a fake consumer: consume calls sized by bytes, partitions paused
while the records held exceed ``batch.max_buffered_bytes`` and resumed as writes complete, and
buffers written early when nothing being written would free memory.

The bound is checked against a model outside kpipe: at every consume call, the raw bytes of the
records handed out by the consumer and not yet durable in the sink. kpipe's own estimate is
never asked."""
from __future__ import annotations

import json
import threading
import time

from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpipe.api import Capabilities
from kpipe.runtime.backpressure import MemoryBound
from kpipe.runtime.buffer import PartitionBuffer
from kpipe.runtime.consumer import consumer_config, prefetch_bounds
from kpipe.runtime.fakes import FakeCluster, Store, fake_spec, recording_registry
from kpipe.runtime.memory import Backpressure, SizeEstimate, deep_size
from kpipe.runtime.retry import Backoff
from kpipe.runtime.runner import Runner

FAST = Backoff(attempts=3, base=0.001, cap=0.001, max_elapsed=0.0)


def value(i: int, size: int) -> bytes:
    return json.dumps({"i": i, "pad": "x" * max(0, size - 20)}).encode()


class Watch:
    """Wraps the fake consumer's ``consume``: before each call, the raw bytes of the records
    handed out and not yet durable (``peak``), and every count asked for.

    The first call that hands out records hands out one: the runner knows no value size before
    it, and asks for its usual 10,000 (bounded, with a broker, by librdkafka's prefetch)."""

    def __init__(self, cluster: FakeCluster, store: Store):
        self.cluster, self.store = cluster, store
        self.peak = 0
        self.asked: list = []
        self.handed: list = []  # raw bytes each call handed out
        self.first = True

    def factory(self, conf):
        consumer = self.cluster.factory(conf)
        consume = consumer.consume

        def watched(num_messages=1, timeout=-1):
            self.peak = max(self.peak, self.held(consumer))
            self.asked.append(num_messages)
            out = consume(1 if self.first else num_messages, timeout)
            self.first = self.first and not out
            self.handed.append(sum(len(m.value() or b"") for m in out if m.error() is None))
            return out

        consumer.consume = watched
        return consumer

    def held(self, consumer) -> int:
        with self.store.lock:
            durable = dict(self.store.durable)
        return sum(len(m.value() or b"")
                   for tp, pos in consumer.assignment.items()
                   for m in self.cluster.logs[tp][durable.get(tp, 0):pos])


def run(spec, cluster, store, caps=Capabilities(), pause_after: float = 0.0, **kw):
    """``pause_after`` 0: pause at once over the bound instead of waiting for a write first."""
    watch = Watch(cluster, store)
    runner = Runner(spec, consumer_factory=watch.factory, plugins=recording_registry(store, caps),
                    backoff=FAST, until_caught_up=True, **kw)
    runner.memory.pause_after = pause_after
    return runner, runner.run(), watch


def slow(seconds: float):
    def hook(sink, batches):
        time.sleep(seconds)
    return hook


def test_a_slow_sink_pauses_consuming_and_memory_stays_bounded():
    cluster, store = FakeCluster({"t": 2}), Store()
    for p in range(2):
        cluster.produce("t", p, [value(i, 1000) for i in range(600)])  # 1.2 MB in all
    limit = 64 << 10
    spec = fake_spec(max_records=20, max_buffered_bytes=limit, sink_config={"hook": slow(0.002)})
    runner, result, watch = run(spec, cluster, store)
    assert result.exit_code == 0, result.reason
    assert store.rows == {("t", p): list(range(600)) for p in range(2)}
    assert cluster.committed == {("t", 0): 600, ("t", 1): 600}
    # The raw bytes alone stay within the bound (the estimate counts decoded values on top).
    assert watch.peak <= limit, (watch.peak, limit)
    kinds = [k for k, _ in cluster.consumers[0].pauses]
    assert "pause" in kinds and "resume" in kinds
    assert not runner.memory.pressure.paused


def test_a_sink_that_keeps_up_is_waited_for_not_paused():
    # Writes that complete within pause_after free memory without a pause (a pause makes
    # librdkafka fetch again what it had prefetched).
    cluster, store = FakeCluster({"t": 2}), Store()
    for p in range(2):
        cluster.produce("t", p, [value(i, 1000) for i in range(300)])
    limit = 32 << 10
    spec = fake_spec(max_records=10, max_buffered_bytes=limit, sink_config={"hook": slow(0.001)})
    runner, result, watch = run(spec, cluster, store, pause_after=30.0)
    assert result.exit_code == 0, result.reason
    assert store.rows == {("t", p): list(range(300)) for p in range(2)}
    assert watch.peak <= limit
    assert cluster.consumers[0].pauses == []


def test_a_large_first_chunk_is_decoded_within_the_bound_and_every_record_written():
    # Before any value size is known the runner asks for 10,000 messages (a broker that hands
    # over a whole backlog gives them): batches are written, and waited for, between slices.
    cluster, store = FakeCluster({"t": 2}), Store()
    for p in range(2):
        cluster.produce("t", p, [value(i, 1000) for i in range(400)])
    limit = 32 << 10
    seen: list = []  # records through the stages when each write began

    def hook(sink, batches):
        seen.append(runner.result.consumed)
        time.sleep(0.001)

    spec = fake_spec(max_records=10, max_buffered_bytes=limit, sink_config={"hook": hook})
    runner = Runner(spec, consumer_factory=cluster.factory, plugins=recording_registry(store),
                    backoff=FAST, until_caught_up=True)
    result = runner.run()
    assert result.exit_code == 0, result.reason
    assert store.rows == {("t", p): list(range(400)) for p in range(2)}
    assert cluster.committed == {("t", 0): 400, ("t", 1): 400}
    # The chunk of 800 was written as it was decoded, about 13 records (32 KiB) at a time.
    assert cluster.consumers[0].pauses == [] and seen[0] < 100 and len(seen) > 5, seen


def test_consume_calls_are_sized_by_bytes():
    cluster, store = FakeCluster({"t": 1}), Store()
    cluster.produce("t", 0, [value(i, 100_000) for i in range(60)])  # 6 MB of 100 KB values
    limit = 4 << 20
    runner, result, watch = run(fake_spec(max_records=5, max_buffered_bytes=limit), cluster, store)
    assert result.exit_code == 0, result.reason
    assert store.rows == {("t", 0): list(range(60))}
    # No call hands out more than an eighth of the bound in raw bytes (one value at least).
    assert max(watch.handed) <= max(limit // 8, 100_100), watch.handed
    assert watch.peak <= limit


def test_with_nothing_being_written_the_largest_buffers_are_written_early():
    # No batch ever fills (max_records, max_bytes, max_age all far away): without an early
    # write, a paused consumer would wait for a write that never comes.
    cluster, store = FakeCluster({"t": 3}), Store()
    for p in range(3):
        cluster.produce("t", p, [value(i, 500) for i in range(300)])
    limit = 32 << 10
    spec = fake_spec(max_records=1_000_000, max_bytes=1 << 30, max_age=3600.0, max_buffered_bytes=limit)
    runner, result, watch = run(spec, cluster, store)
    assert result.exit_code == 0, result.reason
    assert store.rows == {("t", p): list(range(300)) for p in range(3)}
    assert watch.peak <= limit
    assert len(store.calls) > 3  # written in pieces, not one batch per partition at the end


def test_a_revoke_while_paused_forgets_the_pause_and_the_new_assignment_is_bounded_too():
    cluster, store = FakeCluster({"t": 2}), Store()
    for p in range(2):
        cluster.produce("t", p, [value(i, 1000) for i in range(300)])
    limit = 32 << 10
    cluster.at(6, "revoke")
    cluster.at(7, "assign")
    spec = fake_spec(max_records=10, max_buffered_bytes=limit, sink_config={"hook": slow(0.002)})
    runner, result, watch = run(spec, cluster, store)
    assert result.exit_code == 0, result.reason
    assert store.rows == {("t", p): list(range(300)) for p in range(2)}
    assert watch.peak <= limit
    consumer = cluster.consumers[0]
    assert not consumer.paused and not runner.memory.pressure.paused


def test_writes_in_flight_count_toward_the_bound():
    # Two writes at once, each blocked until the loop has seen the bound: the records in them
    # are still held, so the loop pauses instead of reading on.
    cluster, store = FakeCluster({"t": 2}), Store()
    for p in range(2):
        cluster.produce("t", p, [value(i, 1000) for i in range(200)])
    limit = 24 << 10
    gate = threading.Semaphore(0)
    released = threading.Event()

    def hook(sink, batches):
        if not released.is_set():
            gate.acquire(timeout=5)

    def on_pause(consumer):
        if consumer.paused:
            released.set()
            gate.release()
            gate.release()

    spec = fake_spec(max_records=10, max_buffered_bytes=limit, sink_config={"hook": hook})
    watch = Watch(cluster, store)
    factory = watch.factory

    def factory_with_check(conf):
        consumer = factory(conf)
        inner = consumer.consume

        def consume(n=1, timeout=-1):
            on_pause(consumer)
            return inner(n, timeout)
        consumer.consume = consume
        return consumer

    runner = Runner(spec, consumer_factory=factory_with_check,
                    plugins=recording_registry(store, Capabilities(max_in_flight=2)), backoff=FAST,
                    until_caught_up=True)
    runner.memory.pause_after = 0.0
    result = runner.run()
    assert result.exit_code == 0, result.reason
    assert store.rows == {("t", p): list(range(200)) for p in range(2)}
    assert watch.peak <= limit


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=120), parts=st.integers(1, 3),
       limit=st.integers(8 << 10, 64 << 10), max_records=st.integers(1, 50), in_flight=st.integers(1, 2))
def test_every_record_is_written_once_in_order_and_the_bound_holds(sizes, parts, limit, max_records, in_flight):
    cluster, store = FakeCluster({"t": parts}), Store()
    for p in range(parts):
        cluster.produce("t", p, [value(i, s) for i, s in enumerate(sizes)])
    spec = fake_spec(max_records=max_records, max_buffered_bytes=limit)
    runner, result, watch = run(spec, cluster, store, Capabilities(max_in_flight=in_flight))
    assert result.exit_code == 0, result.reason
    assert store.rows == {("t", p): list(range(len(sizes))) for p in range(parts)}
    # Over the bound by at most one value: a value larger than the bound is still consumed.
    assert watch.peak <= limit + max(len(value(0, s)) for s in sizes)


# -- the parts alone --------------------------------------------------------------------------

def test_backpressure_pauses_over_the_limit_and_resumes_at_half():
    bp = Backpressure(100)
    assert bp.to_pause(100, ["a", "b"]) == []          # at the limit: fine
    assert bp.to_pause(101, ["a", "b"]) == ["a", "b"]
    assert bp.to_pause(101, ["a", "b", "c"]) == ["c"]  # assigned while paused: paused too
    assert bp.to_resume(51) == []
    assert bp.to_resume(50) == ["a", "b", "c"] and not bp.paused
    bp.to_pause(200, ["a"])
    bp.forget(["a"])
    assert bp.to_resume(0) == []


class Idle:
    """A Writer with nothing in flight: only an early write can free memory."""
    in_flight = 0
    held = 0


@settings(max_examples=100, deadline=None)
@given(contents=st.lists(st.lists(st.integers(1, 3000), max_size=20), min_size=1, max_size=6),
       limit=st.integers(1 << 10, 64 << 10))
def test_with_nothing_in_flight_the_largest_buffers_are_written_whole_until_half_the_bound(contents, limit):
    buffers = {}
    for p, sizes in enumerate(contents):
        buf = buffers[("t", p)] = PartitionBuffer("t", p, 0)
        if sizes:
            msgs = [Message(topic="t", partition=p, offset=i, value=b"x" * n) for i, n in enumerate(sizes)]
            buf.add(msgs, [None] * len(sizes), sizes, 0.0)
    written: list = []
    memory = MemoryBound(limit, buffers, write=written.extend, settle_one=set)
    memory.writer = Idle()
    price = {tp: memory.sizes.held(len(b.msgs), b.nbytes) for tp, b in buffers.items()}
    over = sum(price.values()) > limit
    memory.make_room([])
    # The model: largest first (raw bytes), each whole, until what stays is within half the bound.
    expected, left = [], sum(price.values())
    if over:
        for tp in sorted(buffers, key=lambda tp: -sum(contents[tp[1]])):
            if left <= limit // 2:
                break
            left -= price[tp]
            if contents[tp[1]]:
                expected.append(tp)
    assert [(b.topic, b.partition) for b in written] == expected
    for b in written:
        assert (b.start_offset, b.next_offset, len(b)) == (0, len(contents[b.partition]), len(contents[b.partition]))
    assert memory.held() == left
    assert memory.held() <= limit


def test_the_estimate_follows_the_decoded_size():
    est = SizeEstimate()
    raw = json.dumps({"items": [{"sku": f"s{i}", "qty": i} for i in range(200)]}).encode()
    decoded = json.loads(raw)
    est.observe(len(raw), [decoded], [len(raw)])
    # Small objects: the decoded value costs several times its bytes, and the estimate says so.
    assert est.held(1, len(raw)) >= deep_size(decoded) + len(raw)
    assert deep_size(decoded) > 4 * len(raw)


def test_prefetch_is_bounded_from_the_setting_and_the_spec_options_win():
    spec = fake_spec(max_buffered_bytes=64 << 20)
    conf = consumer_config(spec)
    assert conf["queued.max.messages.kbytes"] == 16 << 10
    assert conf["fetch.max.bytes"] == 16 << 20
    assert conf["max.partition.fetch.bytes"] == 1 << 20
    # Small values: a message count bounds the queue too, at 1 KiB a message (16 MiB / 1 KiB).
    assert conf["queued.min.messages"] == 16 << 10
    tiny = prefetch_bounds(fake_spec(max_buffered_bytes=1 << 20))
    assert tiny["fetch.max.bytes"] == 1_000_000  # librdkafka's floor: message.max.bytes
    assert tiny["max.partition.fetch.bytes"] == 1_000_000
    assert tiny["queued.min.messages"] == 1000  # a floor, so that fetches stay batched
    assert prefetch_bounds(fake_spec(max_buffered_bytes=1 << 40))["queued.min.messages"] == 100_000  # librdkafka's default
    mine = {"queued.max.messages.kbytes": 1000, "fetch.max.bytes": 123_456_789, "fetch.message.max.bytes": 5000,
            "queued.min.messages": 7}
    conf = consumer_config(fake_spec(options=mine))
    assert {k: conf[k] for k in mine} == mine and "max.partition.fetch.bytes" not in conf

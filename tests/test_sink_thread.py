"""The runner's side of the sink contract, seen from a sink: every call on one thread other
than the consumer's, never two at once, batches in offset order, a write overlapped with
consuming the next records, and commits only of what a finished write covered.

The sink here is a probe that records what it is given; the broker is real. It is put in place
of the spec's sink through the runner's plugin descriptor, the same object an entry point
yields.
"""
from __future__ import annotations

import threading
import time

import pytest

from conftest import write_spec
from kit import produce_events, seal_events, unique
from kpipe.api import Capabilities, Sink, SinkPlugin
from kpipe.runtime import Runner
from kpipe.spec import load_spec


class ProbeSink(Sink):
    """Records every call; each write takes ``delay`` seconds so the runner has time to read on."""

    instances: list = []

    def __init__(self, config, context):
        super().__init__(config, context)
        self.calls: list = []          # (method, thread ident)
        self.written: dict = {}        # (topic, partition) -> [(start, next)] in write order
        self.busy = threading.Lock()
        self.overlapping = 0           # calls that found another call still running
        self.runner: Runner | None = None
        self.consumed_during_writes = 0
        self.delay = 0.3
        ProbeSink.instances.append(self)

    def _enter(self, name):
        self.calls.append((name, threading.get_ident()))
        if not self.busy.acquire(blocking=False):
            self.overlapping += 1
            self.busy.acquire()

    def open(self):
        self._enter("open")
        self.busy.release()

    def write(self, batches):
        self._enter("write")
        try:
            before = self.runner.result.consumed
            time.sleep(self.delay)
            self.consumed_during_writes += self.runner.result.consumed - before
            for b in batches:
                self.written.setdefault((b.topic, b.partition), []).append((b.start_offset, b.next_offset))
        finally:
            self.busy.release()

    def revoke(self, partitions):
        self._enter("revoke")
        self.busy.release()

    def housekeep(self):
        self._enter("housekeep")
        self.busy.release()

    def close(self):
        self._enter("close")
        self.busy.release()


PROBE = SinkPlugin(name="probe", config_schema={"type": "object"},
                   factory=f"{__name__}:ProbeSink", capabilities=Capabilities())


@pytest.fixture(autouse=True)
def _fresh():
    ProbeSink.instances.clear()


def test_sink_calls_run_on_one_thread_overlapped_with_consuming(brokers, topic, tmp_path, monkeypatch):
    produce_events(brokers, topic, 20_000)
    produced = seal_events(brokers, topic, 20_000)
    spec = load_spec(write_spec(tmp_path, brokers, topic, tmp_path / "unused", name=unique("probe"),
                                max_records=500, max_age="60s"), env={})
    runner = Runner(spec, until_caught_up=True)
    runner.sink_plugin = PROBE
    runner.housekeep_every = 0.1
    opened = ProbeSink.open

    def open_seeing_runner(self):
        self.runner = runner
        opened(self)

    monkeypatch.setattr(ProbeSink, "open", open_seeing_runner)
    result = runner.run()

    assert result.exit_code == 0, result.reason
    (sink,) = ProbeSink.instances
    threads = {t for _, t in sink.calls}
    assert len(threads) == 1 and threading.get_ident() not in threads, sink.calls[:5]
    assert sink.calls[0][0] == "open" and sink.calls[-1][0] == "close"
    assert sink.overlapping == 0
    # Housekeeping came on the same thread, between writes (the loop turns once a second in the
    # ~3 s join, and between writes after it).
    assert sum(1 for name, _ in sink.calls if name == "housekeep") >= 2, sink.calls

    # Every partition's offsets were handed over once, contiguous, in order, up to its end,
    # and what the runner committed is exactly where the last finished write ended.
    assert sorted(sink.written) == [(topic, p) for p in range(4)]
    for tp, ranges in sink.written.items():
        assert ranges[0][0] == 0
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), (tp, ranges)
        assert result.partitions[tp] == ranges[-1][1]
    assert sum(r[-1][1] for r in sink.written.values()) == produced == result.written

    # Overlap: ~40 writes of 0.3 s each; a runner that read only between writes would have
    # consumed nothing while one ran.
    assert sink.consumed_during_writes > 0

    # The live figures watchers read agree with what the probe saw.
    assert result.phase == "done" and result.sink_ok
    assert result.batch_records.count == result.batches == sum(len(r) for r in sink.written.values())
    assert result.batch_records.sum == produced
    assert 0 < result.write_seconds.count <= result.batches and result.write_seconds.sum >= 0.3
    assert result.commit_seconds.count >= 1
    assert result.committed == result.partitions and not result.positions  # closing revoked them all
    assert all(result.ends[tp] == result.committed[tp] for tp in result.ends) and len(result.ends) == 4
    assert not result.rejected

"""Mirroring the OffsetBook's durable positions to the consumer group.

Commits are asynchronous: a synchronous commit to a coordinator that stopped answering blocks
the loop (and every other call on the consumer) for minutes. librdkafka answers them during
``consume``, in the order they were sent (``answered``). A commit only mirrors what the sink
made durable, so a failed one is tried again with the next, and a rebalance that refuses one
costs nothing: the partition's next owner resumes from the sink's durable position.
"""
from __future__ import annotations

import logging
import time
from collections import deque

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP

from kpipe.runtime.offsets import OffsetBook
from kpipe.runtime.retry import DependencyUnavailable

__all__ = ["GroupCommits", "REBALANCE_CODES"]

log = logging.getLogger("kpipe.run")

# librdkafka reports these when a commit races a rebalance: nothing was committed, and the
# partition's next owner will start from the last durable position. Not a reason to crash.
REBALANCE_CODES = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._NO_OFFSET,
    KafkaError._STATE,
}


class GroupCommits:
    def __init__(self, book: OffsetBook, result, brokers: str, stall_timeout: float):
        self.book = book
        self.result = result
        self.brokers = brokers
        self.stall_timeout = stall_timeout
        self.consumer = None  # set once it exists
        self.inflight: deque = deque()  # (sent at, perf counter) of unanswered commits, in order
        self.failing_since: float | None = None  # the first of the commits failing in a row
        self.answered_at = float("-inf")  # when the group last acknowledged a commit (monotonic)

    def commit(self, tps) -> None:
        """Send the durable positions of the held partitions among ``tps`` to the group."""
        offsets = [KafkaTP(t, p, o) for t, p, o in self.book.to_commit(tps)]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() in REBALANCE_CODES:
                log.info("commit not accepted during a rebalance (%s); the next owner resumes "
                         "from the sink's durable position", err.name())
                return
            log.warning("commit failed: %s; will retry with the next batch", err)
            self.book.pending.update((o.topic, o.partition) for o in offsets)
            self.failing_since = self.failing_since or time.monotonic()
            return
        self.inflight.append((time.monotonic(), time.perf_counter()))

    def answered(self, err, partitions) -> None:
        """librdkafka's answer to one ``commit`` (its ``on_commit`` callback)."""
        sent, started = self.inflight.popleft() if self.inflight else (time.monotonic(), None)
        if started is not None:
            self.result.commit_seconds.observe(time.perf_counter() - started)
        if err is not None and err.code() in REBALANCE_CODES:
            log.info("commit not accepted during a rebalance (%s); the next owner resumes "
                     "from the sink's durable position", err.name())
            return
        if err is not None:
            log.warning("commit failed: %s; will retry with the next batch", err.str())
        failed = err is not None
        for o in partitions or ():
            tp = (o.topic, o.partition)
            if err is None and o.error is None:
                self.book.committed_at(tp, o.offset)
                continue
            failed = True
            if err is None:
                log.warning("commit %s[%d]@%d failed: %s", o.topic, o.partition, o.offset, o.error)
            self.book.commit_failed(tp, o.offset)
        self.failing_since = (self.failing_since or sent) if failed else None
        if not failed:
            self.answered_at = time.monotonic()

    def await_answers(self, poll, timeout: float, give_up) -> None:
        """Before closing: ``poll()`` until the commits in flight are answered, at most
        ``timeout`` seconds, or until ``give_up()``."""
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline and not give_up():
            poll()

    def check(self, now: float) -> None:
        """Exit 3 when commits have failed or gone unanswered for ``stall_timeout`` in a row: the
        group coordinator is unreachable or silent (a fetch from a silent broker just returns
        nothing, so the commits are what notice it)."""
        since = self.failing_since
        if self.inflight:
            oldest = self.inflight[0][0]
            since = oldest if since is None else min(since, oldest)
        if since is not None and now - since > self.stall_timeout:
            raise DependencyUnavailable(
                f"Kafka: no commit acknowledged by the brokers at {self.brokers} for {now - since:.0f}s "
                f"(retry.attempt_timeout {self.stall_timeout:g}s); nothing past the sink's stored position "
                "is lost: the next run resumes from it")

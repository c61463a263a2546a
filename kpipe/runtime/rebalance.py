"""The group's assignment, as the consumer loop sees it.

librdkafka runs the rebalance callbacks inside ``consume``. On an assignment each partition
starts where the sink (or else the group) holds it durably; on a revoke the write in flight is
settled and committed while the partitions are still ours, and what is buffered is dropped (the
next owner reads it again from the durable position); a lost partition is dropped the same way,
without the commit. An error inside a callback would be swallowed by librdkafka: it is kept in
``error`` for the loop to raise.

The same object watches for an assignment that never comes (a wedged group, or partitions
that never come back after a rebalance): exit 3 past ``source.assignment_timeout``.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from confluent_kafka import KafkaException, TopicPartition

from kpipe.runtime.buffer import PartitionBuffer
from kpipe.runtime.offsets import start_position
from kpipe.runtime.retry import DependencyUnavailable

__all__ = ["Rebalance"]

log = logging.getLogger("kpipe.run")


class Rebalance:
    def __init__(self, spec, *, buffers: dict, book, result, commits, pressure, settle: Callable[[], None],
                 stored_positions: Callable[[list], dict], drain=None, on_assigned: Callable[[], None] = lambda: None):
        """``buffers`` (the loop's, per partition), ``book``, ``commits`` and ``pressure`` are
        the loop's own; ``settle`` settles every write in flight; ``stored_positions`` says
        where the pipeline stands on partitions; ``drain`` (--until-caught-up) learns the
        targets of partitions it has none for; ``on_assigned`` runs after each assignment."""
        self.spec = spec
        self.buffers = buffers
        self.book = book
        self.result = result
        self.commits = commits
        self.pressure = pressure
        self.settle = settle
        self.stored_positions = stored_positions
        self.drain = drain
        self.on_assigned = on_assigned
        self.consumer = None  # set once it exists
        self.writer = None    # likewise: the sink is told of revoked partitions through it
        # The Python client cannot report the negotiated protocol; the strategy decides it.
        self.cooperative = "cooperative" in str(spec.options.get("partition.assignment.strategy", ""))
        self.assigned_once = False
        self.rebalancing = False  # an eager revoke took everything; the next assignment is awaited
        self.unassigned_since: float | None = None  # in the group, waiting for an assignment
        self._warned = False
        self.error: BaseException | None = None  # raised in a callback (or the client's error_cb)

    def joining(self, consumer) -> None:
        """``consumer`` subscribes now: the wait for the first assignment starts."""
        self.consumer = consumer
        self.unassigned_since = time.monotonic()

    @property
    def steady(self) -> bool:
        """The group has assigned partitions, and no eager rebalance is under way."""
        return self.assigned_once and not self.rebalancing

    # -- the callbacks (run inside consume) ------------------------------------------------

    def _settle_in_callback(self) -> None:
        """Settle the write in flight before the assignment changes; a failure it raises is
        surfaced from the loop (raising inside a callback would be swallowed)."""
        try:
            self.settle()
        except BaseException as exc:
            self.error = self.error or exc

    def on_assign(self, consumer, partitions) -> None:
        self._settle_in_callback()
        if self.error is not None:
            return  # the loop raises it; assigning now would only load offsets for nothing
        try:
            self._assign(consumer, partitions)
        except BaseException as exc:
            self.error = exc

    def _assign(self, consumer, partitions) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        starts = self.stored_positions(tps)
        for tp in tps:
            if tp not in starts:
                low, high = consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10, cached=False)
                starts[tp] = start_position(None, low, high, self.spec.start)
            if self.drain is not None:
                self.drain.add(tp)
        for p in partitions:
            tp = (p.topic, p.partition)
            p.offset = starts[tp]
            self.buffers[tp] = PartitionBuffer(p.topic, p.partition, p.offset)
            self.book.assign(tp, p.offset)
        if self.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self.assigned_once = True
        self.rebalancing = False
        self.unassigned_since = None
        self._warned = False
        self.result.assigned = frozenset(self.buffers)
        self.on_assigned()
        if tps:
            log.info("assigned %s", ", ".join(f"{t}[{p}]@{starts[(t, p)]}" for t, p in sorted(tps)))

    def on_revoke(self, consumer, partitions) -> None:
        # A write in flight may cover these partitions: let it finish and commit it while
        # they are still ours, so the next owner starts after it.
        self._settle_in_callback()
        try:
            tps = [(p.topic, p.partition) for p in partitions]
            # Buffered records are dropped, not written: the next owner reads them again from
            # the last durable position. Mirror that position for lag tools while we still can.
            self.commits.commit([tp for tp in tps if tp in self.book])
            self._drop(tps)
            self.rebalancing = not self.cooperative
            if not self.cooperative:  # everything is revoked: wait for the next assignment
                self.unassigned_since = time.monotonic()
            if self.cooperative:
                consumer.incremental_unassign(partitions)
            if tps:
                log.info("revoked %s", ", ".join(f"{t}[{p}]" for t, p in sorted(tps)))
        except BaseException as exc:
            self.error = exc

    def on_lost(self, consumer, partitions) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.warning("lost %s without a clean revoke; dropping their buffers",
                    ", ".join(f"{t}[{p}]" for t, p in sorted(tps)))
        self._settle_in_callback()  # the sink must be idle before it is told to forget them
        self.unassigned_since = self.unassigned_since or time.monotonic()
        self._drop(tps)

    def _drop(self, tps) -> None:
        self.pressure.forget(tps)
        for tp in tps:
            self.buffers.pop(tp, None)
            self.book.drop(tp)
        self.result.assigned = frozenset(self.buffers)
        writer = self.writer
        if writer is not None and writer.sink is not None and not writer.abandoned:
            writer.call(writer.sink.revoke, tps)

    # -- an assignment that never comes ------------------------------------------------------

    def unassigned_for(self, now: float | None = None) -> float | None:
        """Seconds the consumer has been in its group without an assignment (None: it has one)."""
        since = self.unassigned_since
        return None if since is None else (time.monotonic() if now is None else now) - since

    def check(self, now: float) -> None:
        """Exit 3 when the group never assigns partitions (a wedged group), or never gives
        them back after a rebalance, within ``source.assignment_timeout``."""
        waited = self.unassigned_for(now)
        if waited is None:
            return
        spec = self.spec
        limit = spec.assignment_timeout
        if waited > limit:
            from kpipe.kafka_admin import describe_group

            what = "received no partitions" if not self.assigned_once else "got no partitions back after a rebalance"
            raise DependencyUnavailable(
                f"consumer group {spec.group!r} {what} within {limit:g}s (source.assignment_timeout); "
                f"we are member {self._member_id()}; the broker reports: "
                f"{describe_group(spec.brokers, spec.group, spec.options, timeout=3.0)}")
        if waited > limit / 2 and not self._warned:
            self._warned = True
            log.warning("consumer group %r: no partitions assigned for %.0fs; exit 3 at %gs "
                        "(source.assignment_timeout)", spec.group, waited, limit)

    def _member_id(self) -> str:
        try:
            return self.consumer.memberid() or "(none yet)"
        except (RuntimeError, KafkaException):
            return "(unknown)"

"""Keeping the records the loop holds within ``batch.max_buffered_bytes``.

The records held are those buffered per partition and those in the writes in flight, priced by
``SizeEstimate`` (kpipe.runtime.memory). Over the bound the loop first waits for a write to
free memory, then pauses every assigned partition (``Backpressure`` decides which, and when to
resume), and with nothing being written it writes the largest buffers early: nothing else would
free memory. Inside a consumed chunk pausing cannot help (the chunk is already read), so the
loop makes room before decoding more of it (``make_room``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaException, TopicPartition

from kpipe.runtime.memory import Backpressure, SizeEstimate

__all__ = ["PAUSE_AFTER", "MemoryBound"]

log = logging.getLogger("kpipe.run")

# Over batch.max_buffered_bytes with writes in flight: wait this long for one to complete before
# pausing. A pause makes librdkafka drop what it prefetched and fetch it again on resume, which
# cost a fast sink 5 x its throughput (measured); a sink slower than this is paused.
PAUSE_AFTER = 1.0


class MemoryBound:
    def __init__(self, limit: int, buffers: dict, *, write: Callable[[list], None],
                 settle_one: Callable[[], set]):
        """``limit`` is ``batch.max_buffered_bytes``; ``buffers`` are the loop's, per partition;
        ``write(batches)`` hands batches to the Writer and ``settle_one()`` settles the oldest
        write in flight: the loop's own, since they commit what becomes durable."""
        self.buffers = buffers
        self.write = write
        self.settle_one = settle_one
        self.sizes = SizeEstimate()
        self.pressure = Backpressure(limit)  # the partitions paused for memory
        self.pause_after = PAUSE_AFTER
        self.writer = None    # set once it exists
        self.consumer = None  # likewise

    def held(self) -> int:
        """Estimated bytes of the records held: buffered, and in the writes in flight."""
        held = self.sizes.held
        return sum(held(len(b.msgs), b.nbytes) for b in self.buffers.values()) + self.writer.held

    def held_in(self, batches: list) -> int:
        """Estimated bytes of the records in ``batches`` (cut, not yet handed to the Writer)."""
        held = self.sizes.held
        return sum(held(len(b.values), b.nbytes) for b in batches)

    def over(self, ready: list) -> bool:
        """Whether the records held, with the batches ``ready`` to be written, exceed the bound."""
        return self.pressure.over(self.held() + self.held_in(ready))

    def bound(self) -> None:
        """Between consume calls: over the bound, wait for the oldest write in flight
        (``pause_after`` at most), and pause every assigned partition when it takes longer;
        resume them at half of it. With nothing being written, nothing would free memory, so
        the largest buffers are written early (as ``max_age`` would)."""
        pressure, writer = self.pressure, self.writer
        held = self.held()
        while pressure.over(held) and not pressure.paused and writer.in_flight:
            if not writer.wait_oldest(self.pause_after):
                break  # a slow write: pause below, and keep polling the consumer meanwhile
            self.settle_one()
            held = self.held()
        if (pressure.over(held) or pressure.paused) and not writer.in_flight:
            early = self._cut_largest(held)
            if early:
                self.write(early)
            held = self.held()
        pause = pressure.to_pause(held, self.buffers)
        if pause:
            self._pause_resume("pause", pause, held)
        resume = pressure.to_resume(held)
        if resume:
            self._pause_resume("resume", resume, held)

    def make_room(self, ready: list) -> None:
        """Inside a consumed chunk, over the bound: write what is cut, and wait for writes (or
        write the largest buffers early) until the records held fit again, before decoding
        more of it."""
        if ready:
            cut = ready[:]  # the Writer keeps the list it is given: hand it a copy to keep
            ready.clear()
            self.write(cut)
        held = self.held()
        while self.pressure.over(held):
            if self.writer.in_flight:
                self.settle_one()
            else:
                early = self._cut_largest(held)
                if not early:
                    break
                self.write(early)
            held = self.held()

    def _cut_largest(self, held: int) -> list:
        """Batches of the largest buffers, whole, until what stays buffered is within half of
        the bound: written early, because nothing else would free memory."""
        early: list = []
        target = self.pressure.limit // 2
        for tp, buf in sorted(self.buffers.items(), key=lambda kv: -kv[1].nbytes):
            if held <= target:
                break
            held -= self.sizes.held(len(buf.msgs), buf.nbytes)
            buf.take_all(early)
        if early:
            log.debug("memory: over half of batch.max_buffered_bytes with nothing being written; "
                      "writing %d partitions early", len(early))
        return early

    def _pause_resume(self, what: str, tps: list, held: int) -> None:
        log.debug("memory: %d bytes held (batch.max_buffered_bytes %d): %s %s", held, self.pressure.limit,
                  what, ", ".join(f"{t}[{p}]" for t, p in sorted(tps)))
        try:
            getattr(self.consumer, what)([TopicPartition(*tp) for tp in tps])
        except KafkaException as exc:  # not assigned any more: a rebalance is under way
            log.debug("%s %s: %s", what, tps, exc)
            self.pressure.forget(tps)

"""--until-caught-up: the end offsets to reach, and whether the run has reached them.

A partition's target is its end offset at the start, raised once to the end its first fetch
reports (see ``learn_end``). The loop asks consume() for no more than is left to read, so a
small drain does not wait out the consume timeout; the buffers cut the last batch at the target
(``end``); and the run is done once every partition, ours and the other members', is durable
and committed up to its target.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from confluent_kafka import KafkaException, TopicPartition

from kpipe.api import RetryableError

__all__ = ["Drain", "JOIN_POLL"]

log = logging.getLogger("kpipe.run")

# No partition assigned yet: how long a consume call waits. The assignment arrives inside a
# call, which then waits for its count of messages: a long wait would be waited out whenever the
# topic holds fewer.
JOIN_POLL = 0.1


class Drain:
    def __init__(self, targets: dict, buffers: dict, book, commits, *, retry: Callable,
                 stored_positions: Callable[[list], dict]):
        """``targets`` is filled here (the run's result shows it); ``buffers``, ``book`` and
        ``commits`` are the loop's own; ``retry(what, fn)`` retries a broker request;
        ``stored_positions`` says where the pipeline stands on partitions other members hold."""
        self.targets = targets
        self.buffers = buffers
        self.book = book
        self.commits = commits
        self.retry = retry
        self.stored_positions = stored_positions
        self.consumer = None  # set once it exists
        self._fetched_ends: set = set()  # partitions whose target was checked against a fetch
        self._next_group_check = 0.0
        self._next_waiting_log = 0.0

    # -- the targets -------------------------------------------------------------------------

    def snapshot(self, partitions: list) -> None:
        """Record the end offset of every partition of the source topics, once, at start."""
        for tp in partitions:
            self.targets[tp] = self.high_watermark(tp)

    def add(self, tp) -> None:
        """A partition assigned that had no target (the topic grew partitions): its end now."""
        if tp not in self.targets:
            self.targets[tp] = self.high_watermark(tp)

    def high_watermark(self, tp) -> int:
        def fetch():
            try:
                return self.consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10, cached=False)[1]
            except KafkaException as exc:
                raise RetryableError(f"end offset of {tp[0]}[{tp[1]}]: {exc.args[0].str()}")
        return self.retry("reading end offsets", fetch)

    def learn_end(self, tp) -> None:
        """Once per partition, with its first messages: raise its target to the end offset its
        fetches reported. Tansu answers the end-offset request short of the last produced batch
        (its base offset + 1); a fetch response carries the true end, which for a topic nobody
        produces to is where the drain must end, so that every record is written and the last
        batch ends at the same offset however the consume calls fell."""
        if tp in self._fetched_ends:
            return
        try:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        except KafkaException:
            return
        if high >= 0:
            self._fetched_ends.add(tp)
            if high > self.targets.get(tp, 0):
                self.targets[tp] = high

    def end(self, tp) -> int | None:
        """The offset no batch of ``tp`` may cross."""
        return self.targets.get(tp)

    # -- reading -----------------------------------------------------------------------------

    def ask(self, count: int, wait: float) -> tuple[int, float]:
        """The next consume call's count and wait. consume() returns early only once it has
        ``count`` messages: asking for more than is left to read would wait out ``wait`` (1 s)
        at the end of every small drain."""
        if self.buffers:
            return min(count, max(1, self.left_to_read())), wait
        return count, min(wait, JOIN_POLL)

    def left_to_read(self) -> int:
        """Messages left to read up to the targets, over the partitions we hold."""
        targets = self.targets
        return sum(max(0, targets.get(tp, 0) - buf.position) for tp, buf in self.buffers.items())

    def all_read(self) -> bool:
        """Every partition we hold is read up to its target, and handed to the Writer up to it
        (records past it may stay buffered: they are not ours to write in this run)."""
        return all(buf.start >= self.targets.get(tp, 0) for tp, buf in self.buffers.items())

    # -- done --------------------------------------------------------------------------------

    def caught_up(self, steady: bool) -> bool:
        """Our partitions are written and committed up to their targets, and so are the
        partitions other members hold: exit 0 means the topic was drained, not our share of
        it. A member that died holding partitions keeps us waiting until the group hands
        them to us, instead of leaving them unwritten behind a success code. ``steady``: the
        group has assigned partitions and no rebalance is under way."""
        if not steady or self.commits.inflight:
            return False
        if not all(self.book.settled(tp, self.targets.get(tp, 0)) for tp in self.buffers):
            return False
        others = [tp for tp, target in self.targets.items() if tp not in self.buffers and target > 0]
        if not others:
            return True
        now = time.monotonic()
        if now < self._next_group_check:
            return False
        self._next_group_check = now + 1.0  # a query, not a lookup: once a second is plenty
        try:
            positions = self.stored_positions(others)
        except KafkaException as exc:  # not known now is not caught up; ask again in a second
            log.debug("reading committed offsets: %s", exc)
            return False
        behind = [tp for tp in others if positions.get(tp, -1) < self.targets[tp]]
        if behind:
            if now > self._next_waiting_log:
                self._next_waiting_log = now + 30
                log.info("our partitions are caught up; waiting for %s, held by other members",
                         ", ".join(f"{t}[{p}]" for t, p in sorted(behind)))
            return False
        return True

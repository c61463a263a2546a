"""What the records the runner holds cost in memory: an honest estimate, and the bound on it.

A buffered record keeps its ``Message`` (the raw value inside) and its decoded value. A
decoded JSON object costs several times its raw bytes (7 to 10 x, measured), so a bound on raw
bytes alone understates memory by that much. ``SizeEstimate`` measures the deep size of one
decoded value now and then and keeps the ratio to its raw size; ``held`` then prices any number
of records from their count and raw bytes, without touching them.

``Backpressure`` decides, from that estimate, which partitions to pause and when to resume
them: consuming stops while the records held (buffered, and in writes in flight) exceed
``batch.max_buffered_bytes``, and starts again once they fall to half of it, as Kafka Connect's
worker pauses its consumer while a task cannot take more and Quix Streams' PausingManager does
for a sink's backpressure. The consumer keeps being polled meanwhile, so the group membership,
rebalances and commit answers go on.
"""
from __future__ import annotations

import sys

__all__ = ["SizeEstimate", "Backpressure", "deep_size", "MESSAGE_OVERHEAD"]

# Bytes a held record costs besides its value bytes and decoded value: the Message object, the
# bytes object's header, its slots in the buffer's lists (measured with sys.getsizeof, rounded up).
MESSAGE_OVERHEAD = 256
# Measure a decoded value once per this many raw bytes consumed (and the first one): a deep size
# walks every object of the value, so it is kept well under 1 % of the decoding time.
SAMPLE_EVERY_BYTES = 4 << 20
_CONTAINERS = (dict, list, tuple, set, frozenset)


def deep_size(value, _limit: int = 100_000) -> int:
    """Bytes of ``value`` and everything it holds (``sys.getsizeof`` summed), each object counted
    once; past ``_limit`` objects the rest is extrapolated from the average so far."""
    seen: set = set()
    stack = [value]
    total = count = 0
    getsizeof = sys.getsizeof
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += getsizeof(obj)
        count += 1
        if count >= _limit:
            return total + len(stack) * (total // count)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, _CONTAINERS):
            stack.extend(obj)
    return total


class SizeEstimate:
    """Decoded bytes per raw byte, followed as records pass (an exponential moving average)."""

    def __init__(self, ratio: float = 8.0):
        self.ratio = ratio  # decoded bytes per raw value byte; 8 until measured (JSON's order)
        self._since = SAMPLE_EVERY_BYTES  # raw bytes since the last sample: sample the first
        self.samples = 0

    def observe(self, raw_bytes: int, values: list, sizes: list) -> None:
        """Records of ``raw_bytes`` were buffered as ``values`` (raw sizes ``sizes``): measure one
        of them when it is time."""
        self._since += raw_bytes
        if self._since < SAMPLE_EVERY_BYTES or not values:
            return
        i = len(values) // 2
        if values[i] is None or not sizes[i]:
            return  # a tombstone says nothing of the values' size; measure the next slice's
        self._since = 0
        ratio = deep_size(values[i]) / sizes[i]
        self.ratio = ratio if self.samples == 0 else 0.75 * self.ratio + 0.25 * ratio
        self.samples += 1

    def held(self, records: int, raw_bytes: int) -> int:
        """Estimated bytes ``records`` records of ``raw_bytes`` raw value bytes hold in memory."""
        return int(records * MESSAGE_OVERHEAD + raw_bytes * (1.0 + self.ratio))

    def per_record(self, raw_bytes: int, records: int) -> float:
        """Estimated bytes of one record, on average, for records like these."""
        return self.held(records, raw_bytes) / max(records, 1)


class Backpressure:
    """Which partitions are paused for memory, and whether more should be, or be resumed.

    ``limit`` is ``batch.max_buffered_bytes``; consuming resumes at ``limit // 2``, so that a
    pause is followed by a run of consuming, not one fetch.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.paused: set = set()
        self.pauses = 0  # times consuming was paused, for tests and logs

    def over(self, held: int) -> bool:
        return held > self.limit

    def to_pause(self, held: int, assigned) -> list:
        """The assigned partitions to pause now: every one not paused yet, once ``held`` is over
        the limit (a partition assigned while paused is paused too)."""
        if held <= self.limit and not self.paused:
            return []
        if held <= self.limit // 2:
            return []
        new = [tp for tp in assigned if tp not in self.paused]
        if new and not self.paused:
            self.pauses += 1
        self.paused.update(new)
        return new

    def to_resume(self, held: int) -> list:
        """The paused partitions to resume: all of them, once ``held`` fell to half the limit."""
        if not self.paused or held > self.limit // 2:
            return []
        out = sorted(self.paused)
        self.paused.clear()
        return out

    def forget(self, tps) -> None:
        """``tps`` left the assignment: librdkafka forgets their pause with them."""
        self.paused.difference_update(tps)

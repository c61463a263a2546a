"""Per-partition buffers that cut batches where the data says, not where the clock says.

Cuts by ``max_records`` and ``max_bytes`` fall at the same offsets whatever the consume chunk
sizes were, which is what makes a replay of the same offsets produce the same files.
"""
from __future__ import annotations

from bisect import bisect_left

from kpipe.api import Batch

__all__ = ["PartitionBuffer"]


def _offset(msg) -> int:
    return msg.offset()


class PartitionBuffer:
    """Records consumed from one partition and not yet handed to the sink.

    ``start`` is where the unflushed range begins (the durable position when empty);
    ``position`` is the next offset expected from the broker.
    """

    __slots__ = ("topic", "partition", "start", "position", "msgs", "values", "keys", "sizes", "nbytes",
                 "first_at")

    def __init__(self, topic: str, partition: int, position: int):
        self.topic = topic
        self.partition = partition
        self.start = position
        self.position = position
        self.msgs: list = []
        self.values: list = []
        self.keys: list | None = None  # deserialized keys, with a key deserializer
        self.sizes: list[int] = []  # raw value bytes per record, for max_bytes
        self.nbytes = 0
        self.first_at = 0.0

    def __len__(self) -> int:
        return len(self.msgs)

    def add(self, msgs: list, values: list, sizes: list, now: float, keys: list | None = None) -> None:
        if not self.msgs and self.position == self.start:
            self.first_at = now
        self.msgs += msgs
        self.values += values
        if keys is not None:
            if self.keys is None:
                self.keys = []
            self.keys += keys
        self.sizes += sizes
        self.nbytes += sum(sizes)
        self.position = msgs[-1].offset() + 1

    def skip_to(self, position: int, now: float) -> None:
        """Advance past offsets that produced no record (filtered, or dropped by policy).

        Such a range is flushed like records are (by age), so its offsets get committed even
        when nothing is written for it."""
        if position > self.position:
            if not self.msgs and self.position == self.start:
                self.first_at = now
            self.position = position

    def cut(self, max_records: int, max_bytes: int, out: list, end: int | None = None) -> None:
        """Move every full batch to ``out``.

        A batch is the longest prefix within both limits (at least one record). It is cut only
        once the buffer holds more than that prefix could grow to, so the cut point is a
        function of the records alone.

        No batch crosses ``end`` (the offset --until-caught-up drains to): once the buffer has
        read up to it, the records before it go as the last batch, ending at ``end``, however
        many records past it the same consume call brought.
        """
        if end is not None and self.start < end <= self.position:
            n = bisect_left(self.msgs, end, key=_offset)
            left = self._cut(max_records, max_bytes, out, n, sum(self.sizes[:n]))
            if self.start < end:  # a full batch may have ended there already
                out.append(self._take(left, end))
        self._cut(max_records, max_bytes, out, len(self.msgs), self.nbytes)

    def _cut(self, max_records: int, max_bytes: int, out: list, n: int, nbytes: int) -> int:
        """Cut full batches from the first ``n`` records (``nbytes`` raw bytes); how many are left."""
        while n and (n >= max_records or nbytes > max_bytes):
            if nbytes <= max_bytes:  # every prefix fits in bytes
                take = max_records
            else:
                take = total = 0
                for size in self.sizes[:max_records]:
                    if total + size > max_bytes:
                        break
                    take += 1
                    total += size
                take = max(take, 1)  # one record larger than max_bytes goes alone
            batch = self._take(take)
            out.append(batch)
            n -= take
            nbytes -= batch.nbytes
        return n

    def take_all(self, out: list) -> None:
        """Move everything buffered to ``out``, including a range that produced no records."""
        if self.msgs or self.position > self.start:
            out.append(self._take(len(self.msgs), self.position))

    def _take(self, n: int, next_offset: int | None = None) -> Batch:
        msgs, values = self.msgs[:n], self.values[:n]
        nbytes = sum(self.sizes[:n])
        del self.msgs[:n], self.values[:n], self.sizes[:n]
        keys = None
        if self.keys is not None:
            keys = self.keys[:n]
            del self.keys[:n]
        if next_offset is None:
            next_offset = msgs[-1].offset() + 1
        batch = Batch(self.topic, self.partition, self.start, next_offset, values, msgs, nbytes, keys)
        self.start = next_offset
        self.nbytes -= nbytes
        return batch

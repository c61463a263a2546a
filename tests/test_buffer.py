"""Batch boundaries depend on the data, never on how the consumer happened to chunk it."""
from __future__ import annotations

import random

import pytest

from kpipe.runtime.buffer import PartitionBuffer


class Msg:
    """The two accessors of confluent_kafka.Message that the buffer reads."""

    def __init__(self, offset: int, value: bytes):
        self._o, self._v = offset, value

    def offset(self):
        return self._o

    def value(self):
        return self._v


def feed(msgs, chunks, max_records, max_bytes):
    buf = PartitionBuffer("t", 0, msgs[0].offset())
    out, i = [], 0
    for size in chunks:
        part = msgs[i:i + size]
        i += size
        if part:
            buf.add(part, [m.value() for m in part], [len(m.value()) for m in part], now=0.0)
            buf.cut(max_records, max_bytes, out)
    buf.take_all(out)
    return [(b.start_offset, b.next_offset, len(b), b.nbytes) for b in out]


@pytest.mark.parametrize("seed", range(5))
def test_boundaries_do_not_depend_on_chunking(seed):
    rnd = random.Random(seed)
    msgs = [Msg(100 + i, b"x" * rnd.randint(1, 50)) for i in range(2000)]
    reference = feed(msgs, [len(msgs)], max_records=300, max_bytes=4000)
    chunks = []
    while sum(chunks) < len(msgs):
        chunks.append(rnd.randint(1, 400))
    assert feed(msgs, chunks, max_records=300, max_bytes=4000) == reference
    # contiguous, and each batch within both limits
    for (a, b, n, nbytes), (c, *_rest) in zip(reference, reference[1:]):
        assert b == c
    assert all(n <= 300 and nbytes <= 4000 for _, _, n, nbytes in reference)
    assert sum(n for _, _, n, _ in reference) == 2000


def test_max_records_cut_is_exact():
    msgs = [Msg(i, b"v") for i in range(25)]
    assert feed(msgs, [7, 7, 11], max_records=10, max_bytes=10**9) == [
        (0, 10, 10, 10), (10, 20, 10, 10), (20, 25, 5, 5)]


def test_range_covers_offset_gaps():
    # compacted topics and transaction markers leave gaps; ranges still tile the partition
    msgs = [Msg(o, b"v") for o in (5, 6, 9, 12)]
    buf = PartitionBuffer("t", 0, 3)
    buf.add(msgs, [1, 2, 3, 4], [1, 1, 1, 1], now=0.0)
    out = []
    buf.cut(2, 10**9, out)
    buf.take_all(out)
    assert [(b.start_offset, b.next_offset, b.values) for b in out] == [(3, 7, [1, 2]), (7, 13, [3, 4])]

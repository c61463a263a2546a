"""Helpers for tests of the file-writing code: batches built from real-looking messages, without
a broker."""
from __future__ import annotations

from kpipe.api import Batch


class Msg:
    """What a sink reads from a confluent_kafka.Message: offset, timestamp, key."""

    __slots__ = ("_offset", "_ts", "_key")

    def __init__(self, offset: int, ts: int | None = None, key: bytes | None = None):
        self._offset, self._ts, self._key = offset, ts, key

    def offset(self) -> int:
        return self._offset

    def timestamp(self):
        return (0, 0) if self._ts is None else (1, self._ts)

    def key(self):
        return self._key

    def headers(self):
        return None


def make_batch(values: list, start: int = 0, *, topic: str = "orders", partition: int = 0,
               timestamps: list | None = None, keys: list | None = None, offsets: list | None = None) -> Batch:
    """A batch of ``values`` at offsets ``start..`` (or ``offsets``), timestamps 2026-11-26 by default."""
    offsets = offsets if offsets is not None else list(range(start, start + len(values)))
    timestamps = timestamps if timestamps is not None else [1_795_000_000_000 + o for o in offsets]
    keys = keys if keys is not None else [None] * len(values)
    msgs = [Msg(o, t, k) for o, t, k in zip(offsets, timestamps, keys)]
    nxt = (offsets[-1] + 1) if offsets else start
    return Batch(topic, partition, offsets[0] if offsets else start, nxt, list(values), msgs)

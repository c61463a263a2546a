"""A write's records: the values to append (the last per key in upsert mode), where each came
from (for ``BadRecordError``), and the keys to delete first, each with its partition."""
from __future__ import annotations

from bisect import bisect_right

from kpipe.api import BadRecordError, Batch

__all__ = ["Rows"]


class Rows:
    def __init__(self, batches, *, key: list, upsert: bool, deletes: bool):
        self.key = key
        self.values: list = []
        self.deleted: list = []  # [(key tuple, (topic, partition))]
        self._starts: list[int] = []  # where each segment's values begin in ``values``
        self._segments: list = []  # (batch, its indices or None: all of them)
        self._last: dict = {}  # upsert: key -> (batch, index, value), the latest one
        for b in batches:
            if not upsert and all(type(v) is dict for v in b.values):  # the common case: one extend
                self._add(b, None, b.values)
            else:
                self._slow(b, upsert, deletes)
        for b, i, v in self._last.values():  # insertion order is offset order within a partition
            self._add(b, [i], [v])

    def _add(self, b: Batch, idx, values) -> None:
        self._starts.append(len(self.values))
        self._segments.append((b, idx))
        self.values.extend(values)

    def _slow(self, b: Batch, upsert: bool, deletes: bool) -> None:
        tp, idx, values = (b.topic, b.partition), [], []
        for i, v in enumerate(b.values):
            if v is None:
                if deletes:
                    k = self._tombstone_key(b, i)
                    self.deleted.append((k, tp))
                    self._last.pop(k, None)
                continue
            if type(v) is not dict:
                raise BadRecordError.in_batch("an iceberg row must be a JSON object (a record), got "
                                              f"{type(v).__name__}", b, i)
            if upsert:
                k = self._key_of(v, b, i)
                self.deleted.append((k, tp))
                self._last.pop(k, None)  # re-inserted last: the dict keeps the newest order
                self._last[k] = (b, i, v)
                continue
            idx.append(i)
            values.append(v)
        if idx:
            self._add(b, idx, values)

    def where(self, n: int) -> tuple:
        """The (batch, index in it) of ``values[n]``."""
        s = bisect_right(self._starts, n) - 1
        b, idx = self._segments[s]
        off = n - self._starts[s]
        return b, (off if idx is None else idx[off])

    def mask(self, keep: set) -> list:
        """One bool per value: is its partition in ``keep``."""
        out: list = []
        for s, (b, _) in enumerate(self._segments):
            end = self._starts[s + 1] if s + 1 < len(self._starts) else len(self.values)
            out += [(b.topic, b.partition) in keep] * (end - self._starts[s])
        return out

    def _key_of(self, v: dict, b: Batch, i: int) -> tuple:
        if any(v.get(k) is None for k in self.key):
            raise BadRecordError.in_batch(f"an upsert record needs its key column(s) {self.key}", b, i)
        return tuple(v[k] for k in self.key)

    def _tombstone_key(self, b: Batch, i: int) -> tuple:
        key = b.keys[i]
        if isinstance(key, dict) and all(k in key for k in self.key):
            return tuple(key[k] for k in self.key)
        if len(self.key) == 1 and key is not None and not isinstance(key, (dict, list)):
            return (key.decode() if isinstance(key, bytes) else key,)
        raise BadRecordError.in_batch(f"a tombstone's key must give the key column(s) {self.key} (an object, or a "
                                      f"plain value for a one-column key; set key_deserializer), got {key!r}", b, i)

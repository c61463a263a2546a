"""A batch's columns and the kinds of their values, worked out once per batch.

The sinks widen the dataset schema over a batch (``dataset.widen``) and then hand the same list
of values to the Parquet writer, which needs the same columns and kinds to choose pyarrow's own
conversion (in C) over checking value by value. ``widen`` leaves its ``Columns`` here
(``share``); the writer takes them (``take``), or works them out again for a list it was not
shared for. Taking removes the entry, so a second write of the list works them out afresh;
entries hold their list, so its id is not reused while they wait. The contract: nothing changes
the list between ``widen`` and the write (the sinks pass their batch's values list untouched).
"""
from __future__ import annotations

import threading
from itertools import chain, repeat

from .base import as_row

__all__ = ["Columns", "share", "take"]

_UNSET = object()
_KEEP = 16  # batches written in parallel (S3 partitions) wait here at once; older ones are dropped
_shared: dict = {}
_lock = threading.Lock()


class Columns:
    """``values`` as rows, their column names in first-seen order, and per column its values
    (``col``) and ``dataset``'s kind of them (``kind``; None when some value has no type)."""

    def __init__(self, values: list):
        self.values = values
        self.rows = values if set(map(type, values)) <= {dict} else [as_row(v) for v in values]
        self.names = dict.fromkeys(chain.from_iterable(self.rows))
        self._cols: dict = {}
        self._kinds: dict = {}

    def col(self, name) -> list:
        found = self._cols.get(name)
        if found is None:
            found = self._cols[name] = list(map(dict.get, self.rows, repeat(name)))
        return found

    def kind(self, name):
        """The joined kind of the column's values; RecursionError propagates (too deep)."""
        found = self._kinds.get(name, _UNSET)
        if found is _UNSET:
            from .dataset import column_kind
            found = self._kinds[name] = column_kind(self.col(name))
        return found


def share(cols: Columns) -> None:
    with _lock:
        _shared[id(cols.values)] = cols
        while len(_shared) > _KEEP:
            del _shared[next(iter(_shared))]


def take(values: list) -> Columns:
    with _lock:
        found = _shared.pop(id(values), None)
    return found if found is not None and found.values is values else Columns(values)

"""A batch's columns and the kinds of their values, worked out once per batch.

The sinks widen the dataset schema over a batch (``dataset.widen``) and then hand the same list
of values to the Parquet writer, which needs the same columns and kinds to choose pyarrow's own
conversion (in C) over checking value by value. ``widen`` leaves its ``Columns`` here
(``share``: one slot per thread, as the sinks widen and write a batch on one thread, so a format
that never takes them holds one batch at most); the writer takes them (``take``), or works them
out again for a list it was not shared for. Taking empties the slot, so a second write of the
list works them out afresh. The contract: nothing changes the list between ``widen`` and the
write (the sinks pass their batch's values list untouched).
"""
from __future__ import annotations

import threading
from itertools import chain, repeat

from .base import as_row

__all__ = ["Columns", "share", "take"]

_UNSET = object()
_slot = threading.local()  # one batch per thread: the sinks widen and write a batch on one thread


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
    _slot.cols = cols  # replaces the last one: a format that never takes holds one batch at most


def take(values: list) -> Columns:
    found = getattr(_slot, "cols", None)
    if found is not None and found.values is values:
        _slot.cols = None
        return found
    return Columns(values)

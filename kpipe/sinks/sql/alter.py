"""``Sink.alter_offsets`` for the SQL sink: move rows of the offsets table on an operator's order
(``kpipe offsets reset --execute``), all partitions in one transaction.

Each partition is the runner's compare-and-set (``offsets.compare_and_set``) from the position
the plan was made from; a partition that moved since (a run in between, another reset) rolls the
whole transaction back and is reported as ``OffsetConflict``, so no partition moves alone.
"""
from __future__ import annotations

import sqlalchemy as sa

from kpipe.api import OffsetConflict

from . import offsets

__all__ = ["alter_offsets"]


def alter_offsets(engine: sa.Engine, table: sa.Table, group: str, positions: dict, expected: dict) -> None:
    """Store ``positions`` for ``group`` if each stored offset still equals ``expected``'s
    (None: no row), else raise ``OffsetConflict`` with the offsets found and store nothing."""
    conflicts: dict = {}
    with engine.begin() as conn:
        for (topic, partition), new in sorted(positions.items()):
            found = offsets.compare_and_set(conn, table, group, topic, partition,
                                            expected.get((topic, partition)), new)
            if found is not None:
                conflicts[(topic, partition)] = found
        if conflicts:
            raise OffsetConflict(conflicts)  # raised inside the transaction: every partition rolls back

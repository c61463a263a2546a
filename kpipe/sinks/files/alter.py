"""``Sink.alter_offsets`` for the files sink: move a partition directory's head on an operator's
order (``kpipe offsets reset --execute``).

The head is the greatest end among the file names and ``.next`` (``head.py``), so it only grows
by writing. Forward (skip): ``.next`` names the new position. Back (replay): the data files at or
past the new position are moved, never deleted, into ``.replaced-<position>-<time>/`` in the
partition directory (a dot name: the head, Spark, Hive and the next writer ignore it), then
``.next`` names the position. A file that holds offsets on both sides of the position cannot
be split, so such a reset is refused and names the file and the positions around it.
"""
from __future__ import annotations

import os
import time

from kpipe.api import FatalError
from kpipe.paths import parse_object_name

__all__ = ["rewind_plan", "moved_dir"]


def rewind_plan(d: str, tp, position: int) -> list[str]:
    """The data file names of ``tp`` in ``d`` to move aside for the head to be ``position``;
    raises ``FatalError`` for a file that straddles it. Caller holds the lock."""
    move = []
    for name in sorted(os.listdir(d)):
        parsed = parse_object_name(name)
        if name.startswith(".") or parsed is None or (parsed[0], parsed[1]) != tuple(tp):
            continue
        first, last = parsed[2], parsed[3]
        if first >= position:
            move.append(name)
        elif last >= position:
            raise FatalError(f"files sink: {tp[0]}[{tp[1]}]: {os.path.join(d, name)} holds offsets {first}..{last}, "
                             f"on both sides of {position}; a file is not split: reset to {first} or {last + 1}")
    return move


def moved_dir(d: str, position: int) -> str:
    return os.path.join(d, f".replaced-{position}-{time.strftime('%Y%m%dT%H%M%S')}")

"""A partition directory's head (its next offset): the truth from the file names, and a hint
that spares every write a listing of the directory.

The truth is what ``kpipe.sinks.files.sink`` publishes: data files named by their offset range
and ``.next`` (the end of a batch that published no file). The head is the greatest
``last + 1`` of the names of this (topic, partition), or ``.next``, whichever is greater.

The hint is the content of the partition's ``.lock`` file, which every writer holds (``flock``)
while it reads or writes it, so it is never seen half written. Two lines: the *witness* (the
data file name, or ``.next``, whose end was the head when the hint was written) and the
*pending* name (what the writer that wrote the hint was about to publish, or ``-``), padded with
spaces. Every writer reads the hint, writes a new one naming its own file as pending, then
publishes the file. So a writer killed between its rename and anything after it is still seen
by the next writer: its file is the pending name, and it exists. A write therefore costs a
small read, a stat and a small write of the lock file, whatever the number of files. Older
kpipe versions ignore the lock file's content.

The hint is never trusted where trusting it wrongly would skip or overwrite a file:

- on assignment (``truth``), the directory is listed again; the witness is checked to exist
  and to be of this partition, and then only the names at or past its end are parsed. A hint
  that is missing, unreadable, names a missing or foreign file, or is behind the files costs a
  full parse, never a wrong head. The hint is then rewritten from the truth;
- before a batch is refused as fenced, the truth is read again: the conflict reports the head
  the names give, and the runner seeks there.

The hint is written without fsync: after a power loss it may be behind, gone or garbled, which
the next assignment's listing corrects (a garbled hint is not used at all).
"""
from __future__ import annotations

import os

from kpipe.paths import parse_object_name as parse_name

__all__ = ["NEXT", "Head", "read_next", "truth", "fast", "write_hint"]

NEXT = ".next"  # the next offset after a batch that published no file
_NONE = "-"
_BLOCK = 1024  # the hint is padded to whole blocks, so one pwrite replaces all of it


class Head:
    """A partition's head and the name that shows it (a data file, ``.next``, or None)."""

    __slots__ = ("offset", "witness")

    def __init__(self, offset: int | None = None, witness: str | None = None):
        self.offset = offset
        self.witness = witness

    def see(self, offset: int | None, name: str) -> None:
        if offset is not None and (self.offset is None or offset > self.offset):
            self.offset, self.witness = offset, name


def read_next(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):  # vanished, or not ours to read: the files still tell the head
        return None


def _end(d: str, tp, name: str) -> int | None:
    """The next offset ``name`` stands for in ``d``: ``.next``'s value, or a data file name's
    ``last + 1`` when it is of partition ``tp``; None for anything else."""
    if name == NEXT:
        return read_next(os.path.join(d, NEXT))
    parsed = parse_name(name)
    if parsed is None or (parsed[0], parsed[1]) != tuple(tp):
        return None
    return parsed[3] + 1


def _read_hint(lock: int) -> tuple[str, str] | None:
    """(witness, pending) from the lock file's content, or None when it holds no valid hint."""
    size = os.fstat(lock).st_size
    if not 0 < size <= 16 * _BLOCK:
        return None
    try:
        lines = os.pread(lock, size, 0).decode().rstrip(" ").split("\n")
    except UnicodeDecodeError:
        return None
    if len(lines) != 3 or lines[2] != "" or not lines[0] or not lines[1]:
        return None
    return lines[0], lines[1]


def write_hint(lock: int, witness: str | None, pending: str | None = None) -> None:
    """Replace the hint in the lock file (one pwrite, no fsync; the caller holds the lock)."""
    text = f"{witness or _NONE}\n{pending or _NONE}\n".encode()
    size = max(os.fstat(lock).st_size, -(-len(text) // _BLOCK) * _BLOCK)
    os.pwrite(lock, text.ljust(size), 0)


def fast(d: str, tp, lock: int) -> Head | None:
    """The head as the hint tells it (its witness, and its pending name if that exists), or
    None when there is no usable hint. Caller holds the lock, ``lock`` its descriptor."""
    hint = _read_hint(lock)
    if hint is None:
        return None
    witness, pending = hint
    head = Head()
    if witness != _NONE:
        end = _end(d, tp, witness)
        if end is None:
            return None  # not a name of ours: the hint is not to be used
        head.see(end, witness)
    if pending != _NONE and (pending == NEXT or os.path.exists(os.path.join(d, pending))):
        head.see(_end(d, tp, pending), pending)
    return head


def truth(d: str, tp, lock: int, on_leftover) -> Head:
    """The head the names give, from a listing of ``d``; the hint only narrows which names are
    parsed (see the module docstring). ``on_leftover(path)`` is called for each temp file, which
    belongs to a crashed writer (a live one would hold the lock). Caller holds the lock."""
    topic, partition = tp
    hint = _read_hint(lock)
    head = Head()
    bound = ""  # names below it end before the witness's end: not parsed
    if hint is not None and hint[0] != _NONE:
        witness = hint[0]
        end = _end(d, tp, witness)
        if end is not None and (witness == NEXT or os.path.exists(os.path.join(d, witness))):
            head.see(end, witness)
            bound = f"{topic}+{partition}+{end:019d}"
    with os.scandir(d) as entries:
        for e in entries:
            name = e.name
            if name.startswith("."):
                if name.endswith(".tmp"):
                    on_leftover(e.path)
                elif name == NEXT:
                    head.see(read_next(e.path), NEXT)
                continue
            if name < bound:
                continue
            parsed = parse_name(name)
            if parsed is not None and parsed[0] == topic and parsed[1] == partition:
                head.see(parsed[3] + 1, name)
    return head

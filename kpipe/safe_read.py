"""Reading a file a spec names (the spec itself, a JSON Schema, an ``.avsc``, a ``${file:}``
secret) without trusting it.

Only a regular file is read, and only up to a limit: a FIFO given as a spec would block the
command until a writer appears, ``/dev/zero`` would never end, and a file of gigabytes would be
read whole before anything could say it is not a spec. The type is checked with ``stat`` before
the file is opened, and again with ``fstat`` on what was opened (with ``O_NONBLOCK``, so a file
swapped for a FIFO in between cannot block either); at most ``limit + 1`` bytes are read.
"""
from __future__ import annotations

import os
import stat

__all__ = ["UnreadableFile", "read_regular_file", "regular_file_problem", "size_text"]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


class UnreadableFile(Exception):
    """``path`` cannot be used. ``reason`` says why, without the path (``"it is a FIFO (named
    pipe), not a regular file"``, ``"No such file or directory"``); ``str()`` is the whole
    sentence: ``cannot read WHAT PATH: REASON``."""

    def __init__(self, what: str, path: str, reason: str):
        self.what, self.path, self.reason = what, path, reason
        super().__init__(f"cannot read {what} {path}: {reason}")


def size_text(n: int) -> str:
    """``1048576`` -> ``1 MiB``; ``65536`` -> ``64 KiB``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _check(st: os.stat_result, limit: int | None) -> str | None:
    for test, kind in _KINDS:
        if test(st.st_mode):
            return f"it is {kind}, not a regular file"
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if limit is not None and st.st_size > limit:
        return f"it is {size_text(st.st_size)}, more than the {size_text(limit)} allowed"
    return None


def regular_file_problem(path: str, limit: int | None = None) -> str | None:
    """Why ``path`` would not be read (from ``stat`` alone, without opening it), or None;
    ``limit`` None: any size."""
    try:
        return _check(os.stat(path), limit)
    except OSError as exc:
        return exc.strerror or str(exc)


def read_regular_file(path: str, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; ``UnreadableFile``
    naming ``what`` (``"the spec"``, ``"secret file"``) when it is missing, not a regular file,
    larger than ``limit`` or unreadable. Never blocks on a FIFO or a device."""
    try:
        why = _check(os.stat(path), limit)
        if why is not None:
            raise UnreadableFile(what, path, why)
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise UnreadableFile(what, path, exc.strerror or str(exc)) from None
    try:
        why = _check(os.fstat(fd), limit)  # what was opened, in case the path changed since
        if why is not None:
            raise UnreadableFile(what, path, why)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UnreadableFile(what, path, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if size > limit:  # grew after the stat
        raise UnreadableFile(what, path, f"it is more than the {size_text(limit)} allowed")
    return b"".join(chunks)

"""The files sink: each batch becomes one immutable file whose name is its offset range.

Layout: ``<path>/<topic>/<partition>/<topic>+<partition>+<first>+<last>.<ext>``, offsets
zero-padded to 19 digits so names sort in offset order (``kpipe.paths.object_name``, shared with
the S3 sink's ``kpipe`` layout). What goes in a file is ``kpipe.formats``' business. The files are the offset store: the
next offset of a partition is the last file's ``last + 1``. A file appears only through an
atomic rename after fsync, so publishing the file and committing its offsets are one step.
A batch whose records were all filtered out publishes no file; its end goes to ``.next`` in the
partition's directory instead (same rename and fsync), so the stored offset still moves past
it. Names starting with ``.`` (the lock file, ``.next``, temp files of a crashed writer) are
never data.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Sequence

from kpipe.api import Batch, BadRecordError, FatalError, OffsetConflict, Sink, SinkContext
from kpipe.formats import EncodeError, FileFormat, SchemaBook
from kpipe.paths import object_name as file_name
from kpipe.paths import parse_object_name as parse_name

__all__ = ["FilesSink", "file_name", "parse_name"]


_NEXT = ".next"  # the next offset after a batch that published no file


def _read_next(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):  # vanished, or not ours to read: the files still tell the head
        return None


def _fatal(exc: OSError, doing: str, path: str) -> FatalError:
    """One line for an OS error of the output (read-only, not a directory, disk full): it names
    the path and the error, and stops the run (exit 2) without a traceback."""
    return FatalError(f"files sink: cannot {doing} {exc.filename or path}: {exc.strerror or exc}")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesSink(Sink):
    def __init__(self, config, context: SinkContext):
        super().__init__(config, context)
        self.root = os.path.abspath(config["path"])
        try:
            self.format = FileFormat.from_config(config, context.spec_file)
        except ValueError as exc:
            raise FatalError(f"files sink: {exc}") from None
        self.ext = self.format.extension()
        self.fsync = config.get("fsync", True)
        # One schema for every file under path (csv: the header order), kept in .kpipe/.
        self.schemas = None
        if self.format.has_schema:
            from .schema import FilesSchemaStore
            self.schemas = SchemaBook(FilesSchemaStore(self.root, self._atomic), self.format.columns,
                                      context.value_schema, publish=self.format.reader_files, log=context.log,
                                      remember=self.format.remember, typed=self.format.name != "csv")
        self._dirs: dict[tuple, str] = {}
        # Per partition, (first, head): this instance published [first, head), one batch after
        # the other, in calls that then failed (a bad record in a later batch). The runner
        # writes such a call again without that record; its batches in that range are already
        # durable, ours, not a stale writer's. Forgotten once a call returns.
        self._ours: dict[tuple, tuple[int, int]] = {}

    def open(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise FatalError(f"cannot create output directory {self.root}: {exc.strerror}") from exc
        if not os.access(self.root, os.W_OK):
            raise FatalError(f"output directory {self.root} is not writable")

    # -- per-partition directory, lock and head ------------------------------------------

    def _dir(self, tp) -> str:
        d = self._dirs.get(tp)
        if d is None:
            d = os.path.join(self.root, tp[0], str(tp[1]))
            try:
                if not os.path.isdir(d):
                    os.makedirs(d, exist_ok=True)
                    if self.fsync:  # make the new directory entries themselves durable
                        _fsync_dir(os.path.dirname(d))
                        _fsync_dir(self.root)
            except OSError as exc:
                raise _fatal(exc, "create the partition directory", d) from None
            self._dirs[tp] = d
        return d

    @contextmanager
    def _locked(self, d: str):
        # Every writer of a partition directory holds this lock from its check of the head
        # to its rename, so two instances (say, a zombie and the new owner) never interleave.
        lock = os.path.join(d, ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _fatal(exc, "open the lock file", lock) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise _fatal(exc, "lock", lock) from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _head(self, d: str) -> int | None:
        """The next offset after the newest file, or None. Caller holds the lock.

        Temp files found here belong to a crashed writer (a live one would hold the lock),
        so they are removed.
        """
        head = None
        try:
            with os.scandir(d) as entries:
                for e in entries:
                    name = e.name
                    if name.startswith("."):
                        if name.endswith(".tmp"):
                            try:
                                os.unlink(e.path)
                            except OSError as exc:
                                raise _fatal(exc, "remove the leftover temp file", e.path) from None
                        elif name == _NEXT:
                            marked = _read_next(e.path)
                            if marked is not None and (head is None or marked > head):
                                head = marked
                        continue
                    parsed = parse_name(name)
                    if parsed is not None and (head is None or parsed[3] + 1 > head):
                        head = parsed[3] + 1
        except OSError as exc:
            raise _fatal(exc, "read the partition directory", d) from None
        return head

    # -- the Sink contract ---------------------------------------------------------------

    def load_offsets(self, partitions):
        found = {}
        for tp in partitions:
            self._ours.pop(tp, None)
            d = self._dir(tp)
            with self._locked(d):
                head = self._head(d)
            if head is not None:
                found[tp] = head
        return found

    def write(self, batches: Sequence[Batch]) -> None:
        conflicts = {}
        for b in batches:
            if b.next_offset <= b.start_offset:
                continue  # covers no offset at all
            tp = (b.topic, b.partition)
            d = self._dir(tp)
            name = file_name(b.topic, b.partition, b.start_offset, b.last_offset, self.ext)
            with self._locked(d):
                head = self._head(d)
                if head is not None and b.start_offset < head:
                    ours = self._ours.get(tp)
                    if ours is not None and ours[1] == head and ours[0] <= b.start_offset and b.next_offset <= head:
                        continue  # published by our failed call, and nobody has published since
                    # Someone already published past our start: writing would duplicate.
                    conflicts[tp] = head
                    continue
                if b.values:
                    self._publish(d, name, b)
                else:  # all filtered: no file, but the stored offset must still move past them
                    self._mark_next(d, b.next_offset)
                ours = self._ours.get(tp)
                self._ours[tp] = (ours[0] if ours is not None and ours[1] == b.start_offset else b.start_offset,
                                  b.next_offset)
        self._ours.clear()  # the call is done: a replay of it from now on is refused as usual
        if conflicts:
            raise OffsetConflict(conflicts)

    def _publish(self, d: str, name: str, b: Batch) -> None:
        """Stream the batch into a temp file, fsync, rename. Caller holds the lock (``_head``
        removes temp files it finds, taking them for a crashed writer's)."""
        # The dataset's schema is stored (widened) before a file that needs it exists.
        schema = self.schemas.schema_for(b.values) if self.schemas is not None else None

        def fill(f):
            try:
                writer = self.format.open(f, f"{b.topic}+{b.partition}+{b.start_offset}+{b.last_offset}",
                                          self.context.value_schema, schema)
                writer.write(b.values)
                writer.close()
            except EncodeError as exc:
                raise BadRecordError.in_batch(str(exc), b, exc.index) from None

        self._atomic(d, name, f".{name}.{os.getpid()}.tmp", fill)

    def _mark_next(self, d: str, next_offset: int) -> None:
        """Record ``next_offset`` in ``d/.next``, as atomically as a data file. Caller holds the lock."""
        self._atomic(d, _NEXT, f"{_NEXT}.{os.getpid()}.tmp", lambda f: f.write(b"%d\n" % next_offset))

    def _atomic(self, d: str, name: str, tmp_name: str, fill) -> None:
        """``fill(file)`` into ``d/tmp_name``, fsync, rename to ``d/name``, fsync ``d``; the temp
        file is removed on any failure, and an OSError becomes a FatalError naming the file."""
        tmp = os.path.join(d, tmp_name)
        try:
            with open(tmp, "wb") as f:
                fill(f)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            os.rename(tmp, os.path.join(d, name))
            if self.fsync:
                _fsync_dir(d)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise FatalError(f"files sink: cannot write {os.path.join(d, name)}: {exc.strerror or exc}") from exc
            raise

    def revoke(self, partitions) -> None:
        for tp in partitions:
            self._dirs.pop(tp, None)
            self._ours.pop(tp, None)

    def close(self) -> None:
        self._dirs.clear()
        self._ours.clear()

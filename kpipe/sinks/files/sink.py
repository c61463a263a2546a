"""The files sink: each batch becomes one immutable file whose name is its offset range.

Layout: ``<path>/<topic>/<partition>/<topic>+<partition>+<first>+<last>.<ext>``, offsets
zero-padded to 19 digits so names sort in offset order (``kpipe.paths.object_name``, shared with
the S3 sink's ``kpipe`` layout). What goes in a file is ``kpipe.formats``' business. The files are the offset store: the
next offset of a partition is the last file's ``last + 1``. A file appears only through an
atomic rename after fsync, so publishing the file and committing its offsets are one step.
A batch whose records were all filtered out publishes no file; its end goes to ``.next`` in the
partition's directory instead (same rename and fsync), so the stored offset still moves past
it. Names starting with ``.`` (the lock file, ``.next``, temp files of a crashed writer) are
never data. ``head.py`` finds the head: by listing the directory on assignment, and from a hint
kept in the lock file on each write, so a write costs the same at any number of files.

Writes of different partitions may run at once (``Capabilities.max_in_flight``): each partition
has its own directory, lock and hint, and what the instance keeps is per partition.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import ExitStack, contextmanager
from typing import Sequence

from kpipe.api import Batch, BadRecordError, FatalError, OffsetConflict, Sink, SinkContext, WriteOutcome
from kpipe.formats import EncodeError, FileFormat, SchemaBook
from kpipe.paths import object_name as file_name
from kpipe.paths import parse_object_name as parse_name

from . import head as heads
from .head import NEXT as _NEXT

__all__ = ["FilesSink", "file_name", "parse_name"]


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
        # Partitions whose directory a write of this instance has listed since it was assigned:
        # the first write lists it once more (leftovers of a crashed writer go then), the
        # others trust the hint.
        self._listed: set = set()

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
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def _truth(self, d: str, tp, lock: int) -> heads.Head:
        """The head the file names give (a listing of ``d``), and the hint rewritten to it.
        Temp files found here belong to a crashed writer (a live one would hold the lock), so
        they are removed. Caller holds the lock."""
        def remove(path):
            try:
                os.unlink(path)
            except OSError as exc:
                raise _fatal(exc, "remove the leftover temp file", path) from None

        try:
            head = heads.truth(d, tp, lock, remove)
            heads.write_hint(lock, head.witness)
        except OSError as exc:
            raise _fatal(exc, "read the partition directory", d) from None
        return head

    def _current(self, d: str, tp, lock: int) -> heads.Head:
        """The head for a write: from the hint (no listing), or the truth when there is no
        usable hint. Caller holds the lock."""
        try:
            head = heads.fast(d, tp, lock)
        except OSError as exc:
            raise _fatal(exc, "read the partition directory", d) from None
        return head if head is not None else self._truth(d, tp, lock)

    def _announce(self, d: str, lock: int, head: heads.Head, pending: str) -> None:
        """Name ``pending`` in the hint before publishing it: a writer killed after its rename
        is then still seen by the next one. Caller holds the lock."""
        try:
            heads.write_hint(lock, head.witness, pending)
        except OSError as exc:
            raise _fatal(exc, "write the head hint to", os.path.join(d, ".lock")) from None

    # -- the Sink contract ---------------------------------------------------------------

    def load_offsets(self, partitions):
        found = {}
        for tp in partitions:
            self._ours.pop(tp, None)
            self._listed.discard(tp)
            d = self._dir(tp)
            with self._locked(d) as lock:
                head = self._truth(d, tp, lock).offset
            if head is not None:
                found[tp] = head
        return found

    def write(self, batches: Sequence[Batch]) -> WriteOutcome | None:
        """Each partition on its own: one that fails with an OS error (its directory read-only,
        the disk full) stops only its own batches, and the others are reported durable."""
        conflicts: dict = {}
        failed: dict = {}
        for b in batches:
            tp = (b.topic, b.partition)
            if b.next_offset <= b.start_offset or tp in failed or tp in conflicts:
                continue  # covers no offset at all, or an earlier batch of its partition did not land
            try:
                conflict = self._write_batch(tp, b)
            except FatalError as exc:
                failed[tp] = exc
                continue
            if conflict is not None:
                conflicts[tp] = conflict
        parts = {(b.topic, b.partition) for b in batches}
        durable = parts - set(failed) - set(conflicts)
        for tp in durable:
            self._ours.pop(tp, None)  # done: a replay of it from now on is refused as usual
        if failed:
            if not durable:
                raise next(iter(failed.values()))
            # A conflicted partition is left to the retry, which reports it again.
            return WriteOutcome(frozenset(durable), "; ".join(str(e) for e in failed.values()))
        if conflicts:
            raise OffsetConflict(conflicts)
        return None

    def _write_batch(self, tp, b: Batch) -> int | None:
        """Publish ``b`` (or skip it: ours already); the head another writer is ahead at, if so."""
        d = self._dir(tp)
        name = file_name(b.topic, b.partition, b.start_offset, b.last_offset, self.ext)
        with self._locked(d) as lock:
            if tp in self._listed:
                head = self._current(d, tp, lock)
            else:
                head = self._truth(d, tp, lock)
                self._listed.add(tp)
            if head.offset is not None and b.start_offset < head.offset:
                ours = self._ours.get(tp)
                if ours is not None and ours[1] == head.offset and ours[0] <= b.start_offset \
                        and b.next_offset <= head.offset:
                    return None  # published by our failed call, and nobody has published since
                head = self._truth(d, tp, lock)  # the hint never fences on its own: the names decide
                if head.offset is not None and b.start_offset < head.offset:
                    return head.offset  # someone already published past our start: writing would duplicate
            if b.values:
                self._announce(d, lock, head, name)
                self._publish(d, name, b)
            else:  # all filtered: no file, but the stored offset must still move past them
                self._announce(d, lock, head, _NEXT)
                self._mark_next(d, b.next_offset)
            ours = self._ours.get(tp)
            self._ours[tp] = (ours[0] if ours is not None and ours[1] == b.start_offset else b.start_offset,
                              b.next_offset)
        return None

    def _publish(self, d: str, name: str, b: Batch) -> None:
        """Stream the batch into a temp file, fsync, rename. Caller holds the lock (``_truth``
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

    def alter_offsets(self, group, positions, expected) -> None:
        """Holding every partition's lock: check each head against ``expected`` (else
        ``OffsetConflict``, nothing changed), then move each (``alter.py``). ``group`` is not
        used: the directory holds one position per partition."""
        from .alter import moved_dir, rewind_plan

        tps = sorted(positions)
        with ExitStack() as stack:
            locks = {tp: stack.enter_context(self._locked(self._dir(tp))) for tp in tps}
            found = {tp: self._truth(self._dir(tp), tp, locks[tp]).offset for tp in tps}
            stale = {tp: -1 if o is None else o for tp, o in found.items() if o != expected.get(tp)}
            if stale:
                raise OffsetConflict(stale)
            plans = {tp: rewind_plan(self._dir(tp), tp, positions[tp]) for tp in tps}  # refuse before moving any
            for tp in tps:
                d = self._dir(tp)
                if plans[tp]:
                    aside = moved_dir(d, positions[tp])
                    try:
                        os.makedirs(aside, exist_ok=True)
                        for name in plans[tp]:
                            os.rename(os.path.join(d, name), os.path.join(aside, name))
                        if self.fsync:
                            _fsync_dir(aside)
                    except OSError as exc:
                        raise _fatal(exc, "move aside the files past the new position into", aside) from None
                self._mark_next(d, positions[tp])
                self._truth(d, tp, locks[tp])  # the hint names .next now
                self._ours.pop(tp, None)
                self._listed.discard(tp)

    def revoke(self, partitions) -> None:
        for tp in partitions:
            self._dirs.pop(tp, None)
            self._ours.pop(tp, None)
            self._listed.discard(tp)

    def close(self) -> None:
        self._dirs.clear()
        self._ours.clear()
        self._listed.clear()

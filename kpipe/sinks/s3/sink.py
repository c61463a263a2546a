"""The S3 sink: each batch becomes one object per distinct path, exactly once.

For every batch of a partition, in order (``state.py`` describes the state object):

1. the batch must start at the partition's stored ``next_offset``, else ``OffsetConflict``;
2. PUT the state with ``pending = {start, next, keys}``, If-Match the ETag last read or
   written. This is the fence: a writer holding a stale copy gets 412 and ``OffsetConflict``;
3. if the state held someone else's ``pending`` (a crashed run, a zombie, our own failed try),
   delete those keys and abort the partition's multipart uploads before writing anything;
4. write each object with If-None-Match: * (the first one encodes while the fence PUT is in
   flight, and each is published while the next one encodes). Object names carry offsets at or past
   ``next_offset``, so an existing one was never committed: if the state is still ours it is a
   leftover, replaced with If-Match on its ETag; if not, we lost the fence (``OffsetConflict``).
   That is what stops an instance that lost its partitions from replacing a committed object;
5. PUT the state with ``next_offset = next`` and no pending, If-Match the ETag of step 2. This
   is the commit point.

A zombie whose PUT was already in flight in step 4 when another writer took over can land an
object after that writer's cleanup. Its keys were in the pending the new writer read, so they
stay listed as ``orphans`` in the state and are deleted again after the new writer's commits,
at most every 30 s, for 15 minutes; and between writes too (``housekeep``), so an idle
partition is swept as well (see docs/sinks/s3.md, "Limits").
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from kpipe.api import (Batch, BadRecordError, FatalError, KpipeError, OffsetConflict, RetryableError, Sink,
                       SinkContext, WriteOutcome)
from kpipe.formats import EncodeError, FileFormat, SchemaBook
from kpipe.paths import Layout, TemplateError
from kpipe.spec.units import parse_size

from . import MAX_IN_FLIGHT
from .state import PartitionState, state_key
from .store import Precondition, Store, UploadGone
from .upload import ObjectUpload

__all__ = ["S3Sink", "ORPHAN_GRACE", "SWEEP_EVERY"]

MIN_PART = 5 * 1024 * 1024  # S3's smallest part (all but the last)
ORPHAN_GRACE = 15 * 60.0    # seconds a taken-over batch's keys are swept for
SWEEP_EVERY = 30.0          # seconds between two sweeps of a partition's orphans
_CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv", "avro": "application/avro",
                  "parquet": "application/vnd.apache.parquet"}
_COMPRESSED_TYPES = {"gzip": "application/gzip", "zstd": "application/zstd"}


class S3Sink(Sink):
    def __init__(self, config, context: SinkContext):
        super().__init__(config, context)
        self.log = context.log or logging.getLogger("kpipe.sink.s3")
        self.bucket = config["bucket"]
        self.prefix = (config.get("prefix") or "").strip("/")
        style = config.get("layout", "kpipe")
        try:
            self.format = FileFormat.from_config(config, context.spec_file)
            self.layout = Layout(style, self.prefix, config.get("path"), self.format.extension(style),
                                 config.get("topics_dir", "topics"), config.get("offset_pad_width", 10))
            self.part_size = parse_size(config.get("part_size", "8MiB"))
        except (ValueError, TemplateError) as exc:
            raise FatalError(f"s3 sink: {exc}") from None
        if self.part_size < MIN_PART:
            raise FatalError(f"s3 sink: part_size {config.get('part_size')!r} is below S3's minimum part of 5MiB")
        fmt = self.format
        self.content_type = (_COMPRESSED_TYPES.get(fmt.compression) if fmt.name in ("jsonl", "csv") else None) \
            or _CONTENT_TYPES[fmt.name]
        self.concurrency = int(config.get("concurrency", 8))
        self.endpoint_url = config.get("endpoint_url") or None
        self.region = config.get("region") or None
        self.addressing_style = config.get("addressing_style", "auto")
        self.store: Store | None = None
        # Several writes may run at once (Capabilities.max_in_flight), never two for one
        # partition: the per-partition dicts below are only touched for a write's own
        # partitions, and the shared pools are created under this lock.
        self._pools_lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None      # partitions of one write, in parallel
        self.io_pool: ThreadPoolExecutor | None = None   # requests of one batch, in parallel
        self.states: dict[tuple, PartitionState] = {}  # what we last read or wrote, per partition
        self.ours_from: dict[tuple, int] = {}          # first offset we committed since that read
        self.last_sweep: dict[tuple, float] = {}
        # One schema for every object of a dataset (csv: the header order), in _kpipe/.
        self.schema_books: dict = {}

    def _schemas(self, topic: str) -> SchemaBook:
        """The schema of the dataset ``topic``'s objects belong to: every object under the
        prefix, or with the ``kafka-connect`` layout the topic's own, since there each
        ``<topics_dir>/<topic>/`` is a table of its own (as Connect's Hive integration makes it),
        and its reader files go in that directory."""
        key = topic if self.layout.style == "kafka-connect" else None
        book = self.schema_books.get(key)
        if book is None:
            from .schema import S3SchemaStore
            root = None if key is None else "/".join(p for p in (self.layout.base, topic) if p)
            store = S3SchemaStore(lambda: self.store, self.prefix, topic=key, root=root)
            book = self.schema_books.setdefault(key, SchemaBook(
                store, self.format.columns, self.context.value_schema, publish=self.format.reader_files,
                log=self.log, remember=self.format.remember, typed=self.format.name != "csv"))
        return book

    # -- the Sink contract ------------------------------------------------------------------

    def open(self) -> None:
        if self.store is None:
            self.store = Store(self.bucket, endpoint_url=self.endpoint_url, region=self.region,
                               addressing_style=self.addressing_style,
                               max_connections=max(10, 2 * self.concurrency + MAX_IN_FLIGHT),
                               prefix=self.prefix)
        self.store.check()

    def load_offsets(self, partitions):
        """Each partition's stored ``next_offset``. Reads only: cleaning up after an uncommitted
        batch waits for the first write, since the runner also asks about partitions other
        members own (``--until-caught-up``)."""
        partitions = list(partitions)
        if len(partitions) > 1 and self.concurrency > 1:  # one GET each: in parallel on assignment
            states = list(self._pool().map(self._read, partitions))
        else:
            states = [self._read(tp) for tp in partitions]
        return {tp: st.next_offset for tp, st in zip(partitions, states) if st.next_offset is not None}

    def write(self, batches: Sequence[Batch]) -> WriteOutcome | None:
        """Each partition on its own; when some failed and others committed, a ``WriteOutcome``
        names the committed ones, and the runner writes only the rest again (a bad record or a
        fenced partition alone is still raised: the runner's narrowing and rewind need them)."""
        by_tp: dict[tuple, list] = {}
        for b in batches:
            by_tp.setdefault((b.topic, b.partition), []).append(b)
        if len(by_tp) == 1 or self.concurrency == 1:
            outcomes = [self._outcome(tp, bs) for tp, bs in by_tp.items()]
        else:
            outcomes = list(self._pool().map(lambda item: self._outcome(*item), by_tp.items()))
        failed = {tp: exc for tp, exc in zip(by_tp, outcomes) if exc is not None}
        durable = frozenset(by_tp) - set(failed)
        errors = [exc for exc in failed.values() if not isinstance(exc, OffsetConflict)]
        if durable and errors and not any(isinstance(exc, BadRecordError) for exc in errors):
            # A fenced partition among them is left to the retry, which reports it again.
            return WriteOutcome(durable, "; ".join(str(exc) for exc in errors))
        _raise_most_severe(outcomes)  # a retried call skips what this one committed
        return None

    def alter_offsets(self, group, positions, expected) -> None:
        """Each partition's state object gets ``next_offset`` = its new position, If-Match the
        ETag whose ``next_offset`` the plan expected. Every state is checked before any is put,
        so a stale plan moves nothing; a put that still loses its If-Match (a writer started
        in between) raises ``OffsetConflict`` after the partitions before it moved. A pending
        batch and the orphans stay listed, so the next writer still cleans them up. ``group``
        is not used: the prefix holds one position per partition."""
        states = {tp: self._fetch(tp) for tp in positions}
        for tp in states:
            self._forget(tp)
        stale = {tp: -1 if st.next_offset is None else st.next_offset
                 for tp, st in states.items() if st.next_offset != expected.get(tp)}
        if stale:
            raise OffsetConflict(stale)
        for tp, new in sorted(positions.items()):
            st = states[tp]
            self._cas(tp, st, PartitionState(None, new, st.pending, st.orphans, st.orphans_until), new)
            self._forget(tp)  # the next write reads it again

    def revoke(self, partitions) -> None:
        for tp in partitions:
            self._forget(tp)

    def housekeep(self) -> None:
        """Sweep the orphans of partitions we hold while no batch comes, so a zombie's object
        that lands after our last write does not stay until the next one.

        Only while the stored state is still the one we wrote (nobody has fenced since), and
        only keys whose first offset is below our committed ``next_offset``: no writer can
        ever publish such a key again, so a writer that takes over between our check and the
        delete cannot lose an object of its own to it."""
        now = time.time()
        for tp, st in list(self.states.items()):
            if not st.orphans or now > st.orphans_until or st.next_offset is None \
                    or time.monotonic() - self.last_sweep.get(tp, float("-inf")) < SWEEP_EVERY:
                continue
            if self._fetch(tp).etag != st.etag:
                continue  # another writer has been here: its state, its orphans to sweep
            done = [k for k in st.orphans if self._first_offset(k, st.next_offset) < st.next_offset]
            if done:
                self._sweep(tp, done)

    def close(self) -> None:
        for pool in (self.pool, self.io_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self.pool = self.io_pool = None
        if self.store is not None:
            self.store.close()
            self.store = None
        self.states.clear()

    # -- one partition ----------------------------------------------------------------------

    def _outcome(self, tp, batches) -> BaseException | None:
        try:
            self._write_partition(tp, batches)
        except BaseException as exc:  # collected, then raised by write() in order of severity
            return exc
        return None

    def _write_partition(self, tp, batches: list) -> None:
        st = self.states.get(tp) or self._read(tp)
        for b in batches:
            if st.next_offset is not None and b.start_offset != st.next_offset:
                start = self.ours_from.get(tp)
                if start is not None and start <= b.start_offset and b.next_offset <= st.next_offset:
                    continue  # committed by us earlier in a call that then failed elsewhere
                raise OffsetConflict({tp: st.next_offset})
            st = self._write_batch(tp, b, st)

    def _write_batch(self, tp, b: Batch, st: PartitionState) -> PartitionState:
        plan = self._plan(b)
        keys = [key for key, _, _, _ in plan]
        stale = set(st.pending["keys"]) if st.pending else set()
        now = time.time()
        until = max(st.orphans_until, now + ORPHAN_GRACE) if stale else st.orphans_until
        orphans = sorted((set(st.orphans) | stale) - set(keys)) if now <= until else []
        if plan or stale:
            pending = {"start": b.start_offset, "next": b.next_offset, "keys": keys}
            # A partition's first batch also records where it started: the runner began there.
            start = b.start_offset if st.next_offset is None else st.next_offset
            fence = PartitionState(None, start, pending, orphans, until)
            if stale:  # the clean-up must finish before any object of ours goes out
                st = self._cas(tp, st, fence, b.start_offset)
                self._clean_up(tp, stale | set(orphans), st)
                st = self._write_objects(tp, b, plan, st)
            else:
                st = self._write_objects(tp, b, plan, self._io().submit(self._cas, tp, st, fence, b.start_offset))
        st = self._cas(tp, st, PartitionState(None, b.next_offset, None, orphans, until), b.start_offset)
        self.ours_from.setdefault(tp, b.start_offset)
        if orphans:
            self._sweep(tp, orphans)
        return st

    def _plan(self, b: Batch) -> list:
        """``[(key, record indices or None for all, first offset, last offset)]``, one per path."""
        if not b.values:
            return []
        groups = self.layout.template.group(b)
        n = len(b.values)
        if len(groups) == 1:
            path = groups[0][0]
            return [(self.layout.key(b.topic, b.partition, path, b.offset_of(0), b.offset_of(n - 1)), None,
                     b.offset_of(0), b.offset_of(n - 1))]
        offsets = b.offsets
        plan = []
        for path, idxs in groups:
            first, last = offsets[idxs[0]], offsets[idxs[-1]]
            plan.append((self.layout.key(b.topic, b.partition, path, first, last), idxs, first, last))
        return plan

    def _pool(self) -> ThreadPoolExecutor:
        if self.pool is None:
            with self._pools_lock:
                if self.pool is None:
                    self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="kpipe-s3")
        return self.pool

    def _io(self) -> ThreadPoolExecutor:
        if self.io_pool is None:
            with self._pools_lock:
                if self.io_pool is None:
                    self.io_pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="kpipe-s3-io")
        return self.io_pool

    def _write_objects(self, tp, b: Batch, plan: list, fence) -> PartitionState:
        """Encode the batch's objects one after the other and publish each as soon as it is
        encoded, while the next one encodes; see step 4 in the module docstring.

        ``fence`` is the state we hold, or the future of the PUT that makes it ours: the first
        object then encodes while that PUT is in flight, and nothing is sent before it held.
        Returns the state we hold.
        """
        held = fence if isinstance(fence, PartitionState) else None

        def fenced() -> PartitionState:
            nonlocal held
            if held is None:
                held = fence.result()  # OffsetConflict when we lost the fence
            return held

        uploads, published = [], []
        try:
            # The dataset's schema is stored (widened) before an object that needs it is sent.
            book = self._schemas(b.topic) if self.format.has_schema and plan else None
            schema = book.schema_for(b.values) if book is not None else None
            for key, idxs, first, last in plan:
                upload = ObjectUpload(self.store, key, self.part_size, self.content_type, before_send=fenced)
                uploads.append(upload)
                writer = self.format.open(upload, f"{b.topic}+{b.partition}+{first}+{last}", self.context.value_schema,
                                          schema)
                try:
                    writer.write(b.values if idxs is None else [b.values[i] for i in idxs])
                    writer.close()
                except EncodeError as exc:
                    raise BadRecordError.in_batch(str(exc), b, exc.index if idxs is None else idxs[exc.index]) \
                        from None
                published.append(self._io().submit(self._publish, tp, b, upload, fenced()))
            fenced()  # a batch without objects still needs its fence
        except BaseException as exc:
            failures = [exc]
        else:
            failures = []
        # Never leave a request of this batch running: wait for every one, then report the worst.
        if held is None and not isinstance(fence, PartitionState):
            failures.append(fence.exception())
        failures += [f.exception() for f in published]
        for upload in uploads:
            if upload.multipart:
                try:
                    upload.abort()  # not completed: discard its parts
                except KpipeError as exc:
                    self.log.warning("s3: %s", exc)
        _raise_most_severe(failures)
        return held

    def _publish(self, tp, b: Batch, upload: ObjectUpload, st: PartitionState) -> None:
        """Publish one encoded object, If-None-Match, and handle a key that already exists."""
        key = upload.key
        condition = {"IfNoneMatch": "*"}
        try:
            for _ in range(3):
                try:
                    upload.finish(**condition)
                    return
                except Precondition:
                    self._check_fence(tp, st, b.start_offset)
                    # Still ours: a leftover of an uncommitted batch (a zombie's PUT that landed
                    # after the clean-up). Replace exactly that object, nothing newer.
                    etag = self.store.etag(key)
                    self.log.info("s3: replacing %s, left by an uncommitted batch", key)
                    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            raise RetryableError(f"s3: {key} kept changing while it was written")
        except UploadGone as exc:
            self._check_fence(tp, st, b.start_offset)
            raise RetryableError(f"s3: {exc} (a lifecycle rule?); writing it again") from None

    # -- the state object -------------------------------------------------------------------

    def _fetch(self, tp) -> PartitionState:
        """The stored state; an empty one when there is none."""
        found = self.store.get(state_key(self.prefix, *tp), f"reading the offsets of {tp[0]}[{tp[1]}]")
        return PartitionState() if found is None else PartitionState.parse(*found)

    def _read(self, tp) -> PartitionState:
        """The stored state, remembered for the next write."""
        st = self._fetch(tp)
        self._forget(tp)
        self.states[tp] = st
        return st

    def _check_fence(self, tp, st: PartitionState, start: int) -> None:
        """Raise ``OffsetConflict`` unless the stored state is still ``st``, the one we wrote."""
        fresh = self._fetch(tp)
        if fresh.etag != st.etag:
            self._forget(tp)
            self.states[tp] = fresh
            raise OffsetConflict({tp: fresh.next_offset if fresh.next_offset is not None else start}) from None

    def _cas(self, tp, old: PartitionState, new: PartitionState, start: int) -> PartitionState:
        """Replace the state if it is still ``old``; else re-read it and raise ``OffsetConflict``."""
        condition = {"IfMatch": old.etag} if old.etag else {"IfNoneMatch": "*"}
        try:
            resp = self.store.call(f"writing the offsets of {tp[0]}[{tp[1]}]", "put_object",
                                   Key=state_key(self.prefix, *tp), Body=new.body(),
                                   ContentType="application/json", **condition)
        except Precondition:
            fresh = self._read(tp)
            raise OffsetConflict({tp: fresh.next_offset if fresh.next_offset is not None else start}) from None
        except BaseException:
            self._forget(tp)  # it may or may not have landed: read it again next time
            raise
        new.etag = resp["ETag"]
        self.states[tp] = new
        return new

    def _forget(self, tp) -> None:
        self.states.pop(tp, None)
        self.ours_from.pop(tp, None)
        self.last_sweep.pop(tp, None)

    # -- cleaning up after uncommitted batches ----------------------------------------------

    def _clean_up(self, tp, keys: set, st: PartitionState) -> None:
        """We hold the fence (``st`` is ours): delete what uncommitted batches may have left and
        abort the partition's multipart uploads in progress."""
        self.store.delete(keys, f"deleting objects of an uncommitted batch of {tp[0]}[{tp[1]}]")
        aborted = 0
        base = self.layout.base + "/" if self.layout.base else ""
        for key, upload_id in list(self.store.uploads(base, "listing multipart uploads")):
            owner = self.layout.owner(key)
            if owner is not None and owner[:2] == tp:
                self.store.abort(key, upload_id, f"aborting the dangling upload of {key}")
                aborted += 1
        self.last_sweep.pop(tp, None)  # sweep again right after the first commit
        self.log.info("s3: %s[%d]: cleaned up after an uncommitted batch: deleted %d keys, aborted %d uploads",
                      tp[0], tp[1], len(keys), aborted)

    def _first_offset(self, key: str, default: int) -> int:
        """The first offset an object key of our layout names; ``default`` for another key."""
        owner = self.layout.owner(key)
        return default if owner is None else owner[2]

    def _sweep(self, tp, orphans: list) -> None:
        now = time.monotonic()
        if now - self.last_sweep.get(tp, float("-inf")) < SWEEP_EVERY:
            return
        try:
            self.store.delete(orphans, f"sweeping objects of uncommitted batches of {tp[0]}[{tp[1]}]")
            self.last_sweep[tp] = now
        except KpipeError as exc:  # housekeeping: the batch is committed; the next sweep retries
            self.log.warning("s3: %s", exc)


def _raise_most_severe(outcomes) -> None:
    """Raise the most severe of ``outcomes`` (exceptions or None): a fatal error, then a bad
    record, then a retryable failure; else one ``OffsetConflict`` for every fenced partition."""
    conflicts: dict = {}
    failures = []
    for exc in outcomes:
        if isinstance(exc, OffsetConflict):
            conflicts.update(exc.partitions)
        elif exc is not None:
            failures.append(exc)
    for kind in (FatalError, BadRecordError, RetryableError, BaseException):
        for exc in failures:
            if isinstance(exc, kind):
                raise exc
    if conflicts:
        raise OffsetConflict(conflicts)

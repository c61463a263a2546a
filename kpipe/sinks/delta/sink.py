"""``DeltaSink``: one Delta commit per write, holding the rows and, per partition written, a txn
action ``(kpipe:<group>:<topic>:<partition>, next_offset)``.

Fencing: the write reads each partition's txn version from the snapshot it commits on top of
and goes on only where it equals the batch's start. delta-rs's conflict checker then refuses
the commit when any commit after that snapshot carries a txn for one of our app ids
(``CommitFailedError``), so of two writers that both read version v only the first lands. The
loser reloads: a partition whose version moved is fenced (``OffsetConflict``), the rest retried.
"""
from __future__ import annotations

import os
import re
import time
from typing import Sequence

from kpipe.api import (Batch, BadRecordError, FatalError, OffsetConflict, RetryableError, Sink,
                       SinkContext)
from kpipe.formats.arrowtypes import dataset_schema
from kpipe.formats.dataset import parse_columns
from kpipe.spec.units import parse_duration

from kpipe.sinks.tables import storage_error, storage_fatal

from .safety import check_storage_options
from .schema import EncodeError, records_table, write_schema

__all__ = ["DeltaSink", "app_id"]

COMMIT_TRIES = 8  # conflicts with other partitions' writers are retried by delta-rs itself
_DELETE = "__kpipe_delete"
VACUUM_EVERY = 3600.0
_INTEGERS = {"bigint", "integer", "smallint"}


def app_id(group: str, topic: str, partition: int) -> str:
    return f"kpipe:{group}:{topic}:{partition}"


def _gist(exc: BaseException) -> str:
    """delta-rs's error on one line: its first line and, after it, the root cause (the last
    line of the ``↳`` chain), without the terminal colours."""
    lines = [ln.strip().lstrip("↳").strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return ""
    return lines[0] if len(lines) == 1 else f"{lines[0]}: {lines[-1]}"


def _require():
    try:
        import deltalake
        import pyarrow
    except ImportError:
        raise FatalError('the delta sink needs deltalake and pyarrow; run: pip install "kpipe[delta]"') from None
    return deltalake, pyarrow


class DeltaSink(Sink):
    def __init__(self, config, context: SinkContext):
        super().__init__(config, context)
        self.dl, self.pa = _require()
        self.uri = str(config["uri"])
        self.options = {k: str(v) for k, v in (config.get("storage_options") or {}).items() if v not in (None, "")}
        self.mode = config.get("mode", "append")
        self.key = list(config.get("key") or [])
        self.partition_by = list(config.get("partition_by") or []) or None
        self.evolve = config.get("evolve", "add_columns")
        self.checkpoint_every = int(config.get("checkpoint_every", 10))
        retention = config.get("vacuum_retention")
        self.vacuum_hours = parse_duration(retention) / 3600 if retention else None
        try:
            self.columns = parse_columns(config.get("columns"))
        except ValueError as exc:
            raise FatalError(f"delta: {exc}") from None
        self.table = None
        self.last_checkpoint = None
        self.last_vacuum = 0.0
        self.log = context.log

    # -- opening and reading -------------------------------------------------------------

    def open(self) -> None:
        check_storage_options(self.uri, self.options)
        if self.context.tombstones == "delete" and self.mode != "upsert":
            raise FatalError("delta: tombstones: delete needs mode: upsert (a key names the row to delete)")
        self._load()
        self._probe()

    def _probe(self) -> None:
        """Write and delete a small object beside the table: an unwritable table fails at start
        (and in ``kpipe check``), not at the first batch."""
        import uuid

        from deltalake.fs import DeltaStorageHandler
        name = f"_kpipe_probe_{uuid.uuid4().hex}"
        try:
            if "://" not in self.uri:
                os.makedirs(self.uri, exist_ok=True)  # as the first commit would
            fs = DeltaStorageHandler(self.uri, options=self.options or None)
            # the raw stream: deltalake 1.6's pyarrow wrapper hands its writer a Buffer it refuses
            out = fs._handler.open_output_stream(name, None)
            out.write(b"kpipe")
            out.close()
            fs.delete_file(name)
        except Exception as exc:
            raise self._classify("cannot write to", exc) from None

    def _load(self):
        """The table at its newest version, or None when it does not exist yet."""
        from deltalake.exceptions import TableNotFoundError
        try:
            if self.table is None:
                self.table = self.dl.DeltaTable(self.uri, storage_options=self.options or None)
            else:
                self.table.update_incremental()
        except TableNotFoundError:
            self.table = None
        except Exception as exc:
            raise self._classify("reading", exc) from None
        return self.table

    def _classify(self, doing: str, exc: Exception):
        """``exc`` as kpipe's error kind, by deltalake's exception types; an object store failure
        arrives as a plain OSError (or a DeltaError wrapping one), whose text alone says whether
        the store refused (fatal) or did not answer (retryable)."""
        from deltalake.exceptions import CommitFailedError, DeltaError

        msg = f"delta: {doing} {self.uri}: {type(exc).__name__}: {_gist(exc)}"
        if isinstance(exc, CommitFailedError):  # a commit lost to another writer's: reload and retry
            return RetryableError(msg)
        if storage_fatal(exc):
            return FatalError(msg + (" (the bucket does not exist)" if "nosuchbucket" in str(exc).lower() else ""))
        if isinstance(exc, OSError) or (isinstance(exc, DeltaError) and storage_error(exc)):
            return RetryableError(msg)  # timeouts, refused connections, 5xx, throttling
        # DeltaProtocolError, SchemaMismatchError, TableNotFoundError (a location that cannot
        # hold a table), other DeltaErrors, and pyarrow's: retrying cannot help
        return FatalError(msg)

    def load_offsets(self, partitions):
        table = self._load()
        if table is None:
            return {}
        out = {}
        for tp in partitions:
            v = table.transaction_version(app_id(self.context.group, *tp))
            if v is not None:
                out[tp] = v
        return out

    # -- writing -------------------------------------------------------------------------

    def write(self, batches: Sequence[Batch]) -> None:
        batches = [b for b in batches if b.next_offset > b.start_offset]
        if not batches:
            return
        spans: dict = {}  # (topic, partition) -> [start, next]
        for b in batches:
            s = spans.setdefault((b.topic, b.partition), [b.start_offset, b.next_offset])
            s[0], s[1] = min(s[0], b.start_offset), max(s[1], b.next_offset)
        fenced: dict = {}
        for _ in range(COMMIT_TRIES):
            table = self._load()
            if table is not None:
                for tp, (start, _n) in spans.items():
                    have = table.transaction_version(app_id(self.context.group, *tp))
                    if have is not None and have != start:
                        fenced[tp] = have
            todo = [b for b in batches if (b.topic, b.partition) not in fenced]
            if not todo:
                break
            if self._commit(table, todo, {tp: s for tp, s in spans.items() if tp not in fenced}):
                break
        else:
            raise RetryableError(f"delta: {COMMIT_TRIES} commits to {self.uri} lost to concurrent writers")
        if fenced:
            raise OffsetConflict(fenced)

    def _commit(self, table, batches: list[Batch], spans: dict) -> bool:
        """One commit of ``batches``; False when another writer's commit touched our app ids."""
        from deltalake.exceptions import CommitFailedError
        txns = [self.dl.Transaction(app_id(self.context.group, t, p), nxt) for (t, p), (_s, nxt) in sorted(spans.items())]
        props = self.dl.CommitProperties(app_transactions=txns)
        have = dataset_schema(self.pa, self.pa.schema(table.schema().to_arrow())) if table is not None else {}
        data, deletes = self._data(batches, have)
        if table is None and not data.num_columns:
            # no table and no column to create one with: nothing to store; the group's Kafka
            # commit keeps the position until the first record creates the table
            return True
        try:
            if self.mode == "upsert" and table is not None and (data.num_rows or deletes is not None):
                before = table.version()
                self._merge(table, data, props)
                if table.version() == before:
                    # delta-rs commits nothing for a merge that changed no row (tombstones of
                    # absent keys): the offsets still need their commit
                    self.dl.write_deltalake(table, self.pa.schema(table.schema().to_arrow()).empty_table(),
                                            mode="append", commit_properties=props)
            else:
                if deletes is not None:
                    data = data.drop_columns([_DELETE]).filter(self.pa.compute.invert(deletes))
                self.dl.write_deltalake(table if table is not None else self.uri, data, mode="append",
                                        partition_by=self.partition_by if table is None else None,
                                        schema_mode="merge" if self.evolve == "add_columns" else None,
                                        storage_options=self.options or None if table is None else None,
                                        commit_properties=props)
        except CommitFailedError:
            return False
        except Exception as exc:
            if table is None and not isinstance(exc, OSError) and "already exists" in str(exc).lower():
                return False  # another writer created the table first
            raise self._classify("writing", exc) from None
        return True

    def _data(self, batches: list[Batch], have: dict):
        """The rows of ``batches`` as one Arrow table (upsert: the last record per key, with a
        delete flag for tombstones), checked against the table's schema record by record."""
        pa = self.pa
        values = [v for b in batches for v in b.values if v is not None]
        first = write_schema(pa, have, self.context.value_schema(), self.columns, values)
        plans = []  # per batch: its rows (a tombstone's: its key columns) and delete flags
        for b in batches:
            rows, dels, at = [], [], []  # at: each row's index in the batch
            for i, v in enumerate(b.values):
                if v is None:
                    if not all(k in first for k in self.key):
                        continue  # no table and no record typed its key yet: no row to delete
                    rows.append(self._key_row(b, i, first))
                    dels.append(True)
                    at.append(i)
                else:
                    if self.mode == "upsert" and not (isinstance(v, dict) and all(v.get(k) is not None for k in self.key)):
                        raise BadRecordError.in_batch(f"delta: upsert needs key field(s) {self.key} in every record", b, i)
                    rows.append(v)
                    dels.append(False)
                    at.append(i)
            plans.append((b, rows, dels, at))
        schema = first
        if self.evolve == "fail" and have and schema.keys() - have.keys():
            b, i = self._first_with(batches, schema.keys() - have.keys())
            raise BadRecordError.in_batch(f"delta: fields {sorted(schema.keys() - have.keys())} have no column "
                                          "(evolve: fail)", b, i)
        parts, flags = [], []
        for b, rows, dels, at in plans:
            try:
                parts.append(records_table(pa, schema, rows))
            except EncodeError as exc:
                raise BadRecordError.in_batch(f"delta: {exc}", b, at[exc.index]) from None
            flags.extend(dels)
        data = pa.concat_tables(parts, promote_options="default") if parts else pa.table({})
        if not data.num_columns:
            data = pa.schema([]).empty_table()
        if self.mode == "upsert" and data.num_rows:
            data, flags = self._last_per_key(data, flags)
        if not any(flags):
            return data, None
        mask = pa.array(flags, pa.bool_())
        return data.append_column(_DELETE, mask), mask

    def _first_with(self, batches, fields):
        for b in batches:
            for i, v in enumerate(b.values):
                if isinstance(v, dict) and fields & v.keys():
                    return b, i
        return batches[0], 0

    def _key_row(self, b: Batch, i: int, schema: dict) -> dict:
        key = b.keys[i]
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        if isinstance(key, dict) and all(k in key for k in self.key):
            return {k: key[k] for k in self.key}
        if len(self.key) == 1 and key is not None and not isinstance(key, (dict, list)):
            k = self.key[0]
            if schema.get(k) in _INTEGERS and isinstance(key, str) and key.strip().lstrip("-").isdigit():
                key = int(key)  # a key is often text: "42" is the key 42
            return {k: key}
        raise BadRecordError.in_batch(f"delta: a tombstone's key must give the key column(s) {self.key} (an object, "
                                      f"or a plain value for a one-column key; set key_deserializer), got {key!r}", b, i)

    def _last_per_key(self, data, flags):
        keys = list(zip(*(data.column(k).to_pylist() for k in self.key)))
        last = {k: i for i, k in enumerate(keys)}  # the highest offset wins
        keep = sorted(last.values())
        return data.take(keep), [flags[i] for i in keep]

    def _merge(self, table, data, props) -> None:
        cols = [c for c in data.column_names if c != _DELETE]
        q = lambda c: "`" + c.replace("`", "``") + "`"  # noqa: E731
        on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in self.key)
        if _DELETE not in data.column_names:
            data = data.append_column(_DELETE, self.pa.nulls(data.num_rows, self.pa.bool_()).fill_null(False))
        live = f"NOT s.{q(_DELETE)}"
        assign = {q(c): f"s.{q(c)}" for c in cols}
        (table.merge(data, on, source_alias="s", target_alias="t", merge_schema=self.evolve == "add_columns",
                     commit_properties=props)
         .when_matched_delete(predicate=f"s.{q(_DELETE)}")
         .when_matched_update(assign, predicate=live)
         .when_not_matched_insert(assign, predicate=live)
         .execute())

    # -- operator's moves and housekeeping -----------------------------------------------

    def alter_offsets(self, group, positions, expected) -> None:
        """One commit holding only txn actions, fenced like a write."""
        from deltalake.exceptions import CommitFailedError
        for _ in range(COMMIT_TRIES):
            table = self._load()
            found = {tp: (table.transaction_version(app_id(group, *tp)) if table is not None else None)
                     for tp in positions}
            moved = {tp: v for tp, v in found.items() if v != expected.get(tp)}
            if moved:
                raise OffsetConflict({tp: (-1 if v is None else v) for tp, v in moved.items()})
            if table is None:
                raise FatalError(f"delta: {self.uri} does not exist: no offsets to move")
            props = self.dl.CommitProperties(app_transactions=[
                self.dl.Transaction(app_id(group, t, p), v) for (t, p), v in sorted(positions.items())])
            empty = self.pa.schema(table.schema().to_arrow()).empty_table()
            try:
                self.dl.write_deltalake(table, empty, mode="append", commit_properties=props)
                return
            except CommitFailedError:
                continue
        raise RetryableError(f"delta: {COMMIT_TRIES} commits to {self.uri} lost to concurrent writers")

    def housekeep(self) -> None:
        table = self._load()
        if table is None:
            return
        version = table.version()
        # the last checkpoint this run wrote (-1 at start: a table with checkpoint_every versions
        # gets one right away, as a restart may follow many commits)
        last = -1 if self.last_checkpoint is None else self.last_checkpoint
        if self.checkpoint_every and version - last >= self.checkpoint_every:
            table.create_checkpoint()  # the txn actions go into it: offsets stay readable
            self.last_checkpoint = version
        if self.vacuum_hours is not None and time.monotonic() - self.last_vacuum >= VACUUM_EVERY:
            self.last_vacuum = time.monotonic()
            table.vacuum(retention_hours=int(self.vacuum_hours), dry_run=False, enforce_retention_duration=False)

    def revoke(self, partitions) -> None:
        pass

    def close(self) -> None:
        self.table = None

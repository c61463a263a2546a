"""The ``iceberg`` sink: each write is one Iceberg commit whose snapshot summary carries the
group's next offsets; the commit is a compare-and-set on the table's current snapshot."""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import pyarrow as pa

from kpipe.api import BadRecordError, Batch, FatalError, OffsetConflict, RetryableError, Sink
from kpipe.formats.dataset import parse_columns
from kpipe.sinks.tables import untyped
from kpipe.spec.units import parse_duration

from .catalog import load_table, open_catalog, transient
from .offsets import carriers, encode, stored_positions, summary_key
from .partition import transform
from .probe import probe_location, write_and_delete
from .rows import Rows
from .schema import EncodeError, arrow_schema, records_table, table_types, uuid_columns, write_types

from pyiceberg.exceptions import CommitFailedException, ValidationException  # noqa: E402  (catalog.py explains a missing extra)

__all__ = ["IcebergSink"]

COMMIT_ATTEMPTS = 20
HOUSEKEEP_EVERY = 300.0


class IcebergSink(Sink):
    catalog = None
    table = None

    def open(self) -> None:
        cfg = self.config
        self.identifier = cfg["table"]
        self.mode = cfg.get("mode", "append")
        self.key = list(cfg.get("key") or [])
        self.deletes = self.context.tombstones == "delete"
        if self.deletes and not self.key:
            raise FatalError("iceberg: tombstones: delete needs key: [...] (the columns a tombstone's key names)")
        self.columns = parse_columns(cfg.get("columns") or {})
        self._housekept = time.monotonic()
        if self.catalog is None:
            self.catalog = open_catalog(dict(cfg["catalog"]))
        self._reload()
        self._probe()

    def _probe(self) -> None:
        """Write and delete a file where the table's data files go, with the table's own FileIO:
        an unwritable warehouse fails at start (and in ``kpipe check``), not at the first batch.
        Nothing is committed, so the table gains no snapshot, and no reader sees the file."""
        where = None
        try:
            where = probe_location(self.catalog, self.table, self.identifier)
            if where is not None:
                write_and_delete(*where)
        except Exception as exc:
            doing = f"cannot write to {where[1]}" if where is not None else "finding the table's location"
            raise self._translate(exc, doing) from exc

    def _reload(self) -> None:
        try:
            self.table = load_table(self.catalog, self.identifier)
        except Exception as exc:
            raise self._translate(exc, "loading the table") from exc
        if self.table is None and not self.config.get("create_table", True):
            raise FatalError(f"iceberg table {self.identifier} does not exist and create_table is false")

    def _translate(self, exc: Exception, doing: str) -> Exception:
        if isinstance(exc, (RetryableError, FatalError, OffsetConflict, BadRecordError)):
            return exc
        if transient(exc):
            return RetryableError(f"iceberg {self.identifier}: {doing}: {exc}")
        return FatalError(f"iceberg {self.identifier}: {doing}: {type(exc).__name__}: {exc}")

    # -- offsets ------------------------------------------------------------------------

    def load_offsets(self, partitions):
        self._reload()
        if self.table is None:
            return {}
        stored = stored_positions(self.table, self.context.group)
        return {tp: stored[tp] for tp in partitions if tp in stored}

    def alter_offsets(self, group: str, positions: Mapping, expected: Mapping) -> None:
        for _ in range(COMMIT_ATTEMPTS):
            self._reload()
            if self.table is None:
                self._create({})
            stored = stored_positions(self.table, group)
            found = {tp: stored.get(tp) for tp in positions}
            if any(found[tp] != expected.get(tp) for tp in positions):
                raise OffsetConflict({tp: o for tp, o in found.items() if o is not None})
            if self._commit(pa.table({}), [], {**stored, **positions}, group):
                return
        raise RetryableError(f"iceberg {self.identifier}: {COMMIT_ATTEMPTS} commits in a row lost to other writers")

    # -- writing ------------------------------------------------------------------------

    def write(self, batches: Sequence[Batch]):
        rows = Rows(batches, key=self.key, upsert=self.mode == "upsert", deletes=self.deletes)
        deleted = rows.deleted
        for _ in range(COMMIT_ATTEMPTS):
            try:
                if self.table is None:
                    self._reload()
                data = self._arrow(rows)
                stored = stored_positions(self.table, self.context.group)
                ahead = {(b.topic, b.partition): stored[(b.topic, b.partition)] for b in batches
                         if stored.get((b.topic, b.partition), -1) > b.start_offset}
                mine = [b for b in batches if (b.topic, b.partition) not in ahead]
                if ahead:  # another writer got there first: write only the others' rows
                    keep = {(b.topic, b.partition) for b in mine}
                    mask = rows.mask(keep)
                    data = data.filter(pa.array(mask)) if data.num_rows else data
                    dels = [k for k, tp in deleted if tp in keep]
                else:
                    dels = [k for k, _ in deleted]
                positions = {**stored, **{(b.topic, b.partition): b.next_offset for b in mine}}
                if mine and not self._commit(data, dels, positions, self.context.group):
                    continue  # lost the compare-and-set: reload and look again
            except (OffsetConflict, BadRecordError, RetryableError, FatalError):
                raise
            except (CommitFailedException, ValidationException):  # a schema update lost a race, or a
                self._reload()                                    # concurrent delete: look again
                continue
            except Exception as exc:
                self.table = None  # the commit's outcome is unknown to us: reload before the next try
                raise self._translate(exc, "writing") from exc
            if ahead:
                raise OffsetConflict(ahead)
            return None
        raise RetryableError(f"iceberg {self.identifier}: {COMMIT_ATTEMPTS} commits in a row lost to other writers")

    def _arrow(self, rows):
        """The records as an Arrow table of the table's types, creating or evolving the table."""
        have = table_types(pa, self.table.schema()) if self.table is not None else {}
        types = write_types(have, self.context.value_schema(), self.columns, rows.values)
        uuids = uuid_columns(have, types, self.key)
        if self.table is None:
            self._create(types, uuids)
        elif types.keys() - have.keys():
            self._evolve(types, have, rows, uuids)
        try:
            return records_table(pa, types, rows.values, uuids)
        except EncodeError as exc:
            b, i = rows.where(exc.index)
            raise BadRecordError.in_batch(f"does not fit the iceberg table {self.identifier}: {exc}", b, i) from exc

    def _create(self, types: dict, uuids: set = frozenset()) -> None:
        ns = self.identifier.rsplit(".", 1)[0]
        self.catalog.create_namespace_if_not_exists(ns)
        schema = arrow_schema(pa, types, uuids)
        self.catalog.create_table_if_not_exists(self.identifier, schema=schema)
        self._reload()
        parts = self.config.get("partition_by") or []
        if parts and self.table.spec().is_unpartitioned() and all(p["field"] in types for p in parts):
            with self.table.update_spec() as update:  # the spec binds to the field ids the table assigned
                for p in parts:
                    update.add_field(p["field"], transform(p.get("transform", "identity")))
            self._reload()

    def _evolve(self, types: dict, have: dict, rows, uuids: set) -> None:
        new = [k for k in types if k not in have and not untyped(types[k])]
        if not new:
            return
        if self.config.get("evolve", "add_columns") == "fail":
            n = next(n for n, v in enumerate(rows.values) if any(k in v for k in new))
            b, i = rows.where(n)
            raise BadRecordError.in_batch(f"field(s) {new} have no column in iceberg table {self.identifier} "
                                          "and evolve is fail", b, i)
        with self.table.update_schema() as update:  # a schema-only commit: it adds no snapshot
            update.union_by_name(arrow_schema(pa, {k: types[k] for k in new}, uuids))
        self._reload()

    def _commit(self, data, dels: list, positions: dict, group: str) -> bool:
        """One Iceberg commit: delete ``dels``' rows, append ``data``, the summary holding the
        group's positions. False: another writer committed first (nothing of ours landed)."""
        from pyiceberg.expressions import And, EqualTo, In, Or

        props = {summary_key(group): encode(positions)}
        table = self.table
        # pyiceberg retries a lost append on top of the winner's snapshot; that would land a
        # fenced writer's rows. Our compare-and-set must fail instead: no retries (in memory only).
        table.metadata = table.metadata.model_copy(
            update={"properties": {**table.metadata.properties, "commit.retry.num-retries": "0"}})
        tx = table.transaction()
        if dels and all(k in table.schema().column_names for k in self.key):  # else no row has the key
            keys = sorted(set(dels), key=repr)
            if len(self.key) == 1:
                where = In(self.key[0], [k[0] for k in keys]) if len(keys) > 1 else EqualTo(self.key[0], keys[0][0])
            else:
                clauses = [And(*[EqualTo(c, v) for c, v in zip(self.key, k)]) for k in keys]
                where = clauses[0] if len(clauses) == 1 else Or(*clauses)
            tx.delete(where, snapshot_properties=props)
        tx.append(data.cast(_castable(data.schema, table.schema().as_arrow())) if data.num_columns else data,
                  snapshot_properties=props)
        try:
            tx.commit_transaction()
        except (CommitFailedException, ValidationException):  # nothing of this commit landed
            self._reload()
            return False
        return True

    # -- housekeeping -------------------------------------------------------------------

    def housekeep(self) -> None:
        if time.monotonic() - self._housekept < HOUSEKEEP_EVERY or self.table is None:
            return
        self._housekept = time.monotonic()
        self.expire_snapshots()

    def expire_snapshots(self) -> int:
        """Expire snapshots past ``keep_snapshots`` and older than ``max_snapshot_age``, except
        those carrying a group's current offsets. Returns how many."""
        age = self.config.get("max_snapshot_age", "24h")
        if age is None:
            return 0
        self._reload()
        keep_n = self.config.get("keep_snapshots", 100)
        cutoff_ms = (time.time() - parse_duration(age)) * 1000
        snaps = sorted(self.table.snapshots(), key=lambda s: s.timestamp_ms, reverse=True)
        keep = carriers(self.table) | {s.snapshot_id for s in snaps[:keep_n]}
        current = self.table.current_snapshot()
        if current is not None:
            keep.add(current.snapshot_id)
        old = [s.snapshot_id for s in snaps if s.snapshot_id not in keep and s.timestamp_ms < cutoff_ms]
        if old:
            self.table.maintenance.expire_snapshots().by_ids(old).commit()
            self._reload()
        return len(old)

    def close(self) -> None:
        self.table = None
        self.catalog = None


def _castable(have, want):
    """``have`` with each column in the table's Arrow type (string to large_string and the like)."""
    by_name = {f.name: f.type for f in want}
    return pa.schema([pa.field(f.name, by_name.get(f.name, f.type)) for f in have])


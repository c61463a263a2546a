"""The SQL sink: rows and their partitions' next offsets committed in one transaction.

PostgreSQL with psycopg 3 takes the fast path: COPY for inserts, COPY into a temporary table
then ``INSERT ... ON CONFLICT`` for upserts. Every other SQLAlchemy dialect (SQLite,
MySQL/MariaDB, ...) goes through Core ``executemany``.
"""
from __future__ import annotations

import itertools
import re
import time
from contextlib import contextmanager
from typing import NamedTuple, Sequence

import sqlalchemy as sa

from kpipe.api import (Batch, BadRecordError, FatalError, OffsetConflict, RetryableError, Sink,
                       SinkContext)

from . import offsets
from .columns import SQLITE_JSON, METADATA_TYPES, Column, infer_columns, json_type, schema_columns, sql_type
from .errors import is_data_error, is_database_error, is_retryable, is_schema_error
from .guard import delete_where, refuse_unbounded_writes
from .names import describe_limit, namer
from .rows import (CHUNK_CHARS, JsonText, coerce_key, copy_chunks, copy_text_lines, json_serializer, metadata_text,
                   param_rows)
from .server_parse import copy_pieces, negative_zero, plan

__all__ = ["SqlSink", "normalize_url"]

_DRIVER_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
PING_AFTER_IDLE = 1.0  # seconds a pooled connection may sit unused before a checkout pings it


def normalize_url(url: str) -> sa.engine.URL:
    """Parse the URL; a bare ``postgresql://`` means psycopg 3, the driver kpipe ships with."""
    parsed = sa.engine.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_transactions(engine: sa.Engine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, issue BEGIN: savepoints then work, and
    BEGIN IMMEDIATE takes the write lock up front so two writers serialize on the offsets."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _ping_when_idle(engine: sa.Engine, sink: "SqlSink") -> None:
    """``pool_pre_ping``, for connections that sat unused longer than ``sink.ping_after_idle``.

    A ping is a round trip, and the sink checks a connection out for every write: pinging one
    that committed a few milliseconds ago found nothing, and each round trip made the sink
    thread wait for the GIL again. A connection the server dropped while it was in use fails
    that write, which is retried (the pool discards the connection on a disconnect error)."""

    @sa.event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection, record):
        record.info["kpipe_used_at"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy):
        used = record.info.get("kpipe_used_at")
        if used is not None and time.monotonic() - used < sink.ping_after_idle:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None):
                raise sa.exc.DisconnectionError(str(exc)) from exc  # the pool reconnects
            raise


class _Redo(Exception):
    """A row the database rejected in a write without savepoints: roll back, write again
    with one around each insert, so the bad record can be narrowed inside the transaction."""


class _ClientPath(Exception):
    """``parse: server`` cannot write this batch exactly as the client path would: roll back,
    and write it through the client path."""


class _Unbatched(Exception):
    """The one offsets statement of a write did not move every partition (a zombie's write, or
    a partition's first): roll back, write again with a compare-and-set per partition."""


def _kpipe_type(sa_type) -> str:
    """The converter family for a reflected column type."""
    if isinstance(sa_type, sa.Boolean) or (isinstance(sa_type, sa.Integer)
                                            and getattr(sa_type, "display_width", None) == 1):
        return "boolean"  # MySQL's BOOLEAN reflects as TINYINT(1)
    if isinstance(sa_type, sa.Integer):
        return "bigint"
    if isinstance(sa_type, (sa.Float, sa.Numeric)):
        return "double"
    if isinstance(sa_type, sa.DateTime):
        return "timestamptz"
    if isinstance(sa_type, sa.Date):
        return "date"
    if isinstance(sa_type, sa.JSON):
        return "json"
    if isinstance(sa_type, sa.LargeBinary):
        return "bytes"
    return "text"


_JSON_VALID = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)", re.IGNORECASE)


def _row_bytes(row: dict, exact: bool) -> int:
    """The bytes of a row in an INSERT statement: a cheap upper bound (4 bytes a character), or
    the UTF-8 length with the quotes and backslashes escaped."""
    size = 0
    for v in row.values():
        t = type(v)
        if t is str or t is JsonText:  # a json column's value is its JSON text already
            size += len(v.encode()) + v.count("'") + v.count("\\") + 2 if exact else 4 * len(v)
        elif t is bytes:
            size += 2 * len(v) + 16
        else:
            size += 40
    return size


def _ddl_refused(exc: BaseException) -> bool:
    """CREATE or ALTER refused for the columns asked for (SQLAlchemy's own refusal of a blank
    or repeated name included), not for an outage or a permission."""
    if isinstance(exc, sa.exc.ArgumentError):
        return True
    return is_database_error(exc) and not is_retryable(exc) and is_schema_error(exc)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


class SqlSink(Sink):
    def __init__(self, config, context: SinkContext):
        super().__init__(config, context)
        self.url = normalize_url(config["url"])
        self.safe_url = self.url.render_as_string(hide_password=True)
        schema, _, name = config["table"].rpartition(".")
        self.schema, self.table_name = schema or None, name
        self.mode = config.get("mode", "insert")
        self.key = list(config.get("key") or [])   # field names; their columns: key_columns
        self.key_columns = self.key
        self.name_of = str                            # field name -> column name (names.py)
        self.declared = config.get("columns", "auto")
        self.create_table = config.get("create_table", True)
        self.evolve = config.get("evolve", "add_columns")
        self.metadata_names = list(config.get("metadata_columns") or [])
        self.metadata_set = frozenset(self.metadata_names)
        self.max_packet = 0                 # MySQL/MariaDB: the server's max_allowed_packet
        self.offsets_name = config.get("offsets_table", "kpipe_offsets")
        if "." not in self.offsets_name and self.schema:
            self.offsets_name = f"{self.schema}.{self.offsets_name}"
        self.pool_size = config.get("pool_size", 2)
        self.ping_after_idle = PING_AFTER_IDLE
        self.engine: sa.Engine | None = None
        self.table: sa.Table | None = None
        self.columns: list[Column] = []     # every column kpipe may write, in table order
        self.offsets: sa.Table | None = None
        self.fast = False                   # PostgreSQL + psycopg: COPY
        self.parse_server = config.get("parse") == "server"  # values come raw (server_parse.py)
        self._plans: dict = {}              # columns -> server_parse.Plan, or None: client path
        self.parsed_writes = 0              # writes PostgreSQL parsed (the rest: client path)
        self._stage = itertools.count()
        self.log = context.log
        self.deletes = context.tombstones == "delete"

    # -- connection and tables --------------------------------------------------------------

    def open(self) -> None:
        if self.engine is None:
            try:
                from . import connect  # timeouts and keepalives: every network wait is bounded
                connect_args = connect.connect_args(self.url, self.config)
                self.engine = sa.create_engine(self.url, pool_size=self.pool_size, connect_args=connect_args,
                                               json_serializer=json_serializer)
            except (ImportError, sa.exc.NoSuchModuleError) as exc:
                extra = _DRIVER_EXTRAS.get(self.url.get_backend_name())
                hint = f'; run: pip install "kpipe[{extra}]"' if extra else ""
                raise FatalError(f"no database driver for {self.url.drivername}: {exc}{hint}") from None
            self.fast = self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg"
            _ping_when_idle(self.engine, self)
            refuse_unbounded_writes(self.engine)
            if self.engine.dialect.name == "sqlite":
                _sqlite_transactions(self.engine)
                # reflect the json columns kpipe declares as json (their name gives TEXT affinity)
                dialect = self.engine.dialect
                dialect.ischema_names = {**dialect.ischema_names, SQLITE_JSON: sa.JSON}
        self._guard("connecting to", self._prepare)

    def _guard(self, doing: str, fn, *args):
        """Run ``fn``, turning database exceptions into kpipe's taxonomy, password redacted."""
        try:
            return fn(*args)
        except (BadRecordError, OffsetConflict, FatalError, RetryableError):
            raise
        except Exception as exc:
            if not is_database_error(exc):
                raise
            msg = f"{doing} {self.safe_url}: {_first_line(exc)}"
            if is_retryable(exc):
                raise RetryableError(msg) from None
            raise FatalError(msg) from None

    def _prepare(self) -> None:
        if self.deletes and self.mode != "upsert":
            raise FatalError(f"tombstones: delete needs mode: upsert with a key (table {self.table_name})")
        if self.parse_server and not self.fast:
            raise FatalError(f"parse: server needs PostgreSQL through psycopg, not {self.url.drivername} "
                             f"(table {self.table_name})")
        dialect = self.engine.dialect.name
        self.name_of = namer(dialect)
        self.key_columns = [self.name_of(k) for k in self.key]
        if self.name_of(self.table_name) != self.table_name:
            raise FatalError(f"table name {self.table_name!r} is longer than {dialect} allows "
                             f"({describe_limit(dialect)})")
        if self.declared != "auto":
            clash = [n for n in self.declared if self.name_of(n) in self.metadata_set]
            if clash:
                raise FatalError(f"columns: declares {clash}, also in metadata_columns; "
                                 f"rename the declared column (table {self.table_name})")
        if dialect in ("mysql", "mariadb"):
            with self.engine.connect() as conn:  # a larger row would make the server hang up
                self.max_packet = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar())
        meta = sa.MetaData()
        self.offsets = offsets.offsets_table(self.offsets_name, meta)
        self._create(self.offsets)
        self._reflect()
        if self.table is None and self.declared != "auto":
            self._create_target(self._declared_columns())

    def _declared_columns(self) -> list[Column]:
        cols = [Column(self.name_of(name), spec["type"], tuple(spec.get("from", name).split(".")),
                       spec.get("nullable", True)) for name, spec in self.declared.items()]
        return cols + [Column(m, METADATA_TYPES[m]) for m in self.metadata_names]

    def _reflect(self) -> None:
        """Load the target table's columns, if it exists."""
        try:
            table = sa.Table(self.table_name, sa.MetaData(), schema=self.schema, autoload_with=self.engine)
        except sa.exc.NoSuchTableError:
            self.table = None
            return
        self.table = table
        self._mariadb_json(table)
        for c in table.columns:  # bind None as SQL NULL, and kpipe's JSON text as it is
            if isinstance(c.type, sa.JSON):
                c.type = json_type()
        meta = set(self.metadata_names)
        declared = {c.name: c for c in self._declared_columns()} if self.declared != "auto" else {}
        cols = []
        for c in table.columns:
            if c.name in declared:
                cols.append(declared[c.name])
            elif c.name in meta:
                cols.append(Column(c.name, METADATA_TYPES[c.name]))
            elif self.declared == "auto":
                # the field is c.name unless c.name is a mapped long name: _columns_for knows
                cols.append(Column(c.name, _kpipe_type(c.type), (c.name,), c.nullable))
        missing = [k for k in self.key_columns if k not in table.columns]
        if missing:
            raise FatalError(f"table {self._qualified()} has no key column(s) {missing}")
        absent = [m for m in self.metadata_names if m not in table.columns]
        if absent:
            self._add_columns([Column(m, METADATA_TYPES[m]) for m in absent])
            return self._reflect()
        self.columns = cols

    def _mariadb_json(self, table: sa.Table) -> None:
        """MariaDB's JSON is LONGTEXT with a ``json_valid`` CHECK and reflects as LONGTEXT: give
        such a column its JSON type back, so a value is stored as JSON (the string "123" as
        ``"123"``, not 123) after a restart as on the first run."""
        if not getattr(self.engine.dialect, "is_mariadb", False):
            return
        with self.engine.connect() as conn:
            checks = conn.execute(sa.text(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                "WHERE CONSTRAINT_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :t"),
                {"s": self.schema, "t": self.table_name}).scalars().all()
        for clause in checks:
            m = _JSON_VALID.fullmatch(clause.strip())
            if m:
                name = m.group(1).replace("``", "`")
                if name in table.c and isinstance(table.c[name].type, sa.String):
                    table.c[name].type = sa.JSON()

    def _qualified(self) -> str:
        return f"{self.schema}.{self.table_name}" if self.schema else self.table_name

    def _create(self, table: sa.Table) -> None:
        """CREATE TABLE in a transaction of its own (MySQL commits DDL implicitly anyway)."""
        try:
            with self.engine.begin() as conn:
                table.create(conn, checkfirst=True)
        except (sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.OperationalError) as exc:
            # Another instance created it between our check and our CREATE.
            if not sa.inspect(self.engine).has_table(table.name, schema=table.schema):
                raise
            self.log and self.log.debug("table %s appeared concurrently: %s", table.name, _first_line(exc))

    def _create_target(self, cols: list[Column]) -> None:
        if not self.create_table:
            raise FatalError(f"table {self._qualified()} does not exist and create_table is false")
        keys = set(self.key_columns) if self.mode == "upsert" else set()
        table = sa.Table(self.table_name, sa.MetaData(), *[
            sa.Column(c.name, sql_type(c.type), primary_key=c.name in keys, autoincrement=False,
                      nullable=c.nullable and c.name not in keys) for c in cols], schema=self.schema)
        self._create(table)
        self.log and self.log.info("created table %s (%s)", self._qualified(),
                                   ", ".join(f"{c.name} {c.type}" for c in cols))
        self._reflect()

    def _add_columns(self, cols: list[Column]) -> None:
        """ALTER TABLE ... ADD COLUMN, nullable; never drop or retype. All of ``cols`` at once
        (one statement; on SQLite one transaction), so a set the table cannot take adds none.
        Own transaction (MySQL commits DDL implicitly, so it must never share the data's)."""
        if not cols:
            return
        prep = self.engine.dialect.identifier_preparer
        target = self._quoted()
        adds = [f"ADD COLUMN {prep.quote(c.name)} {sql_type(c.type).compile(dialect=self.engine.dialect)}"
                for c in cols]
        ddls = ([f"ALTER TABLE {target} {a}" for a in adds] if self.engine.dialect.name == "sqlite"
                else [f"ALTER TABLE {target} " + ", ".join(adds)])
        try:
            with self.engine.begin() as conn:
                for ddl in ddls:
                    conn.exec_driver_sql(ddl)
        except sa.exc.SQLAlchemyError:
            existing = {x["name"] for x in sa.inspect(self.engine).get_columns(self.table_name, schema=self.schema)}
            missing = [c for c in cols if c.name not in existing]
            if len(missing) == len(cols):  # not a race with another instance: a real failure
                raise
            return self._add_columns(missing)  # another instance added some of them meanwhile
        self.log and self.log.info("added column(s) %s to %s", ", ".join(f"{c.name} {c.type}" for c in cols),
                                   self._qualified())

    # -- the Sink contract -------------------------------------------------------------------

    def load_offsets(self, partitions):
        def load():
            with self.engine.connect() as conn:
                return offsets.load(conn, self.offsets, self.context.group, partitions)
        return self._guard("reading offsets from", load)

    def alter_offsets(self, group, positions, expected) -> None:
        from .alter import alter_offsets
        self._guard("moving offsets in", alter_offsets, self.engine, self.offsets, group, positions, expected)

    def write(self, batches: Sequence[Batch]) -> None:
        batches = [b for b in batches if b.next_offset > b.start_offset]
        if not batches:
            return
        self._guard("writing to", self._write, batches)

    def _write(self, batches: list[Batch]) -> None:
        if self.parse_server:  # the values are the raw JSON (SinkPlugin.raw_values)
            if self._write_parsed(batches):
                return
            batches = [_decoded(b) for b in batches]  # the client path decides
        # Each batch is zero or more parts applied in offset order: runs of rows, and runs of
        # tombstones (deletions) when `tombstones: delete`. A batch without records (all
        # filtered, skipped or dead-lettered) has no part: its write only moves the offset.
        plans = [(b, self._parts(b)) for b in batches]
        # Everything kpipe itself can find wrong with a record, found before the transaction
        # and in offset order: id(part) -> (its columns, its payload), or the DELETE's params.
        prepared = {}
        for b, parts in plans:
            for p in parts:
                with _in(b, p.base):
                    prepared[id(p)] = self._prepare_rows(p.batch) if p.rows else self._delete_params(p.batch)
        # Savepoints cost two round trips per insert; they are only needed to narrow a data
        # error down, so the first try goes without them. One offsets statement for all the
        # partitions, unless it finds one that did not move as expected. Each retry turns one
        # of the two off, so there are three tries at most.
        careful = False
        batched = len({(b.topic, b.partition) for b in batches}) == len(batches)
        while True:
            try:
                conflicts = self._transaction(plans, prepared, careful, batched)
                break
            except _Redo:
                careful = True
            except _Unbatched:
                batched = False
        if conflicts:
            raise OffsetConflict(conflicts)

    def _prepare_rows(self, part: Batch) -> tuple:
        cols = self._columns_for(part)
        payload = self._payload(part, cols)
        if self.max_packet and payload:
            self._check_packet(part, cols, payload)
        return cols, payload

    def _check_packet(self, part: Batch, cols, rows: list[dict]) -> None:
        """MySQL/MariaDB: a row whose INSERT exceeds max_allowed_packet makes the server drop the
        connection, which looks like an outage and would be retried forever: a bad record."""
        room = self.max_packet - 1024 - sum(len(c.name.encode()) + 8 for c in cols) - len(self.table_name) * 2
        for i, row in enumerate(rows):
            if _row_bytes(row, exact=False) <= room:
                continue
            size = _row_bytes(row, exact=True)
            if size > room:
                raise BadRecordError.in_batch(
                    f"{self._qualified()}: the row is about {size} bytes, more than the server's "
                    f"max_allowed_packet ({self.max_packet} bytes)", part, i)

    def _parts(self, b: Batch) -> list["_Part"]:
        if not b.values:
            return []
        if self.deletes and None in b.values:
            return _split_tombstones(b)
        return [_Part(b, 0, True)]

    def _transaction(self, plans, prepared: dict, careful: bool, batched: bool) -> dict:
        """Move the offsets and apply the parts, in one transaction; returns the conflicts.

        ``batched``: one offsets statement, or ``_Unbatched``. Not ``careful``: consecutive parts
        with the same columns go in one insert (one COPY), and a data error rolls everything
        back and raises ``_Redo``."""
        with self.engine.begin() as conn:
            live, conflicts = self._advance(conn, plans, batched)
            if careful:
                for b, parts in live:
                    for p in parts:
                        with _in(b, p.base):
                            if p.rows:
                                self._insert_checked(conn, p.batch, *prepared[id(p)])
                            else:
                                self._delete(conn, prepared[id(p)])
                return conflicts
            for rows, cols, payloads in self._runs(live, prepared):
                if not rows:
                    self._delete(conn, payloads)
                    continue
                try:
                    # COPY's pieces are joined only as they are sent (rows.CopyPieces)
                    self._insert(conn, cols, itertools.chain.from_iterable(payloads) if self.fast else
                                 [r for p in payloads for r in p])
                except Exception as exc:  # SQLAlchemy's, or psycopg's from the raw COPY
                    if is_data_error(exc):
                        raise _Redo() from exc
                    raise
        return conflicts

    def _advance(self, conn, plans: list, batched: bool) -> tuple[list, dict]:
        """Move the offsets of ``plans`` ((batch, anything) pairs); returns the pairs whose batch
        is to be written and the conflicts. ``batched``: one statement, or ``_Unbatched``."""
        group = self.context.group
        if batched:
            moves = [(b.topic, b.partition, b.start_offset, b.next_offset) for b, _ in plans]
            if not offsets.advance_all(conn, self.offsets, group, moves):
                raise _Unbatched()
            return plans, {}
        live, conflicts = [], {}
        for b, parts in plans:
            found = offsets.compare_and_set(conn, self.offsets, group, b.topic, b.partition,
                                            b.start_offset, b.next_offset)
            if found is not None:
                conflicts[(b.topic, b.partition)] = found
            else:
                live.append((b, parts))
        return live, conflicts

    # -- parse: server (server_parse.py) ---------------------------------------------------

    def _write_parsed(self, batches: list[Batch]) -> bool:
        """Write ``batches`` (raw JSON values) with PostgreSQL parsing them; False, with nothing
        written, when the client path must write them instead."""
        if self.table is None or any(None in b.values for b in batches):
            return False  # the client path creates the table from the values
        batched = len({(b.topic, b.partition) for b in batches}) == len(batches)
        while True:
            try:
                with self.engine.begin() as conn:
                    found = self._parsed_plan(conn)
                    if found is None or (found.doubles and any(negative_zero(b.values) for b in batches)):
                        return False
                    live, conflicts = self._advance(conn, [(b, None) for b in batches], batched)
                    rows = [b for b, _ in live if b.values]
                    if rows:
                        self._insert_parsed(conn, found, rows)
                break
            except _Unbatched:
                batched = False
            except (_ClientPath, ValueError, TypeError, OverflowError):
                return False  # ValueError...: a metadata value that does not fit (a Kafka timestamp
                # past year 9999); the client path reports its record
            except Exception as exc:  # a value the server would not take as the client does
                if not is_data_error(exc):
                    raise
                self.log and self.log.debug("parse: server: %s; writing through the client path",
                                            _first_line(exc))
                return False
        self.parsed_writes += 1
        if conflicts:
            raise OffsetConflict(conflicts)
        return True

    def _parsed_plan(self, conn):
        """The server_parse.Plan for the table's columns now, or None (cached per columns)."""
        key = tuple(self.columns)
        if key not in self._plans:
            rows = conn.exec_driver_sql(
                "SELECT attname, format_type(atttypid, atttypmod), atthasdef OR attidentity <> '' "
                "OR attgenerated <> '' FROM pg_attribute WHERE attrelid = to_regclass(%(t)s) "
                "AND attnum > 0 AND NOT attisdropped", {"t": self._quoted()}).all()
            types = {name: pg for name, pg, _ in rows}
            defaults = {name for name, _, has in rows if has}
            self._plans[key] = plan(self._quoted(), self.columns, types, defaults, self.declared == "auto")
        return self._plans[key]

    def _insert_parsed(self, conn, found, batches: list[Batch]) -> None:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(found.create)
            staged = 0
            with cur.copy(found.copy) as cp:
                for b in batches:
                    meta = [metadata_text(b, name) for name in found.meta]
                    for piece in copy_pieces(b.values, meta, CHUNK_CHARS):
                        cp.write(piece)
                    staged += len(b.values)
            cur.execute(found.insert)
            if cur.rowcount != staged:
                raise _ClientPath()  # a field with no column yet, or a value that is no object

    def _quoted(self) -> str:
        prep = self.engine.dialect.identifier_preparer
        return prep.format_table(sa.table(self.table_name, schema=self.schema))

    def _runs(self, plans, prepared: dict):
        """The parts in offset order as (rows?, columns, payload): in insert mode, consecutive
        parts of rows with the same columns joined into one insert. An upsert keeps a statement
        per part: it drops a key's earlier rows of its statement unseen, and a bad row dropped
        for a row of another partition would go unreported only because of how writes fell."""
        run = None
        for _b, parts in plans:
            for p in parts:
                if not p.rows:
                    if run:
                        yield run
                    run = None
                    yield False, None, prepared[id(p)]
                    continue
                cols, payload = prepared[id(p)]
                if run and self.mode == "insert" and run[1] == cols:
                    run[2].append(payload)  # COPY pieces, or parameter rows
                else:
                    if run:
                        yield run
                    run = (True, cols, [payload])
        if run:
            yield run

    def _delete_params(self, part: Batch) -> list[dict]:
        """The DELETE's parameters for a part of tombstones: one per tombstone, its whole key."""
        if self.table is None:
            if self.declared == "auto":
                return []  # no table yet, so no row to delete
            self._reflect()
        types = {c.name: c for c in self.columns}
        key_columns = [types.get(c) for c in self.key_columns]
        return [self._key_params(key, key_columns, part, i) for i, key in enumerate(part.keys)]

    def _delete(self, conn, params: list[dict]) -> None:
        """Tombstones: delete the rows their keys name; the only DELETE the sink builds."""
        if not params:
            return
        stmt = delete_where(self.table, [self.table.c[c] == sa.bindparam(f"k{n}")
                                         for n, c in enumerate(self.key_columns)])
        conn.execute(stmt, params)

    def _key_params(self, key, key_columns: list, part: Batch, i: int) -> dict:
        """A tombstone's key as the DELETE's parameters, each converted to its column's type
        exactly (``"1abc"`` is no bigint: a data error, not key 1)."""
        if isinstance(key, dict) and all(k in key for k in self.key):
            values = [key[k] for k in self.key]
        elif len(self.key) == 1 and key is not None and not isinstance(key, (dict, list)):
            values = [key.decode() if isinstance(key, bytes) else key]
        else:
            raise BadRecordError.in_batch(
                f"a tombstone's key must give the key column(s) {self.key} (an object, or a plain "
                f"value for a one-column key; set key_deserializer), got {key!r}", part, i)
        try:
            return {f"k{n}": coerce_key(c, v) for n, (c, v) in enumerate(zip(key_columns, values))}
        except (ValueError, TypeError, OverflowError) as exc:
            raise BadRecordError.in_batch(f"a tombstone's key does not fit its column: {exc}", part, i) from exc

    def _columns_for(self, b: Batch) -> list[Column]:
        """The columns a part of rows writes; creates or evolves the table first when needed."""
        if self.declared != "auto":
            if self.table is None:
                self._reflect()
            return self.columns
        fields = set().union(*(v for v in b.values if type(v) is dict))
        if self.metadata_set and not self.metadata_set.isdisjoint(fields):
            self._metadata_clash(b)
        named = {self.name_of(f): f for f in fields}  # column -> field
        known = {c.name for c in self.columns}
        if named.keys() - known or self.table is None:  # no table yet: even records of no fields make one
            self._evolve(b, {f for n, f in named.items() if n in known})
        # self.columns is in table order; metadata columns are written for every record. A
        # reflected column under a mapped name learns its field here.
        return [c if not c.path or c.path[0] == named[c.name] else Column(c.name, c.type, (named[c.name],), c.nullable)
                for c in self.columns if not c.path or c.name in named]

    def _metadata_clash(self, b: Batch) -> None:
        """A record with a field named like one of the metadata columns: which value would the
        column hold? Neither silently: the record is bad."""
        for i, v in enumerate(b.values):
            if type(v) is dict and not self.metadata_set.isdisjoint(v):
                clash = sorted(self.metadata_set.intersection(v))
                raise BadRecordError.in_batch(
                    f"field(s) {clash} clash with metadata_columns of {self._qualified()}; rename "
                    f"the field(s) with a transform, or drop them from metadata_columns", b, i)

    def _evolve(self, b: Batch, known: set) -> None:
        """Create the table, or add the columns for the fields of ``b`` not in ``known``.

        DDL the table cannot take (a name it refuses, a name equal to another but for case, too
        many columns) is the fault of a record: the records are then tried one at a time, in
        offset order, and the first whose fields fail is the bad record."""
        try:
            self._evolve_for(b, b.values, known, 0)
        except (BadRecordError, FatalError, RetryableError, OffsetConflict):
            raise
        except Exception as exc:
            if not _ddl_refused(exc):
                raise
            self._evolve_each(b)

    def _evolve_each(self, b: Batch) -> None:
        self._reflect()  # what the failed DDL left, if anything
        for i, v in enumerate(b.values):
            if type(v) is not dict:
                continue
            have = {c.name for c in self.columns}
            named = {self.name_of(f): f for f in v}
            if self.table is not None and named.keys() <= have:
                continue
            try:
                self._evolve_for(b, [v], {f for n, f in named.items() if n in have}, i)
            except (BadRecordError, FatalError, RetryableError, OffsetConflict):
                raise
            except Exception as exc:
                if not _ddl_refused(exc):
                    raise
                raise BadRecordError.in_batch(f"{self._qualified()} cannot take this record's field(s): "
                                              f"{_first_line(exc)}", b, i) from (getattr(exc, "orig", None) or exc)

    def _evolve_for(self, b: Batch, values: list, known: set, at: int) -> None:
        """``_evolve`` for ``values``, the records of ``b`` from index ``at``."""
        # A new table follows the deserializer's schema (Avro, or the validating JSON Schema)
        # when there is one, so its types do not depend on what the first batch happened to hold.
        declared = schema_columns(self.context.value_schema()) if self.table is None else None
        if declared:
            names = {c.name for c in declared}
            clash = sorted(names & self.metadata_set)
            if clash:
                raise FatalError(f"the value schema has field(s) {clash}, also in metadata_columns "
                                 f"(table {self._qualified()})")
            new_cols = declared + [c for c in infer_columns(values, known | names)]
        else:
            new_cols = infer_columns(values, known)
        keys = set(self.key_columns)
        # Columns under names that fit; MySQL/MariaDB cannot index TEXT without a prefix
        # length, so key columns get a varchar.
        new_cols = [Column(name, "varchar(255)" if name in keys and c.type == "text" else c.type, c.path, c.nullable)
                    for c in new_cols for name in [self.name_of(c.name)]]
        if self.table is None:
            cols = new_cols + [Column(m, METADATA_TYPES[m]) for m in self.metadata_names]
            if not cols:  # records of no fields ({}), and nothing else to make a column of
                raise BadRecordError.in_batch(
                    f"table {self._qualified()} does not exist and this record has no field to create a "
                    f"column from; declare columns, set metadata_columns, or let a record with fields come "
                    f"first", b, at)
            missing_keys = [k for k, n in zip(self.key, self.key_columns) if n not in {c.name for c in cols}]
            if missing_keys:
                raise BadRecordError.in_batch(f"key field(s) {missing_keys} missing from the records", b, at)
            self._create_target(cols)
            return
        if self.evolve != "add_columns":
            fields = {c.path[0] for c in new_cols}
            for i, v in enumerate(values):
                if type(v) is dict and fields.intersection(v):
                    raise BadRecordError.in_batch(f"field(s) {sorted(fields.intersection(v))} have no column "
                                                  f"in {self._qualified()} and evolve is fail", b, at + i)
        self._add_columns(new_cols)
        self._reflect()

    def _payload(self, b: Batch, cols: list[Column]):
        if not b.values:
            return None
        if self.fast:  # the COPY text; upserts number the rows, so the last of a key wins
            return copy_chunks(b, cols, seq=self.mode == "upsert")
        return param_rows(b, cols)

    # -- writing rows, and narrowing a data error to its record -------------------------------

    def _insert_checked(self, conn, b: Batch, cols, payload) -> None:
        try:
            with conn.begin_nested():
                self._insert(conn, cols, payload)
            return
        except Exception as exc:  # SQLAlchemy's, or psycopg's own from the raw COPY connection
            if not is_data_error(exc):
                raise  # _guard sorts it into retryable or fatal
            first_error = exc
        index, error = self._narrow(conn, cols, payload, first_error)
        # the driver's exception stays the cause: the dead letter's kpipe.error.class names it
        raise BadRecordError.in_batch(f"{self._qualified()}: {_first_line(error)}", b, index) \
            from (getattr(error, "orig", None) or error)

    def _narrow(self, conn, cols, payload, error):
        """Binary search for the shortest failing prefix: its last record is the bad one."""
        rows = copy_text_lines(payload) if self.fast else payload
        ok, bad = 0, len(rows)
        while bad - ok > 1:
            mid = (ok + bad) // 2
            try:
                with conn.begin_nested() as sp:
                    self._insert(conn, cols, ["".join(rows[:mid])] if self.fast else rows[:mid])
                    sp.rollback()  # only testing
                ok = mid
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                bad, error = mid, exc
        return bad - 1, error

    def _insert(self, conn, cols: list[Column], payload) -> None:
        if self.fast:
            self._copy(conn, cols, payload)
        elif self.mode == "upsert":
            self._upsert_generic(conn, cols, payload)
        else:
            conn.execute(self.table.insert(), payload)

    def _copy(self, conn, cols, chunks: list[str]) -> None:
        from psycopg import sql

        raw = conn.connection.driver_connection
        target = sql.Identifier(*([self.schema] if self.schema else []), self.table_name)
        names = sql.SQL(", ").join(sql.Identifier(c.name) for c in cols)
        with raw.cursor() as cur:
            if self.mode != "upsert":
                with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, names)) as cp:
                    _send(cp, chunks)
                return
            stage = sql.Identifier(f"kpipe_stage_{next(self._stage)}")
            cur.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                        .format(stage, names, target))
            cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN kpipe_seq bigint").format(stage))
            with cur.copy(sql.SQL("COPY {} ({}, kpipe_seq) FROM STDIN").format(stage, names)) as cp:
                _send(cp, chunks)  # its last column numbers the rows
            keys = sql.SQL(", ").join(sql.Identifier(k) for k in self.key_columns)
            updates = [sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c.name), sql.Identifier(c.name))
                       for c in cols if c.name not in self.key_columns]
            action = (sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(updates)) if updates else sql.SQL("DO NOTHING")
            # DISTINCT ON keeps the row from the highest offset when a key repeats in the batch,
            # so ON CONFLICT never meets the same key twice in one statement.
            cur.execute(sql.SQL("INSERT INTO {t} ({n}) SELECT DISTINCT ON ({k}) {n} FROM {s} "
                                "ORDER BY {k}, kpipe_seq DESC ON CONFLICT ({k}) ")
                        .format(t=target, n=names, k=keys, s=stage) + action)
            cur.execute(sql.SQL("DROP TABLE {}").format(stage))

    def _upsert_generic(self, conn, cols, rows: list[dict]) -> None:
        # Last write wins inside the batch too: keep each key's row from the highest offset.
        latest = {tuple(r[k] for k in self.key_columns): r for r in rows}
        rows = list(latest.values())
        dialect = self.engine.dialect.name
        names = [c.name for c in cols if c.name not in self.key_columns]
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
            stmt = insert(self.table)
            stmt = (stmt.on_conflict_do_update(index_elements=self.key_columns, set_={n: stmt.excluded[n] for n in names})
                    if names else stmt.on_conflict_do_nothing(index_elements=self.key_columns))
        elif dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert
            stmt = insert(self.table)
            stmt = stmt.on_duplicate_key_update({n: stmt.inserted[n] for n in names or self.key_columns[:1]})
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
            stmt = insert(self.table)
            stmt = (stmt.on_conflict_do_update(index_elements=self.key_columns, set_={n: stmt.excluded[n] for n in names})
                    if names else stmt.on_conflict_do_nothing(index_elements=self.key_columns))
        else:
            raise FatalError(f"mode: upsert is not supported on {dialect}; use mode: insert")
        conn.execute(stmt, rows)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None


def _send(cp, chunks) -> None:
    """COPY's data a piece of about ``CHUNK_CHARS`` at a time: one piece's text and bytes in
    memory at once, not the whole text's (``chunks`` is lazy: rows.CopyPieces); the small pieces
    of many partitions' batches are joined first, so a write of 512 small batches is a few
    sends, not 512."""
    run, size = [], 0
    for chunk in chunks:
        run.append(chunk)
        size += len(chunk)
        del chunk
        if size >= CHUNK_CHARS:
            cp.write(_encoded(run))
            size = 0
    if run:
        cp.write(_encoded(run))


def _encoded(run: list[str]) -> bytes:
    """``run``'s texts as one UTF-8 text, emptying ``run`` so that only the bytes stay alive."""
    text = run[0] if len(run) == 1 else "".join(run)
    run.clear()
    return text.encode()


def _decoded(b: Batch) -> Batch:
    """``b`` with its raw JSON values decoded by the json deserializer (the runner checked them
    with it: none fails)."""
    from kpipe.deserializers.basic import JsonDeserializer

    values = JsonDeserializer({}).deserialize(b.values)
    return Batch(b.topic, b.partition, b.start_offset, b.next_offset, values, b._messages, b.nbytes, b._keys)


class _Part(NamedTuple):
    """Consecutive records of a batch that are all rows or all tombstones."""
    batch: Batch   # the records, as a batch of their own
    base: int      # the index of its first record in the whole batch
    rows: bool     # rows to write, or tombstones to delete


def _split_tombstones(b: Batch) -> list[_Part]:
    """``b`` as consecutive parts that are all rows or all tombstones, in offset order."""
    parts, start = [], 0
    values, msgs, keys = b.values, b._messages, b.keys
    for i in range(1, len(values) + 1):
        if i == len(values) or (values[i] is None) != (values[start] is None):
            part = Batch(b.topic, b.partition, msgs[start].offset(), msgs[i - 1].offset() + 1,
                         values[start:i], msgs[start:i], 0, keys[start:i])
            parts.append(_Part(part, start, values[start] is not None))
            start = i
    return parts


@contextmanager
def _in(batch: Batch, base: int):
    """Re-point a BadRecordError raised for a part (record ``i`` of the part) at the whole batch
    the runner knows (record ``base + i``), keeping the database's exception as its cause."""
    try:
        yield
    except BadRecordError as exc:
        raise BadRecordError.in_batch(str(exc), batch, base + exc.index) from (exc.__cause__ or exc)

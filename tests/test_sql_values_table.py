"""The value table of the SQL sinks (kpipe/sinks/sql/value_table.py, shown in "How values land"
of docs/sinks/postgres.md), checked cell by cell: every value of every row goes through the real
sink into a column of each type kpipe creates, on PostgreSQL, MariaDB and SQLite, and is read
back with the database's own driver (psycopg, pymysql, sqlite3), not through kpipe. Each value
reads back as its cell says, or was reported a bad record exactly once at its own index."""
from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal

import pytest

from kpipe.sinks.sql.value_table import TABLE
from kpipe.value_table import MISSING, disagreements, json_form
from sqlkit import dbs, fake_batch, sink_on, write_like_runner  # noqa: F401


def matches(kind: str, typ: str, raw, want) -> bool:
    """Whether ``raw``, what the driver returned, is the table's ``want``."""
    if want is None or raw is None:
        return want is None and raw is None
    if typ == "bigint":
        return type(raw) is int and raw == want
    if typ == "double":
        return type(raw) is float and raw == want and math.copysign(1, raw) == math.copysign(1, want)
    if typ == "boolean":  # MariaDB's BOOL is TINYINT(1), SQLite has no booleans: 0 and 1
        return (type(raw) is bool if kind == "postgres" else raw in (0, 1)) and bool(raw) is want
    if typ == "text":
        return type(raw) is str and raw == want
    if typ == "json":  # the stored text, parsed; a number stored as a number (affinity) fails
        return type(raw) is str and json_form(json.loads(raw, parse_float=Decimal, parse_int=Decimal)) == json_form(want)
    if typ == "timestamptz":  # SQLite: text; SQLite and MariaDB's DATETIME(6): the UTC wall clock
        when = dt.datetime.fromisoformat(raw) if type(raw) is str else raw
        return type(when) is dt.datetime and (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)) == want
    raise ValueError(typ)


def raw_rows(db, table: str, typ: str) -> dict:
    """{id: v} through the DB-API driver itself (psycopg, pymysql, sqlite3)."""
    col = f"{db.q('v')}::text" if typ == "json" and db.kind == "postgres" else db.q("v")
    return dict(db.driver_rows(f"SELECT id, {col} FROM {db.q(table)}"))


@pytest.mark.parametrize("typ", TABLE.columns)
@pytest.mark.parametrize("kind", TABLE.dialects)
def test_values_land_as_the_table_says(dbs, kind, typ):
    db = dbs(kind)
    table, group = db.table("vt"), db.group("vt")
    cases = [c for c in TABLE.cases() if c.dialect == kind and c.column == typ]
    items = [(i, i, {"id": i} if c.value is MISSING else {"id": i, "v": c.value}) for i, c in enumerate(cases)]
    config = {"columns": {"id": {"type": "bigint"}, "v": {"type": typ}}}
    with sink_on(db, table, group, **config) as sink:
        rejected = write_like_runner(sink, [fake_batch(0, len(items), items)], max_rejects=len(items) + 1)
    assert len(rejected) == len(set(rejected)), f"a record reported twice: {rejected}"
    bad = {o for _, _, o in rejected}
    rows = raw_rows(db, table, typ)
    wrong = disagreements(cases, bad, rows, lambda read, expect: matches(kind, typ, read, expect),
                          label=lambda c: f"{c.row.label} ")
    assert not wrong, "\n".join(wrong)
    assert db.offsets(group) == {("orders", 0): len(items)}

"""Property test of hostile values in the SQL sinks (issue 14): arbitrary JSON-like values
(integers past 64 bits, NaN, infinities, -0.0, NUL, lone surrogates, nesting) written through
the sink, as the runner does it (``write_like_runner``: reported records are dropped and the
rest written again), into SQLite, PostgreSQL and MariaDB, for a json column, auto-inferred
columns, and declared bigint / boolean / double / timestamptz / text columns.

Besides JSON's values, the values a deserializer or a transform hands over: Decimal (Avro's
decimal), bytes, UTC datetimes (Avro's timestamps) and sets of integers (a python transform).

Invariant: ``write`` raises nothing but ``BadRecordError``; every record either reads back
(with plain SQL) equal to what the "How values land" rules of docs/sinks/postgres.md give, or
was reported bad exactly once (and the rules say it is bad).

More examples locally: ``KPIPE_VALUE_EXAMPLES=500 pytest -n 0 tests/test_sql_values_properties.py``.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlkit import dbs, fake_batch, sink_on, write_like_runner  # noqa: F401

EXAMPLES = int(os.environ.get("KPIPE_VALUE_EXAMPLES", "12"))
UTC = dt.timezone.utc

# -- values ---------------------------------------------------------------------------------------

CHARS = st.one_of(st.characters(codec="utf-8"), st.sampled_from(["\x00", "\ud800", "\udfff", "\\", "\t", "\n", "é"]))
TEXT = st.text(CHARS, max_size=6)
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**80), 2**80), st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-0.0, 2.0, 1e300, 5e-324]),
    st.integers(-(10**17), 10**17),  # epoch ms, in range or far out of it
    TEXT,
    # not JSON: what Avro and transforms hand over
    st.decimals(allow_nan=False, allow_infinity=False), st.binary(max_size=4),
    st.datetimes(timezones=st.just(UTC)), st.sets(st.integers(-3, 3), max_size=3),
)
VALUES = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                      st.dictionaries(TEXT, kids, max_size=3)),
                      max_leaves=8)

BAD = object()       # the rules say: a bad record
ANY = object()       # the rules leave it to the database (PostgreSQL's own timestamp parser)


def walk(v):
    yield v
    if isinstance(v, dict):
        for k, x in v.items():
            yield k
            yield from walk(x)
    elif isinstance(v, (list, set)):
        for x in v:
            yield from walk(x)


def has_nonfinite(v) -> bool:
    return any(type(x) is float and not math.isfinite(x) for x in walk(v))


def has_surrogate(v) -> bool:
    return any(type(x) is str and any(0xD800 <= ord(c) <= 0xDFFF for c in x) for x in walk(v))


def has_nul(v) -> bool:
    return any(type(x) is str and "\x00" in x for x in walk(v))


def depth(v) -> int:
    if isinstance(v, dict):
        return 1 + max(map(depth, v.values()), default=0)
    if isinstance(v, (list, set)):
        return 1 + max(map(depth, v), default=0)
    return 0


MARIADB_JSON_DEPTH = 32  # MariaDB's json_valid CHECK refuses deeper JSON


def expect(typ: str, v, kind: str):
    """What a plain SELECT gives back for ``v`` in a ``typ`` column (normalized by ``got``)."""
    if v is None:
        return None
    if typ == "bigint":
        if type(v) is Decimal and v == v.to_integral_value():
            v = int(v)
        if type(v) is int or (type(v) is float and v.is_integer()):
            n = int(v)
            return n if -(2**63) <= n < 2**63 else BAD
        return BAD
    if typ == "double":
        if type(v) in (int, float, Decimal) and math.isfinite(float(v)):
            return float(v)
        return BAD
    if typ == "boolean":
        return v if type(v) is bool else BAD
    if typ == "timestamptz":
        if type(v) is dt.datetime:
            return v
        if type(v) in (int, float):
            try:
                return dt.datetime.fromtimestamp(v / 1000, tz=UTC)
            except (ValueError, OverflowError, OSError):
                return BAD
        return ANY if type(v) is str and not has_surrogate(v) and not (kind == "postgres" and has_nul(v)) else BAD
    if typ == "text":
        if has_surrogate(v) or has_nonfinite(v):
            return BAD
        if type(v) is str:
            return BAD if kind == "postgres" and "\x00" in v else v
        if type(v) in (bytes, dt.datetime):  # a JSON string: the string itself, no quotes
            return as_json(v)
        return ("json", v)  # its JSON text: compared by parsing it
    if typ == "json":
        if has_surrogate(v) or has_nonfinite(v) or (kind == "postgres" and has_nul(v)):
            return BAD
        if kind == "mariadb" and depth(v) > MARIADB_JSON_DEPTH:
            return BAD
        return ("json", v)
    raise ValueError(typ)


def as_json(v):
    """What the JSON text of a non-JSON value holds: bytes as base64, a datetime as its ISO text
    (orjson writes UTC as +00:00, msgspec as Z: both parse back to the same instant)."""
    if type(v) is bytes:
        return base64.b64encode(v).decode()
    return v.isoformat()


def number(x) -> Decimal:
    return Decimal(repr(x)) if type(x) is float else Decimal(x)


def same(a, b) -> bool:
    """JSON equality of what was read (``a``) and what was written (``b``): booleans are not
    numbers; numbers by exact value (JSONB keeps them as decimals, so 1e300 comes back as its
    digits); bytes, datetimes and sets as their JSON forms."""
    if type(b) is set:
        b = list(b)  # in the order the encoder iterated it
    if type(b) is bytes:
        b = as_json(b)
    if type(b) is dt.datetime:
        return type(a) is str and dt.datetime.fromisoformat(a.replace("Z", "+00:00")) == b
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float, Decimal)) and isinstance(b, (int, float, Decimal)):
        return number(a) == number(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def got(kind: str, typ: str, raw, want) -> bool:
    """Whether ``raw`` (what the plain SELECT returned) is ``want``."""
    if want is ANY:
        return True
    if want is None or raw is None:  # SQL NULL, in a json column too (not the JSON text null)
        return want is None and raw is None
    if isinstance(want, tuple):  # JSON text: stored as text, never as a number (SQLite affinity)
        return type(raw) is str and same(json.loads(raw, parse_float=Decimal), want[1])
    if typ == "boolean":
        return type(want) is bool and bool(raw) is want and raw in (0, 1, True, False)
    if typ == "double":
        return float(raw) == want
    if typ == "timestamptz":
        if isinstance(raw, str):  # SQLite: the UTC wall clock, as text
            raw = dt.datetime.fromisoformat(raw)
        if raw.tzinfo is None:  # SQLite, MariaDB's DATETIME(6): the UTC wall clock
            raw = raw.replace(tzinfo=UTC)
        return raw == want
    return type(raw) is type(want) and raw == want


# -- the property ---------------------------------------------------------------------------------

TYPES = ["json", "bigint", "boolean", "double", "timestamptz", "text"]


def read_back(db, table: str, typ: str) -> dict:
    col = db.q("v")
    sql = f"SELECT id, {col}::text FROM {db.q(table)}" if typ == "json" and db.kind == "postgres" \
        else f"SELECT id, {col} FROM {db.q(table)}"
    return dict(db.driver_rows(sql))


def run_values(db, values: list, config: dict):
    table, group = db.table("pv"), db.group("pv")
    items = [(i, i, {"id": i, "v": v}) for i, v in enumerate(values)]
    with sink_on(db, table, group, **config) as sink:
        rejected = write_like_runner(sink, [fake_batch(0, len(items), items)], max_rejects=len(items) + 1)
        columns = {c.name: c.type for c in sink.columns}
    assert len(rejected) == len(set(rejected)), f"a record reported twice: {rejected}"
    assert db.offsets(group) == {("orders", 0): len(items)}
    return table, {o for _, _, o in rejected}, columns


def check(db, values, typ: str, table: str, bad: set):
    rows = read_back(db, table, typ)
    for i, v in enumerate(values):
        want = expect(typ, v, db.kind)
        if want is ANY:
            assert (i in bad) != (i in rows), (i, v, rows.get(i))
            continue
        if want is BAD:
            assert i in bad and i not in rows, f"record {i} {v!r} should be a bad record; table has {rows.get(i)!r}"
            continue
        assert i not in bad, f"record {i} {v!r} reported bad; expected {want!r}"
        assert i in rows, f"record {i} {v!r} missing"
        assert got(db.kind, typ, rows[i], want), f"record {i} {v!r} read back as {rows[i]!r}, expected {want!r}"


PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@pytest.mark.parametrize("typ", TYPES)
@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
@PROPERTY
@given(values=st.lists(VALUES, min_size=1, max_size=8))
def test_declared_columns_land_values_exactly_or_report_them(dbs, kind, typ, values):
    db = dbs(kind)
    table, bad, _ = run_values(db, values, {"columns": {"id": {"type": "bigint"}, "v": {"type": typ}}})
    check(db, values, typ, table, bad)


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
@PROPERTY
@given(values=st.lists(VALUES, min_size=1, max_size=8))
def test_auto_columns_land_values_exactly_or_report_them(dbs, kind, values):
    db = dbs(kind)
    table, bad, columns = run_values(db, values, {})
    if "v" not in columns:  # every v was None, or every record with one was bad: no column
        assert all(v is None or expect("text", v, kind) is BAD or expect("json", v, kind) is BAD
                   for v in values), (values, bad)
        return
    typ = columns["v"].split("(")[0]
    check(db, values, typ, table, bad)

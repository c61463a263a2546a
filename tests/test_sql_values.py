"""Hostile values in the SQL sinks (issue 14): a record lands exactly as it was, or it is a bad
record at its own index in the batch given to ``write``; never a crash, never a silent change.
Every check reads the table back with plain SQL, not through kpipe."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from kpipe.api import Batch
from kpipe.transforms.testing import FakeMessage
from sqlkit import dbs, fake_batch, sink_on, write_like_runner  # noqa: F401

ALL_DBS = ["sqlite", "postgres", "mariadb"]
PG_SQLITE = ["sqlite", "postgres"]


def deep(n: int):
    v = 1
    for _ in range(n):
        v = [v]
    return v


def json_texts(db, table: str, column: str) -> dict:
    cast = "::text" if db.kind == "postgres" else ""
    return {i: None if t is None else json.loads(t)
            for i, t in db.rows(f"SELECT id, {db.q(column)}{cast} FROM {db.q(table)}")}


# -- 1. values orjson cannot encode --------------------------------------------------------------

# (record, what the json column holds afterwards; None: a bad record)
JSON_CASES = [
    ({"n": 2**70}, {"n": 2**70}),                   # an integer past 64 bits, inside an object
    ({"n": -(2**80)}, {"n": -(2**80)}),
    (deep(300), deep(300)),                         # nesting deeper than orjson's 254
    ({1: "a", 2: "b"}, {"1": "a", "2": "b"}),       # an int-keyed map (a CEL transform's)
    ({"s": {3}}, {"s": [3]}),                       # a python set: an array
    ({"s": {float("nan")}}, None),                  # ... and no NaN in a set either
    ({"b": b"\x00\xff"}, {"b": "AP8="}),            # bytes: base64 text, as the jsonl writer does
    ({"d": dt.timedelta(seconds=90)}, {"d": "PT90S"}),  # a CEL duration: ISO 8601
    ({"o": object()}, None),                        # nothing can write it
    ({"x": "\ud800"}, None),                        # a lone surrogate is not UTF-8
    ({"f": float("nan")}, None),                    # JSON has no NaN ...
    ({"f": [float("inf")]}, None),                  # ... nor infinities
    ({"ok": [1, "two", None, {}]}, {"ok": [1, "two", None, {}]}),
]


@pytest.mark.parametrize("columns", ["declared", "auto"])
@pytest.mark.parametrize("kind", ALL_DBS)
def test_values_orjson_cannot_encode_land_exactly_or_are_bad_records(dbs, kind, columns):
    db = dbs(kind)
    table, group = db.table("js"), db.group("js")
    config = {"columns": {"id": {"type": "bigint"}, "o": {"type": "json"}}} if columns == "declared" else {}
    items = [(0, 0, {"id": 0, "o": {"first": True}})]  # auto: makes o a json column
    items += [(i, i, {"id": i, "o": v}) for i, (v, _) in enumerate(JSON_CASES, 1)]
    with sink_on(db, table, group, **config) as sink:
        rejected = write_like_runner(sink, [fake_batch(0, len(items), items)])
    # MariaDB's json_valid CHECK refuses JSON nested past 32 levels: a bad record there.
    cases = [(v, None if kind == "mariadb" and v == deep(300) else w) for v, w in JSON_CASES]
    expected_bad = [("orders", 0, i) for i, (_, want) in enumerate(cases, 1) if want is None]
    # what the database refuses is reported after what kpipe refuses before the transaction
    assert sorted(rejected) == expected_bad and len(rejected) == len(expected_bad)
    want = {0: {"first": True}, **{i: w for i, (_, w) in enumerate(cases, 1) if w is not None}}
    assert json_texts(db, table, "o") == want
    assert db.offsets(group) == {("orders", 0): len(items)}


@pytest.mark.parametrize("kind", ALL_DBS)
def test_unencodable_values_in_text_columns(dbs, kind):
    db = dbs(kind)
    table, group = db.table("jt"), db.group("jt")
    config = {"columns": {"id": {"type": "bigint"}, "t": {"type": "text"}}}
    cases = [({"n": 2**70}, '{"n":1180591620717411303424}'), ({"s": {1}}, '{"s":[1]}'),
             ({"x": "\ud800"}, None), ("\udc00 alone", None), ({"o": object()}, None)]
    items = [(i, i, {"id": i, "t": v}) for i, (v, _) in enumerate(cases)]
    with sink_on(db, table, group, **config) as sink:
        rejected = write_like_runner(sink, [fake_batch(0, len(items), items)])
    assert rejected == [("orders", 0, i) for i, (_, w) in enumerate(cases) if w is None]
    assert dict(db.rows(f"SELECT id, t FROM {db.q(table)}")) == {i: w for i, (_, w) in enumerate(cases) if w}


# -- 2. timestamps outside Python's datetime range ----------------------------------------------


@pytest.mark.parametrize("kind", PG_SQLITE + ["mariadb"])
def test_epoch_ms_outside_years_1_to_9999_is_a_bad_record(dbs, kind):
    db = dbs(kind)
    table, group = db.table("ts"), db.group("ts")
    config = {"columns": {"id": {"type": "bigint"}, "ts": {"type": "timestamptz"}}}
    cases = [1_700_000_000_123, 10**17, -(10**17), 1_700_000_000_000, float("inf"), float("nan")]
    items = [(i, i, {"id": i, "ts": v}) for i, v in enumerate(cases)]
    with sink_on(db, table, group, **config) as sink:
        rejected = write_like_runner(sink, [fake_batch(0, len(items), items)])
    assert rejected == [("orders", 0, 1), ("orders", 0, 2), ("orders", 0, 4), ("orders", 0, 5)]
    assert sorted(r[0] for r in db.rows(f"SELECT id FROM {db.q(table)}")) == [0, 3]
    assert db.offsets(group) == {("orders", 0): len(items)}


def _batch_with_timestamps(stamps: list) -> Batch:
    msgs = [FakeMessage({"id": o}, str(o).encode(), None, ts, o, "orders", 0) for o, ts in enumerate(stamps)]
    return Batch("orders", 0, 0, len(stamps), [{"id": o} for o in range(len(stamps))], msgs)


@pytest.mark.parametrize("columns", ["declared", "auto"])
@pytest.mark.parametrize("kind", PG_SQLITE)
def test_kafka_timestamp_past_year_9999_is_a_bad_record(dbs, kind, columns):
    db = dbs(kind)
    table, group = db.table("kts"), db.group("kts")
    config = {"metadata_columns": ["_timestamp"]}
    if columns == "declared":
        config["columns"] = {"id": {"type": "bigint"}}
    past_9999 = 253_402_300_800_000  # 10000-01-01T00:00:00Z
    stamps = [1_700_000_000_123, past_9999, 1_700_000_000_456, 2**62]
    with sink_on(db, table, group, **config) as sink:
        rejected = write_like_runner(sink, [_batch_with_timestamps(stamps)])
    assert rejected == [("orders", 0, 1), ("orders", 0, 3)]
    assert sorted(r[0] for r in db.rows(f"SELECT id FROM {db.q(table)}")) == [0, 2]
    assert db.offsets(group) == {("orders", 0): len(stamps)}


# -- 3. one rule per column type, in every dialect ----------------------------------------------

# (column type, value, what a plain SELECT returns; BAD: a bad record)
BAD = object()
RULES = [
    ("bigint", 7, 7), ("bigint", 2.0, 2), ("bigint", -0.0, 0), ("bigint", 2.5, BAD), ("bigint", "3", BAD),
    ("bigint", True, BAD), ("bigint", 2**63, BAD), ("bigint", float("nan"), BAD), ("bigint", [1], BAD),
    ("boolean", True, True), ("boolean", False, False), ("boolean", 1, BAD), ("boolean", 0, BAD),
    ("boolean", "yes", BAD), ("boolean", "true", BAD), ("boolean", 1.0, BAD),
    ("double", 1.5, 1.5), ("double", 3, 3.0), ("double", -0.0, 0.0), ("double", "1.5", BAD),
    ("double", False, BAD), ("double", float("inf"), BAD), ("double", float("nan"), BAD),
    ("text", "plain", "plain"), ("text", 123, "123"), ("text", 1.5, "1.5"), ("text", True, "true"),
    ("text", False, "false"), ("text", {"a": [1, None]}, '{"a":[1,null]}'), ("text", [], "[]"),
    ("text", 2**70, str(2**70)), ("text", float("nan"), BAD),
]


def _plain(kind: str, typ: str, v):
    """A value as the plain DB-API driver returns it, made comparable across dialects."""
    if v is None:
        return None
    if typ == "boolean":
        return bool(v) if kind != "postgres" else v
    if typ == "double":
        return float(v)
    return v


@pytest.mark.parametrize("typ", ["bigint", "boolean", "double", "text"])
@pytest.mark.parametrize("kind", ALL_DBS)
def test_one_rule_per_column_type_in_every_dialect(dbs, kind, typ):
    db = dbs(kind)
    table, group = db.table("rule"), db.group("rule")
    cases = [(v, want) for t, v, want in RULES if t == typ]
    config = {"columns": {"id": {"type": "bigint"}, "v": {"type": typ}}}
    items = [(i, i, {"id": i, "v": v}) for i, (v, _) in enumerate(cases)]
    with sink_on(db, table, group, **config) as sink:
        rejected = write_like_runner(sink, [fake_batch(0, len(items), items)])
    assert rejected == [("orders", 0, i) for i, (_, w) in enumerate(cases) if w is BAD]
    got = {i: _plain(kind, typ, v) for i, v in db.rows(f"SELECT id, v FROM {db.q(table)}")}
    assert got == {i: w for i, (_, w) in enumerate(cases) if w is not BAD}

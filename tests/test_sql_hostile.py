"""Issue 14, hostile values at the table: a record either lands exactly as it was or is a bad
record at its own index. Fields the table cannot take (names it refuses, names equal but for
case, too many columns), fields named like metadata columns, strings past MySQL's TEXT, rows
past max_allowed_packet, MariaDB's JSON alias after a restart. Read back with plain SQL."""
from __future__ import annotations

import json
import sqlite3

import pytest

from kpipe.api import FatalError
from sqlkit import dbs, fake_batch, open_sink, sink_on, write_like_runner  # noqa: F401

ALL_DBS = ["sqlite", "postgres", "mariadb"]


def good(o: int) -> tuple:
    return (o, o, {"id": o, "name": f"n{o}"})


def ids(db, table) -> list:
    return sorted(r[0] for r in db.rows(f"SELECT id FROM {db.q(table)}"))


# -- 1. a field the table cannot take is the record's fault ----------------------------------

HOSTILE_FIELDS = {
    "postgres": {"empty name": {"": 1}, "NUL in a name": {"a\x00b": 1},
                 "1,601 fields": {f"f{i}": i for i in range(1601)}},
    "mariadb": {"Id beside id": {"Id": 7}, "an emoji in a name": {"a😀": 1}},
    "sqlite": {"Name beside name": {"Name": "N"}, "2,001 fields": {f"f{i}": i for i in range(2001)}},
}
CASES = [(kind, case) for kind, cases in HOSTILE_FIELDS.items() for case in cases]


@pytest.mark.parametrize("existing", [False, True], ids=["new table", "existing table"])
@pytest.mark.parametrize("kind,case", CASES)
def test_a_field_the_table_cannot_take_is_a_bad_record(dbs, kind, case, existing):
    db = dbs(kind)
    table, group = db.table("ddl"), db.group("ddl")
    with sink_on(db, table, group) as sink:
        start = 0
        if existing:
            sink.write([fake_batch(0, 2, [good(0), good(1)])])
            start = 2
        hostile = {"id": start + 1, "name": "bad", **HOSTILE_FIELDS[kind][case]}
        batch = fake_batch(start, start + 3, [good(start), (start + 1, start + 1, hostile), good(start + 2)])
        assert write_like_runner(sink, [batch]) == [("orders", 0, start + 1)]
        assert ids(db, table) == [o for o in range(start + 3) if o != start + 1]
        assert db.offsets(group) == {("orders", 0): start + 3}
        # and the run goes on
        sink.write([fake_batch(start + 3, start + 4, [good(start + 3)])])
    assert ids(db, table)[-1] == start + 3


def test_the_bad_record_is_the_first_that_brought_the_field_not_the_first_of_the_batch(dbs):
    db = dbs("mariadb")
    table, group = db.table("ddl2"), db.group("ddl2")
    with sink_on(db, table, group) as sink:
        batch = fake_batch(0, 4, [good(0), (1, 1, {"id": 1, "extra": "x"}),
                                  (2, 2, {"id": 2, "Extra": "y", "extra": "z"}), good(3)])
        assert write_like_runner(sink, [batch]) == [("orders", 0, 2)]
    assert db.rows(f"SELECT id, extra FROM {db.q(table)} ORDER BY id") == [(0, None), (1, "x"), (3, None)]


def test_sqlite_errors_are_sorted_by_what_they_say_not_their_class():
    from kpipe.sinks.sql.errors import is_retryable, is_schema_error

    locked = sqlite3.connect(":memory:")
    dup = sqlite3.connect(":memory:")
    dup.execute("CREATE TABLE t (name TEXT)")
    with pytest.raises(sqlite3.OperationalError) as err:
        dup.execute('ALTER TABLE t ADD COLUMN "Name" TEXT')
    assert not is_retryable(err.value)
    assert is_schema_error(err.value)
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5
    assert is_retryable(busy)
    locked.close()
    dup.close()


def test_mysql_deadlock_and_a_lost_savepoint_are_retryable(dbs):
    """1213 deadlock, and 1305 for the savepoint a deadlock inside it rolled back (issue 14):
    real pymysql exceptions from the server."""
    import pymysql

    from kpipe.sinks.sql.errors import is_data_error, is_retryable

    conn = pymysql.connect(host="127.0.0.1", user="root", database="test")
    try:
        conn.begin()
        with pytest.raises(pymysql.err.OperationalError) as err:
            conn.cursor().execute("RELEASE SAVEPOINT sa_savepoint_1")
        assert err.value.args[0] == 1305
        assert is_retryable(err.value) and not is_data_error(err.value)
        conn.rollback()
        with pytest.raises(pymysql.err.OperationalError) as err:
            conn.cursor().execute("SELECT no_such_function_kp()")
        assert err.value.args[0] == 1305  # a missing function: not an outage
        assert not is_retryable(err.value)
    finally:
        conn.close()
    deadlock = pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
    assert is_retryable(deadlock)


def test_concurrent_first_writes_on_mariadb_all_land(dbs):
    """16 sinks write the first batch of their own partition at once: every one commits."""
    import threading

    db = dbs("mariadb")
    table, group = db.table("race"), db.group("race")
    errors = []
    start = threading.Barrier(8)

    def run(p: int):
        try:
            sink = open_sink(db, table, group)
            try:
                start.wait()
                for attempt in range(20):
                    try:
                        sink.write([fake_batch(0, 2, [(0, 0, {"id": p * 10}), (1, 1, {"id": p * 10 + 1})], partition=p)])
                        break
                    except Exception as exc:  # the runner retries RetryableError
                        from kpipe.api import RetryableError
                        if not isinstance(exc, RetryableError):
                            raise
            finally:
                sink.close()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.offsets(group) == {("orders", p): 2 for p in range(8)}
    assert ids(db, table) == sorted(x for p in range(8) for x in (p * 10, p * 10 + 1))


# -- 6. fields named like metadata columns ---------------------------------------------------


@pytest.mark.parametrize("existing", [False, True], ids=["new table", "existing table"])
@pytest.mark.parametrize("kind", ALL_DBS)
def test_a_field_named_like_a_metadata_column_is_a_bad_record(dbs, kind, existing):
    db = dbs(kind)
    table, group = db.table("meta"), db.group("meta")
    meta = {"metadata_columns": ["_offset", "_key", "_topic"]}
    with sink_on(db, table, group, **meta) as sink:
        start = 0
        if existing:
            sink.write([fake_batch(0, 1, [good(0)])])
            start = 1
        batch = fake_batch(start, start + 5, [
            good(start), (start + 1, start + 1, {"id": start + 1, "_offset": 999}),
            (start + 2, start + 2, {"id": start + 2, "_key": "mine"}),
            (start + 3, start + 3, {"id": start + 3, "_topic": "elsewhere"}), good(start + 4)])
        assert write_like_runner(sink, [batch]) == [("orders", 0, start + o) for o in (1, 2, 3)]
    got = db.rows(f"SELECT id, _offset, _key, _topic FROM {db.q(table)} ORDER BY id")
    assert got == [(o, o, str(o), "orders") for o in range(start + 5) if o - start not in (1, 2, 3)]


@pytest.mark.parametrize("existing", [False, True], ids=["new table", "existing table"])
@pytest.mark.parametrize("kind", ALL_DBS)
def test_a_declared_column_named_like_a_metadata_column_is_refused_at_open(dbs, kind, existing):
    db = dbs(kind)
    table, group = db.table("metadecl"), db.group("metadecl")
    if existing:  # a table that already has the _key column
        with sink_on(db, table, group, metadata_columns=["_key"]) as sink:
            sink.write([fake_batch(0, 1, [good(0)])])
    with pytest.raises(FatalError, match=r"\['_key'\].*metadata_columns"):
        open_sink(db, table, group, metadata_columns=["_key"],
                  columns={"id": {"type": "bigint"}, "_key": {"type": "text"}})


# -- 3. MySQL's TEXT, 2. max_allowed_packet, 5. MariaDB's JSON alias -------------------------


def test_mariadb_strings_longer_than_text_land(dbs):
    db = dbs("mariadb")
    table, group = db.table("long"), db.group("long")
    long = "é" * 40_000 + "x" * 1000  # 81,000 bytes: more than TEXT's 65,535
    with sink_on(db, table, group) as sink:
        sink.write([fake_batch(0, 2, [(0, 0, {"id": 0, "s": "short"}), (1, 1, {"id": 1, "s": long})])])
    assert db.rows(f"SELECT id, s FROM {db.q(table)} ORDER BY id") == [(0, "short"), (1, long)]


def test_mariadb_a_row_over_max_allowed_packet_is_a_bad_record(dbs):
    db = dbs("mariadb")
    table, group = db.table("packet"), db.group("packet")
    limit = db.scalar("SELECT @@max_allowed_packet")
    assert limit <= 64 * 1024 * 1024
    huge = "x" * (limit + 1024)
    with sink_on(db, table, group) as sink:
        sink.write([fake_batch(0, 1, [(0, 0, {"id": 0, "s": "small"})])])
        batch = fake_batch(1, 4, [(1, 1, {"id": 1, "s": "a"}), (2, 2, {"id": 2, "s": huge}),
                                  (3, 3, {"id": 3, "s": "b"})])
        assert write_like_runner(sink, [batch]) == [("orders", 0, 2)]
    assert db.rows(f"SELECT id, s FROM {db.q(table)} ORDER BY id") == [(0, "small"), (1, "a"), (3, "b")]
    assert db.offsets(group) == {("orders", 0): 4}


def test_mariadb_json_column_keeps_json_values_after_a_restart(dbs):
    db = dbs("mariadb")
    table, group = db.table("json"), db.group("json")
    with sink_on(db, table, group) as sink:
        sink.write([fake_batch(0, 1, [(0, 0, {"id": 0, "doc": {"a": 1}})])])
    values = ["123", "true", "null", "[1,2]", "plain", True, 5, [1, "x"]]
    with sink_on(db, table, group) as sink:  # a restart: the table is reflected
        assert write_like_runner(sink, [fake_batch(1, 1 + len(values), [
            (1 + i, 1 + i, {"id": 1 + i, "doc": v}) for i, v in enumerate(values)])]) == []
    got = db.rows(f"SELECT id, doc FROM {db.q(table)} ORDER BY id")
    assert [json.loads(d) for _, d in got] == [{"a": 1}] + values


# -- end to end: under dlq, the run goes on ---------------------------------------------------

E2E = {"sqlite": ({}, {"Name": "twin"}), "postgres": ({}, {"": "blank"}),
       "mariadb": ({"metadata_columns": ["_key", "_offset"]}, {"_key": "mine"})}


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
def test_under_dlq_a_hostile_field_is_dead_lettered_and_the_run_goes_on(brokers, topic, tmp_path, dbs, kind):
    from kit import edit_spec, produce_values, read_topic, run_kpipe, seal
    from kpipe.kafka_admin import create_topic
    from sqlkit import write_sql_spec

    db = dbs(kind)
    table, group = db.table("e2e"), db.group("e2e")
    dlq = f"{topic}.dlq"
    create_topic(brokers, dlq, 1)
    config, hostile = E2E[kind]
    records = [(i % 4, str(i), {"id": i, "name": f"n{i}", **(hostile if i == 57 else {})}) for i in range(200)]
    where = produce_values(brokers, topic, records)
    seal(brokers, topic, lambda p: {"id": 200 + p, "name": "seal"})
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=100,
                          sink={"type": db.sink_type, "url": db.url, "table": table, **config})
    edit_spec(spec, errors={"sink": "dlq", "dlq": {"topic": dlq}})
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    assert ids(db, table) == [i for i in range(204) if i != 57]
    assert db.offsets(group) == {(topic, p): 51 for p in range(4)}
    (letter,) = read_topic(brokers, dlq, 1)
    headers = {k: v.decode() for k, v in letter.headers()}
    assert (headers["kpipe.error.partition"], headers["kpipe.error.offset"]) == tuple(map(str, where[57][:2]))

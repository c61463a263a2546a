"""The SQL sinks at their edges (issue 13): a write with nothing to write only moves the stored
offset, never deletes; a DELETE or UPDATE without WHERE is refused; a bad record is reported at
its index in the batch the sink was given; a field name longer than the database's identifier
limit is mapped, never written as NULL; dead letters carry the driver's error class."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from kit import edit_spec, produce_values, read_topic, run_kpipe, seal, unique
from kpipe.api import FatalError
from kpipe.kafka_admin import create_topic
from sqlkit import dbs, fake_batch, sink_on, write_like_runner, write_sql_spec  # noqa: F401

ALL_DBS = ["sqlite", "postgres", "mariadb"]
SERVERS = ["postgres", "mariadb"]
MODES = {"insert": {"mode": "insert"}, "upsert": {"mode": "upsert", "key": ["id"]}}


def ids(db, table) -> list:
    return sorted(r[0] for r in db.rows(f"SELECT id FROM {db.q(table)}"))


def rows(start: int, stop: int, **extra) -> list:
    return [(o, o, {"id": o, "v": f"v{o}", **extra}) for o in range(start, stop)]


# -- 1. a write with nothing to write --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", SERVERS)
def test_filtered_out_records_never_empty_the_table(brokers, topic, tmp_path, dbs, kind, mode):
    """The issue's repro: 4,000 records, a filter keeping seq < 2000; then 1,000 more that the
    filter drops. Every batch of the second run is empty: it must only move the offsets."""
    db = dbs(kind)
    table, group = db.table("flt"), db.group("flt")
    produce_values(brokers, topic, [(i % 4, str(i), {"seq": i, "v": f"v{i}"}) for i in range(4000)])
    seal(brokers, topic, lambda p: {"seq": -1 - p, "v": "seal"})
    key = {"key": ["seq"]} if mode == "upsert" else {}
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=500,
                          sink={"type": db.sink_type, "url": db.url, "table": table, "mode": mode, **key})
    edit_spec(spec, transforms=[{"filter": "seq < 2000"}])
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    expected = sorted([-4, -3, -2, -1] + list(range(2000)))
    assert sorted(r[0] for r in db.rows(f"SELECT seq FROM {db.q(table)}")) == expected
    assert db.offsets(group) == {(topic, p): 1001 for p in range(4)}

    produce_values(brokers, topic, [(i % 4, str(i), {"seq": i, "v": "late"}) for i in range(4000, 5000)])
    seal(brokers, topic, lambda p: {"seq": 9000 + p, "v": "dropped too"})
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    assert sorted(r[0] for r in db.rows(f"SELECT seq FROM {db.q(table)}")) == expected
    assert db.offsets(group) == {(topic, p): 1252 for p in range(4)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ALL_DBS)
def test_an_empty_batch_only_moves_the_offset(dbs, kind, mode):
    db = dbs(kind)
    table, group = db.table("empty"), db.group("empty")
    with sink_on(db, table, group, **MODES[mode]) as sink:
        sink.write([fake_batch(0, 10, rows(0, 10))])
        # all filtered, all skipped tombstones or all dead-lettered: a range with no records
        sink.write([fake_batch(10, 25, [])])
        sink.write([fake_batch(25, 30, []), fake_batch(30, 32, rows(30, 32)), fake_batch(32, 40, [])])
        assert ids(db, table) == list(range(10)) + [30, 31]
        assert db.offsets(group) == {("orders", 0): 40}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ALL_DBS)
def test_a_batch_whose_records_are_all_dead_lettered_only_moves_the_offset(dbs, kind, mode):
    db = dbs(kind)
    table, group = db.table("alldlq"), db.group("alldlq")
    with sink_on(db, table, group, **MODES[mode],
                 columns={"id": {"type": "bigint", "nullable": False}, "v": {"type": "text"}}) as sink:
        sink.write([fake_batch(0, 5, rows(0, 5))])
        bad = [(o, o, {"id": None, "v": "no id"}) for o in range(5, 8)]  # NOT NULL: all rejected
        assert write_like_runner(sink, [fake_batch(5, 8, bad)]) == [("orders", 0, o) for o in range(5, 8)]
        assert ids(db, table) == list(range(5))
        assert db.offsets(group) == {("orders", 0): 8}


@pytest.mark.parametrize("kind", ALL_DBS)
def test_a_first_batch_of_records_with_no_fields(dbs, kind):
    """Records of no fields ({}) before the table exists: with nothing to create a column from,
    each is a bad record saying so (not a SQL syntax error or a crash), and the policy decides;
    once a record with fields created the table, {} lands as a row of NULLs."""
    db = dbs(kind)
    table, group = db.table("nofields"), db.group("nofields")
    empty = [(o, o, {}) for o in range(3)]
    with sink_on(db, table, group) as sink:
        assert write_like_runner(sink, [fake_batch(0, 3, empty)]) == [("orders", 0, o) for o in range(3)]
        engine = sa.create_engine(db.url)
        try:
            assert not sa.inspect(engine).has_table(table)
        finally:
            engine.dispose()
        assert db.offsets(group) == {("orders", 0): 3}
        # a mixed first batch creates the table from the record that has fields
        assert write_like_runner(sink, [fake_batch(3, 6, [(3, 3, {}), (4, 4, {"id": 4}), (5, 5, {})])]) == []
        assert db.rows(f"SELECT count(*), count(id), max(id) FROM {db.q(table)}") == [(3, 1, 4)]
        assert db.offsets(group) == {("orders", 0): 6}
    # with metadata columns there is something to create the table from
    table2, group2 = db.table("nofieldsmeta"), db.group("nofieldsmeta")
    with sink_on(db, table2, group2, metadata_columns=["_offset"]) as sink:
        assert write_like_runner(sink, [fake_batch(0, 3, empty)]) == []
        assert sorted(r[0] for r in db.rows(f"SELECT _offset FROM {db.q(table2)}")) == [0, 1, 2]


@pytest.mark.parametrize("kind", ALL_DBS)
def test_tombstones_delete_only_their_keys_and_skipped_ones_nothing(dbs, kind):
    db = dbs(kind)
    table, group = db.table("tombs"), db.group("tombs")
    with sink_on(db, table, group, tombstones="delete", **MODES["upsert"]) as deleting:
        deleting.write([fake_batch(0, 10, rows(0, 10))])
        deleting.write([fake_batch(10, 13, [(10, 2, None), (11, 5, None), (12, 99, None)])])
        assert ids(db, table) == [0, 1, 3, 4, 6, 7, 8, 9]
        assert db.offsets(group) == {("orders", 0): 13}
    with sink_on(db, table, group, tombstones="skip", **MODES["upsert"]) as skipping:
        skipping.write([fake_batch(13, 20, [])])  # tombstones: skip: the runner hands none over
        assert ids(db, table) == [0, 1, 3, 4, 6, 7, 8, 9]
        assert db.offsets(group) == {("orders", 0): 20}


@pytest.mark.parametrize("kind", ALL_DBS)
def test_a_tombstone_key_must_convert_to_the_key_type_exactly(dbs, kind):
    """Issue 14: MariaDB compares the bigint 1 equal to '1abc'; kpipe rejects that tombstone."""
    db = dbs(kind)
    table, group = db.table("tkey"), db.group("tkey")
    with sink_on(db, table, group, tombstones="delete", **MODES["upsert"]) as sink:
        sink.write([fake_batch(0, 3, rows(0, 3))])
        tombs = [(3, "1abc", None), (4, "1_0", None), (5, " 2 ", None)]
        assert write_like_runner(sink, [fake_batch(3, 6, tombs)]) == [("orders", 0, 3), ("orders", 0, 4)]
        assert ids(db, table) == [0, 1]
        assert db.offsets(group) == {("orders", 0): 6}


# -- 2. the guard ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_DBS)
def test_a_delete_or_update_without_where_is_refused(dbs, kind):
    from kpipe.sinks.sql.guard import delete_where

    db = dbs(kind)
    table, group = db.table("guard"), db.group("guard")
    with sink_on(db, table, group, **MODES["upsert"]) as sink:
        sink.write([fake_batch(0, 3, rows(0, 3))])
        with pytest.raises(FatalError, match="without a WHERE"):
            delete_where(sink.table, [])
        for sql in (f"DELETE FROM {db.q(table)}", f"  update {db.q(table)} SET v = 'x'",
                    f"DELETE FROM {db.q(table)} -- WHERE id = 1"):
            with pytest.raises(FatalError, match="without a WHERE"):
                with sink.engine.begin() as conn:
                    conn.exec_driver_sql(sql)
        with sink.engine.begin() as conn:  # with a WHERE, it goes through
            conn.exec_driver_sql(f"UPDATE {db.q(table)} SET v = 'x' WHERE id = 1")
        assert db.rows(f"SELECT id, v FROM {db.q(table)} ORDER BY id") == [(0, "v0"), (1, "x"), (2, "v2")]


# -- 3. a bad record is reported at its index in the batch the sink was given -----------------


def test_evolve_fail_dead_letters_only_the_record_with_the_new_field(dbs):
    """The issue's setup, on each database: [update 1, tombstone 2, id 3 with a field the table
    lacks, update 4, insert 6] must reject only id 3 and apply the rest in offset order."""
    for kind in ALL_DBS:
        db = dbs(kind)
        table, group = db.table("evf"), db.group("evf")
        with sink_on(db, table, group, tombstones="delete", evolve="fail", **MODES["upsert"]) as sink:
            sink.write([fake_batch(0, 3, [(0, 1, {"id": 1, "v": "a"}), (1, 2, {"id": 2, "v": "a"}),
                                          (2, 4, {"id": 4, "v": "a"})])])
            batch = fake_batch(3, 8, [(3, 1, {"id": 1, "v": "b"}), (4, 2, None), (5, 3, {"id": 3, "v": "b", "new": 1}),
                                      (6, 4, {"id": 4, "v": "b"}), (7, 6, {"id": 6, "v": "b"})])
            assert write_like_runner(sink, [batch]) == [("orders", 0, 5)], kind
            assert db.rows(f"SELECT id, v FROM {db.q(table)} ORDER BY id") == [(1, "b"), (4, "b"), (6, "b")], kind
            assert db.offsets(group) == {("orders", 0): 8}, kind


@pytest.mark.parametrize("kind", SERVERS)
def test_the_issues_batch_through_the_runner_dead_letters_only_the_bad_record(brokers, topic, tmp_path, dbs, kind):
    db = dbs(kind)
    table, group = db.table("evr"), db.group("evr")
    dlq = f"{topic}.dlq"
    create_topic(brokers, dlq, 1)
    spec = write_sql_spec(tmp_path, brokers, topic, group=group,
                          sink={"type": db.sink_type, "url": db.url, "table": table, "mode": "upsert",
                                "key": ["id"], "evolve": "fail"})
    edit_spec(spec, tombstones="delete", key_deserializer={"type": "string"},
              errors={"sink": "dlq", "dlq": {"topic": dlq}})
    produce_values(brokers, topic, [(0, str(i), {"id": i, "v": "a"}) for i in (1, 2, 4)])
    seal(brokers, topic, lambda p: {"id": 100 + p, "v": "seal"})
    assert run_kpipe("run", str(spec), "--until-caught-up").returncode == 0
    produce_values(brokers, topic, [(0, "1", {"id": 1, "v": "b"}), (0, "2", None), (0, "3", {"id": 3, "v": "b", "new": 1}),
                                    (0, "4", {"id": 4, "v": "b"}), (0, "6", {"id": 6, "v": "b"})])
    seal(brokers, topic, lambda p: {"id": 100 + p, "v": "seal2"})
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    assert db.rows(f"SELECT id, v FROM {db.q(table)} WHERE id < 100 ORDER BY id") == [(1, "b"), (4, "b"), (6, "b")]
    assert [m.key() for m in read_topic(brokers, dlq, 1)] == [b"3"]


@pytest.mark.parametrize("kind", ALL_DBS)
def test_keyless_records_and_non_objects_are_reported_where_they_are(dbs, kind):
    """The sink's other reports: no key field in the rows that make the table, a tombstone
    without a key, a value that is not an object; each after a part of another kind."""
    db = dbs(kind)
    table, group = db.table("keyless"), db.group("keyless")
    with sink_on(db, table, group, tombstones="delete", **MODES["upsert"]) as sink:
        first = fake_batch(0, 3, [(0, 1, None), (1, 9, {"v": "no id"}), (2, 7, None)])
        assert write_like_runner(sink, [first]) == [("orders", 0, 1)]
        second = fake_batch(3, 7, [(3, 5, {"id": 5, "v": "x"}), (4, None, None), (5, 6, "not an object"),
                                   (6, 6, {"id": 6, "v": "y"})])
        assert write_like_runner(sink, [second]) == [("orders", 0, 4), ("orders", 0, 5)]
        assert db.rows(f"SELECT id, v FROM {db.q(table)} ORDER BY id") == [(5, "x"), (6, "y")]
        assert db.offsets(group) == {("orders", 0): 7}


BAD_KINDS = {
    "not_null": {"id": None, "v": "no id"},         # the database rejects it (NOT NULL)
    "type": {"id": "not a number", "v": "bad"},     # does not fit bigint (SQLite: kpipe's check)
}


@pytest.mark.parametrize("bad_kind", BAD_KINDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ALL_DBS)
def test_a_bad_record_is_reported_at_its_place_in_a_mixed_batch(dbs, kind, mode, bad_kind):
    db = dbs(kind)
    table, group = db.table("pos"), db.group("pos")
    deletes = mode == "upsert"
    with sink_on(db, table, group, tombstones="delete" if deletes else "skip", **MODES[mode],
                 columns={"id": {"type": "bigint", "nullable": False}, "v": {"type": "text"}}) as sink:
        sink.write([fake_batch(0, 4, rows(0, 4))])
        # rows and (in upsert mode) tombstones in runs, a filtered gap at 9, the bad record moving
        shape = [("row", 10), ("tomb", 1), ("tomb", 2), ("row", 11), ("row", 12), ("tomb", 0), ("row", 13)]
        if not deletes:
            shape = [s for s in shape if s[0] == "row"]
        for bad_at in range(len(shape) + 1):
            start = 4 + 20 * bad_at
            items, offset, expected_ids = [], start, set(ids(db, table))
            for n, (what, key) in enumerate(shape + [("row", 14)]):
                if n == bad_at:
                    items.append((offset, 0, BAD_KINDS[bad_kind]))
                    bad_offset, offset = offset, offset + 1
                offset += 1 if offset != start + 5 else 2  # offset start+5 was filtered
                if what == "tomb":
                    items.append((offset - 1, key, None))
                    expected_ids.discard(key)
                else:
                    items.append((offset - 1, key, {"id": key, "v": f"at{bad_at}"}))
                    expected_ids.add(key)
            batch = fake_batch(start, start + 20, items)  # ends in a filtered gap
            assert write_like_runner(sink, [batch]) == [("orders", 0, bad_offset)], (bad_at, items)
            got = db.rows(f"SELECT id, v FROM {db.q(table)} ORDER BY id")
            if deletes:
                assert [r[0] for r in got] == sorted(expected_ids), bad_at
                assert all(v == f"at{bad_at}" for i, v in got if i >= 10), (bad_at, got)
            else:
                assert sum(1 for _, v in got if v == f"at{bad_at}") == len(shape) + 1, (bad_at, got)
            assert db.offsets(group) == {("orders", 0): start + 20}


# -- 5. the dead letters of the sink stage carry the driver's error ------------------------------


@pytest.mark.parametrize("kind,error_class", [("postgres", "psycopg.errors.NotNullViolation"),
                                              ("mariadb", "pymysql.err.IntegrityError")])
def test_a_sink_dead_letter_names_the_drivers_error_class(brokers, topic, tmp_path, dbs, kind, error_class):
    db = dbs(kind)
    table, group = db.table("cls"), db.group("cls")
    db.execute(f"CREATE TABLE {db.q(table)} (id bigint NOT NULL, name text NOT NULL)")
    dlq = f"{topic}.dlq"
    create_topic(brokers, dlq, 1)
    records = [(i % 4, str(i), {"id": i, "name": None if i == 37 else f"n{i}"}) for i in range(100)]
    produce_values(brokers, topic, records)
    seal(brokers, topic, lambda p: {"id": 100 + p, "name": "seal"})
    spec = write_sql_spec(tmp_path, brokers, topic, group=group,
                          sink={"type": db.sink_type, "url": db.url, "table": table})
    edit_spec(spec, errors={"sink": "dlq", "dlq": {"topic": dlq}})
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    assert ids(db, table) == [i for i in range(104) if i != 37]
    (letter,) = read_topic(brokers, dlq, 1)
    headers = {k: v.decode() for k, v in letter.headers()}
    assert letter.key() == b"37"
    assert headers["kpipe.error.stage"] == "sink"
    assert headers["kpipe.error.class"] == error_class


# -- 4. names longer than the database's identifier limit ---------------------------------------


LONG = "a_field_name_that_goes_on_and_on_well_past_what_the_database_allows"
LIMITS = {"postgres": ("bytes", 63), "mariadb": ("chars", 64)}


def _length(kind: str, name: str) -> int:
    return len(name.encode()) if LIMITS[kind][0] == "bytes" else len(name)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_long_field_name_lands_under_a_mapped_column(brokers, topic, tmp_path, dbs, kind):
    db = dbs(kind)
    table, group = db.table("long"), db.group("long")
    wide = "é" * 40  # 80 bytes but 40 characters: too long for PostgreSQL only
    fields = [LONG + "_alpha", LONG + "_beta", wide]  # the first two share a 66-character prefix

    def produce(start: int, n: int):
        produce_values(brokers, topic, [(i % 4, str(i), {"id": i, fields[0]: i * 10, fields[1]: f"b{i}", wide: i % 2 == 0})
                                        for i in range(start, start + n)])
        seal(brokers, topic, lambda p: {"id": start + n + p, fields[0]: 0, fields[1]: "s", wide: True})

    produce(0, 40)
    spec = write_sql_spec(tmp_path, brokers, topic, group=group,
                          sink={"type": db.sink_type, "url": db.url, "table": table})
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    produce(44, 40)  # a second run: the table is reflected, the names must map the same way
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr

    names = [n for n in db.columns(table) if n != "id"]
    assert len(names) == 3, names
    assert all(_length(kind, n) <= LIMITS[kind][1] for n in names), names
    assert (wide in names) == (kind == "mariadb")
    q = db.q
    by_value = {db.scalar(f"SELECT {q(n)} FROM {q(table)} WHERE id = 5"): n for n in names}
    alpha, beta = by_value[50], by_value["b5"]
    assert alpha.startswith(LONG[:40]) and beta.startswith(LONG[:40]) and alpha != beta
    got = db.rows(f"SELECT id, {q(alpha)}, {q(beta)} FROM {q(table)} ORDER BY id")
    assert len(got) == 88
    assert all(a == (0 if i in range(40, 44) or i >= 84 else i * 10) for i, a, _ in got), got[:5]
    nulls = " OR ".join(f"{q(n)} IS NULL" for n in names)
    assert db.scalar(f"SELECT count(*) FROM {q(table)} WHERE {nulls}") == 0


@pytest.mark.parametrize("kind", SERVERS)
def test_long_key_and_declared_names_map_after_a_restart(dbs, kind):
    db = dbs(kind)
    key, other = LONG + "_key", LONG + "_declared"
    for columns in ("auto", {key: {"type": "bigint"}, other: {"type": "text", "from": "nested.value"}}):
        table, group = db.table("longk"), db.group("longk")
        config = dict(mode="upsert", key=[key], columns=columns, metadata_columns=["_offset"])
        value = (lambda o: {key: o % 3, other: f"v{o}"}) if columns == "auto" else \
                (lambda o: {key: o % 3, "nested": {"value": f"v{o}"}})
        for run in range(2):  # the second sink reflects the table the first one made
            with sink_on(db, table, group, tombstones="delete", **config) as sink:
                start = 6 * run
                sink.write([fake_batch(start, start + 6, [(o, None, value(o)) for o in range(start, start + 5)]
                                       + [(start + 5, o_key, None) for o_key in [1]])])
        names = list(db.columns(table))
        assert all(_length(kind, n) <= LIMITS[kind][1] for n in names), names
        (k_col,) = sa.inspect(db.engine).get_pk_constraint(table)["constrained_columns"]
        (o_col,) = [n for n in names if n not in (k_col, "_offset")]
        got = db.rows(f"SELECT {db.q(k_col)}, {db.q(o_col)}, _offset FROM {db.q(table)} ORDER BY 1")
        # the second run's offsets 6..10 update keys 0, 1, 2, 0, 1; its tombstone deletes key 1
        assert got == [(0, "v9", 9), (2, "v8", 8)], (columns, got)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_table_name_past_the_limit_is_refused_at_start(dbs, kind):
    db = dbs(kind)
    table = unique("kp_" + "x" * 60)  # past both limits; never created, so not db.table()
    unit = {"bytes": "bytes", "chars": "characters"}[LIMITS[kind][0]]
    with pytest.raises(FatalError, match=rf"longer than .* \({LIMITS[kind][1]} {unit}\)"):
        with sink_on(db, table, db.group("longt")):
            pass
    assert not [t for t in sa.inspect(db.engine).get_table_names() if t.startswith(table[:40])]


def test_a_statement_timeout_is_retryable_and_commits_nothing(dbs):
    # statement_timeout cancels a write that waits too long (57014): the server or a lock is
    # slow, not the record, so the runner must retry it (and in the end exit 3), not exit 2.
    from kpipe.api import RetryableError

    db = dbs("postgres")
    table, group = db.table("stmt"), db.group("stmt")
    with sink_on(db, table, group, statement_timeout="500ms") as sink:
        sink.write([fake_batch(0, 2, rows(0, 2))])
        with db.engine.connect() as locker:
            locker.exec_driver_sql(f"LOCK TABLE {db.q(table)} IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(RetryableError, match="statement timeout"):
                sink.write([fake_batch(2, 4, rows(2, 4))])
            locker.rollback()
        assert db.offsets(group) == {("orders", 0): 2}
        sink.write([fake_batch(2, 4, rows(2, 4))])  # the retry, once the lock is gone
    assert ids(db, table) == [0, 1, 2, 3]
    assert db.offsets(group) == {("orders", 0): 4}

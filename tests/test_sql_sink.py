"""The ``postgres`` and ``sql`` sinks end to end: the real broker, real databases, the CLI.

PostgreSQL and MariaDB are the servers of the test machine; SQLite is a file in tmp_path.
Every test has its own table and consumer group (the offsets table is shared, keyed by group).
"""
from __future__ import annotations

import datetime as dt
import json
import random
import re

import pytest

from kit import event, produce_events, produce_values, run_kpipe, seal, seal_events, summary
from sqlkit import assert_rows_exactly_once, committed, dbs, offsets_state, write_sql_spec  # noqa: F401

ALL_DBS = ["postgres", "sqlite", "mariadb"]
META = ["_topic", "_partition", "_offset", "_timestamp", "_key"]
UTC = dt.timezone.utc


def sink(db, table, **extra) -> dict:
    return {"type": db.sink_type, "url": db.url, "table": table, **extra}


def as_utc(value) -> dt.datetime:
    """A stored timestamp as an aware UTC datetime (MariaDB and SQLite hand back naive UTC)."""
    assert isinstance(value, dt.datetime), repr(value)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


# -- 1. insert: every offset exactly once ------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_DBS)
def test_insert_writes_every_offset_once_and_offsets_match(brokers, topic, tmp_path, dbs, kind):
    db = dbs(kind)
    table, group = db.table("ins"), db.group("ins")
    n = 20_000
    where = produce_events(brokers, topic, n)
    where += seal(brokers, topic, lambda p: event(n + p))  # ids n..n+3 to partitions 0..3
    total = n + 4
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=3000,
                          sink=sink(db, table, mode="insert", metadata_columns=META))
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr

    per_partition = assert_rows_exactly_once(db, table, topic, range(total))
    assert per_partition == {p: total // 4 for p in range(4)}
    assert db.offsets(group) == {(topic, p): total // 4 for p in range(4)}
    assert committed(brokers, group, topic) == {p: total // 4 for p in range(4)}
    assert summary(proc.stderr)[:2] == (total, total)

    # Every column, row by row, against what was produced (and where the broker put it).
    rows = db.select(table, "id", "name", "amount", "_topic", "_partition", "_offset", "_timestamp", "_key",
                     order_by="id")
    assert len(rows) == total
    for (i, name, amount, t, p, o, ts, key), (wp, wo, wts) in zip(rows, where):
        assert (name, amount, t, p, o, key) == (f"event-{i}", i % 997, topic, wp, wo, str(i) if i < n else None)
        assert as_utc(ts) == dt.datetime.fromtimestamp(wts / 1000, UTC), (i, ts, wts)


# -- 4. upsert: the highest offset wins, within a batch and across batches and runs -------------


def _upsert_records(rng: random.Random, keys: list, count: int, seq0: int, hot):
    """(partition, kafka key, value) triples; key number N goes to partition N % 4, so every
    key lives in one partition and its highest offset is its latest update."""
    chosen = [hot] * 300 + [rng.choice(keys) for _ in range(count)]  # the hot key many times in a row
    records = []
    for seq, k in enumerate(chosen, seq0):
        number = k if isinstance(k, int) else int(k[1:])
        records.append((number % 4, str(k), {"k": k, "seq": seq, "v": f"v-{seq}", "n": seq * 2}))
    return records, seq0 + len(chosen)


@pytest.mark.parametrize("kind,key_type", [
    ("postgres", "str"), ("sqlite", "str"), ("mariadb", "str"), ("mariadb", "int")])
def test_upsert_keeps_the_row_from_the_highest_offset(brokers, topic, tmp_path, dbs, kind, key_type):
    seed = random.randrange(2**32)
    print(f"upsert seed {seed}")
    rng = random.Random(seed)
    db = dbs(kind)
    table, group = db.table("ups"), db.group("ups")
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=500,
                          sink=sink(db, table, mode="upsert", key=["k"], metadata_columns=["_partition", "_offset"]))
    expected: dict = {}  # key -> (seq, partition, offset) of its record at the highest offset

    def produce(records):
        where = produce_values(brokers, topic, records)
        for (_, _, value), (p, o, _) in zip(records, where):
            k = value["k"]
            assert k not in expected or expected[k][1] == p
            if k not in expected or o > expected[k][2]:
                expected[k] = (value["seq"], p, o)

    def seal_records(seq):  # one record per partition, alone in its produce batch
        ks = [f"z{p}" if key_type == "str" else 1000 + p for p in range(4)]
        return [(p, None, {"k": k, "seq": seq + p, "v": f"v-{seq + p}", "n": (seq + p) * 2})
                for p, k in enumerate(ks)]

    key = (lambda i: f"k{i:02d}") if key_type == "str" else (lambda i: i)
    # Run 1: 40 keys, ~75 updates each, so each batch of 500 holds every key of its partition
    # many times; plus 300 updates in a row of one key.
    keys = [key(i) for i in range(40)]
    records, seq = _upsert_records(rng, keys, 3000, 0, hot=key(7))
    produce(records)
    produce(seal_records(seq))
    seq += 4
    first = run_kpipe("run", str(spec), "--until-caught-up")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr, first.stderr
    _check_upsert(db, table, expected)

    # Run 2: updates to most old keys and to new keys; the hot run again.
    records, seq = _upsert_records(rng, keys[5:] + [key(i) for i in range(40, 50)], 1200, seq, hot=key(12))
    produce(records)
    produce(seal_records(seq))
    second = run_kpipe("run", str(spec), "--until-caught-up")
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr, second.stderr
    _check_upsert(db, table, expected)
    ends: dict = {}
    for _, p, o in expected.values():
        ends[p] = max(ends.get(p, 0), o + 1)
    assert db.offsets(group) == {(topic, p): o for p, o in ends.items()}
    assert committed(brokers, group, topic) == ends
    # the second run resumed where the first ended: it consumed only the new records
    assert summary(second.stderr)[0] == 1200 + 300 + 4


def _check_upsert(db, table, expected):
    rows = db.select(table, "k", "seq", "v", "n", "_partition", "_offset")
    assert len(rows) == len(expected) == db.scalar(f"SELECT count(DISTINCT k) FROM {db.q(table)}")
    got = {k: (seq, v, n, p, o) for k, seq, v, n, p, o in rows}
    want = {k: (seq, f"v-{seq}", seq * 2, p, o) for k, (seq, p, o) in expected.items()}
    wrong = {k: (got.get(k), want[k]) for k in want if got.get(k) != want[k]}
    assert not wrong, f"{len(wrong)} keys hold the wrong row (got, want): {dict(list(wrong.items())[:5])}"


# -- 5. schema evolution -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_DBS)
def test_new_field_mid_stream_adds_a_nullable_column(brokers, topic, tmp_path, dbs, kind):
    db = dbs(kind)
    table, group = db.table("evo"), db.group("evo")

    def value(i):
        v = event(i)
        if i >= 1000:
            v.update(score=i * 0.5, note=f"n{i}")
        return v

    produce_values(brokers, topic, [(i % 4, str(i), value(i)) for i in range(2000)])
    seal(brokers, topic, lambda p: value(2000 + p))
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=200,
                          sink=sink(db, table, evolve="add_columns", metadata_columns=["_partition", "_offset"]))
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    cols = db.columns(table)
    assert {"score", "note"} <= set(cols), cols
    assert cols["score"]["nullable"] and cols["note"]["nullable"]
    rows = db.select(table, "id", "name", "score", "note", order_by="id")
    assert [r[0] for r in rows] == list(range(2004))
    for i, name, score, note in rows:
        assert name == f"event-{i}"
        if i < 1000:
            assert (score, note) == (None, None), (i, score, note)
        else:
            assert (score, note) == (i * 0.5, f"n{i}"), (i, score, note)


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_evolve_fail_stops_at_the_first_record_with_a_new_field(brokers, topic, tmp_path, dbs, kind):
    db = dbs(kind)
    table, group = db.table("evf"), db.group("evf")
    bad_p, bad_o = 2, 100
    # 300 records per partition; partition 2 carries a new field from offset 100 on.
    records = []
    for i in range(1200):
        p, o = i % 4, i // 4
        v = event(i)
        if p == bad_p and o >= bad_o:
            v["extra"] = f"x{i}"
        records.append((p, str(i), v))
    produce_values(brokers, topic, records)
    seal(brokers, topic, lambda p: event(1200 + p))
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=50,
                          sink=sink(db, table, evolve="fail", metadata_columns=["_partition", "_offset"]))
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "extra" not in db.columns(table)
    _check_stopped_at(db, brokers, topic, table, group, bad_p, bad_o, proc.stderr)


def _check_stopped_at(db, brokers, topic, table, group, bad_p, bad_o, stderr):
    """The run named exactly the bad record; its partition holds exactly the offsets before it,
    and its stored and committed offsets are the bad record's; every other partition is
    consistent with itself."""
    per, stored, kafka = offsets_state(db, brokers, topic, table, group)
    state = (f"rows per partition (count, min, max): "
             f"{ {p: (len(v), min(v), max(v)) for p, v in sorted(per.items())} }; "
             f"kpipe_offsets: { {p: o for (_, p), o in sorted(stored.items())} }; kafka committed: {kafka}")
    after_assign = stderr.split("kpipe.run: assigned", 1)[-1].split("\n", 1)[-1]
    named = set(re.findall(re.escape(topic) + r"\[(\d+)\]@(\d+)", after_assign))
    print(state)
    assert sorted(per.get(bad_p, [])) == list(range(bad_o)), \
        f"partition {bad_p} should hold exactly offsets 0..{bad_o - 1}: {state}\n{stderr}"
    assert stored[(topic, bad_p)] == bad_o, state
    assert kafka[bad_p] == bad_o, state
    for p in range(4):
        offs = sorted(per.get(p, []))
        assert offs == list(range(len(offs))), f"partition {p} has gaps or duplicates: {state}"
        assert stored.get((topic, p), 0) == len(offs), state
        assert kafka[p] == len(offs) or (not offs and kafka[p] < 0), state
    assert named == {(str(bad_p), str(bad_o))}, f"named {named}, expected {bad_p}@{bad_o}:\n{stderr}"


# -- 6. a record the database rejects, in the middle of a batch ---------------------------------


_CREATE = ("CREATE TABLE {t} (id bigint NOT NULL, name text, amount bigint CHECK (amount >= 0), "
           "_partition integer, _offset bigint)")


@pytest.mark.parametrize("kind,violation,bad_at,prior", [
    ("postgres", "check", 170, False),        # COPY, narrowed by the sink; 2nd batch of its partition
    ("postgres", "not_a_number", 30, False),  # COPY rejects 'abc' for bigint; 1st batch
    ("mariadb", "not_null", 170, True),       # executemany; the partition already has progress
    ("sqlite", "check", 230, False),          # executemany
    ("sqlite", "too_big", 90, False),         # the driver cannot bind an int past 64 bits
    ("mariadb", "too_big", 90, False),        # out of range for bigint
])
def test_rejected_record_stops_the_run_exactly_there(brokers, topic, tmp_path, dbs, kind, violation, bad_at, prior):
    """A pre-created table with NOT NULL and CHECK constraints, written through a declared
    ``columns:`` mapping; the bad record sits at offset ``bad_at`` of this run's records in
    partition 1 (batches of 100, so 170 is in the middle of the run's second batch)."""
    db = dbs(kind)
    table, group = db.table("bad"), db.group("bad")
    db.execute(_CREATE.format(t=db.q(table)))
    columns = {"id": {"type": "bigint", "nullable": False}, "name": {"type": "text"},
               "amount": {"type": "bigint"}}
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=100,
                          sink=sink(db, table, columns=columns, metadata_columns=["_partition", "_offset"]))
    n0 = 0
    if prior:  # an earlier, clean run: the partitions already have rows and stored offsets
        produce_events(brokers, topic, 400)
        n0 = seal_events(brokers, topic, 400)
        first = run_kpipe("run", str(spec), "--until-caught-up")
        assert first.returncode == 0, first.stderr
        assert db.offsets(group) == {(topic, p): 101 for p in range(4)}
    bad_p = 1
    records = []
    for i in range(n0, n0 + 1200):
        v = event(i)
        if i % 4 == bad_p and (i - n0) // 4 == bad_at:
            if violation == "check":
                v["amount"] = -5
            elif violation == "not_a_number":
                v["amount"] = "abc"
            elif violation == "too_big":  # valid JSON, which msgspec decodes exactly
                v = json.dumps({**v, "amount": 2**70}).encode()  # orjson cannot write it
            else:
                v["id"] = None
            bad_index = i - n0
        records.append((i % 4, str(i), v))
    where = produce_values(brokers, topic, records)
    seal(brokers, topic, lambda p: event(n0 + 1200 + p))
    assert where[bad_index][0] == bad_p
    bad_o = where[bad_index][1]
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    _check_stopped_at(db, brokers, topic, table, group, bad_p, bad_o, proc.stderr)


# -- 8. declared columns: dotted paths, types ---------------------------------------------------


def test_declared_columns_from_nested_paths_read_back_typed(brokers, topic, tmp_path, dbs):
    db = dbs("postgres")
    table, group = db.table("decl"), db.group("decl")
    tricky = ["tab\there", "new\nline", "back\\slash", "cr\rreturn", "\\N", "ünïcødé ✓", "", "quote\"'"]
    base = dt.datetime(2024, 2, 29, 23, 59, 58, 123000, tzinfo=UTC)
    values = []
    for i in range(40):
        ts = base + dt.timedelta(seconds=i * 3601, milliseconds=i)
        values.append({
            "id": i,
            "user": {"name": tricky[i % len(tricky)] + str(i), "age": 2**40 + i if i % 5 else -i,
                     "active": i % 3 == 0, "profile": {"score": i / 7}},
            "when": ts.isoformat().replace("+00:00", "Z") if i % 2 else int(ts.timestamp() * 1000),
            "payload": {"tags": ["a", "b\tc", i], "nested": {"x": None, "q": "back\\slash"}} if i % 4 else [i, "\n"],
            "ignored": "not a column",
        })
    produce_values(brokers, topic, [(i % 4, str(i), v) for i, v in enumerate(values)])
    seal(brokers, topic, lambda p: {"id": 1000 + p})
    columns = {
        "id": {"type": "bigint"},
        "user_name": {"type": "text", "from": "user.name"},
        "age": {"type": "bigint", "from": "user.age"},
        "active": {"type": "boolean", "from": "user.active"},
        "score": {"type": "double", "from": "user.profile.score"},
        "created": {"type": "timestamptz", "from": "when"},
        "payload": {"type": "json"},
        "missing": {"type": "text", "from": "user.nope.deeper"},
    }
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=7,
                          sink=sink(db, table, columns=columns))
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    types = {c: str(info["type"]) for c, info in db.columns(table).items()}
    assert types == {"id": "BIGINT", "user_name": "TEXT", "age": "BIGINT", "active": "BOOLEAN",
                     "score": "DOUBLE PRECISION", "created": "TIMESTAMP", "payload": "JSONB",
                     "missing": "TEXT"}, types
    assert db.scalar("SELECT data_type FROM information_schema.columns WHERE table_name = :t "
                     "AND column_name = 'created'", t=table) == "timestamp with time zone"
    rows = db.select(table, *columns, order_by="id")
    assert [r[0] for r in rows] == list(range(40)) + [1000, 1001, 1002, 1003]
    for row, v in zip(rows, values):
        i = v["id"]
        ts = base + dt.timedelta(seconds=i * 3601, milliseconds=i)
        assert row == (i, v["user"]["name"], v["user"]["age"], v["user"]["active"],
                       v["user"]["profile"]["score"], ts, v["payload"], None), (row, v)
    assert rows[-1] == (1003, None, None, None, None, None, None, None)


# -- 9. validation -----------------------------------------------------------------------------


def test_upsert_without_key_is_reported_with_its_location(tmp_path):
    text = (
        "name: no-key\n"
        "source:\n"
        "  brokers: 127.0.0.1:9\n"
        "  topic: orders\n"
        "sink:\n"
        "  type: postgres\n"
        "  url: postgresql+psycopg://postgres@127.0.0.1:5432/test\n"
        "  table: orders\n"
        "  mode: upsert\n"
    )
    spec = tmp_path / "nokey.yaml"
    spec.write_text(text)
    proc = run_kpipe("validate", str(spec), timeout=60)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    m = re.match(re.escape(str(spec)) + r":(\d+):(\d+): (\S+): (.*)", lines[0])
    assert m, lines[0]
    line, col, path, message = int(m[1]), int(m[2]), m[3], m[4]
    # the sink mapping (where a missing key is reported): line 6, column 3
    assert (line, col) == (6, 3), lines[0]
    assert path == "sink.key", lines[0]
    assert "missing required key 'key'" in message, lines[0]
    # and with a key it is valid
    spec.write_text(text + "  key: [id]\n")
    ok = run_kpipe("validate", str(spec), timeout=60)
    assert ok.returncode == 0, ok.stderr

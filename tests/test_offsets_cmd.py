"""``kpipe offsets show | reset | export`` against the real broker (issue 17): every form of
reset on SQLite, one partition each; the files, PostgreSQL and S3 sinks with a replay and a
skip; the dry run changes nothing; a live member refuses the reset; ``show`` agrees with
``kpipe lag``. What landed is read back with sqlite3, psycopg, json and boto3."""
from __future__ import annotations

import csv
import json
import sqlite3
import time
from collections import Counter

import orjson
import yaml
from confluent_kafka import Consumer, TopicPartition

from conftest import write_spec
from kit import Proc, produce_values, run_kpipe, stop_cleanly, unique, wait_for
from s3kit import bucket, moto_server, objects, read_records, s3, state_of, write_s3_spec  # noqa: F401
from sqlkit import dbs, write_sql_spec  # noqa: F401
from kpipe.kafka_admin import create_topic, describe

PARTS = 6
HALF = 5  # records per partition in each of the two produce phases


def fill(brokers: str, topic: str, partitions: int = PARTS) -> int:
    """Per partition: offsets 0..4, then (after the returned time, ms) 5..9, then one seal record
    at 10 alone in its produce batch (the bundled broker's log end is right only then). The
    record at offset o of partition p has id 100 * p + o."""
    def phase(offsets):
        return produce_values(brokers, topic, [(p, str(p), {"id": 100 * p + o}) for o in offsets
                                               for p in range(partitions)])
    phase(range(HALF))
    time.sleep(0.05)
    between = int(time.time() * 1000)
    time.sleep(0.05)
    phase(range(HALF, 2 * HALF))
    phase([2 * HALF])  # one record per partition: each its own batch
    return between


def filled_topic(brokers: str, prefix: str, partitions: int) -> str:
    topic = unique(prefix)
    create_topic(brokers, topic, partitions)
    fill(brokers, topic, partitions)
    return topic


def group_committed(brokers: str, group: str, topic: str, partitions: int = PARTS) -> dict:
    c = Consumer({"bootstrap.servers": brokers, "group.id": group})
    try:
        return {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)],
                                                                timeout=10) if tp.offset >= 0}
    finally:
        c.close()


def sqlite_rows(path) -> Counter:
    """(partition, offset) of every row, read with sqlite3 itself."""
    with sqlite3.connect(path) as conn:
        return Counter(conn.execute("SELECT _partition, _offset FROM t"))


def sqlite_offsets(path, group) -> dict:
    with sqlite3.connect(path) as conn:
        try:
            return dict(conn.execute("SELECT kafka_partition, next_offset FROM kpipe_offsets WHERE group_id = ?",
                                     (group,)))
        except sqlite3.OperationalError as exc:  # a run is starting: the file is there, the table not yet
            if "no such table" not in str(exc):
                raise
            return {}


def sqlite_spec(tmp_path, brokers, topic, group, db):
    return write_sql_spec(tmp_path, brokers, topic, group=group, sink={
        "type": "sql", "url": f"sqlite:///{db}", "table": "t", "metadata_columns": ["_partition", "_offset"]})


def reset(spec, *args):
    return run_kpipe("offsets", "reset", str(spec), *args)


END = 2 * HALF + 1


def test_every_form_of_reset_on_sqlite(brokers, tmp_path):
    """One partition per form, each scoped with --topic T:P; a dry run of every form first
    changes neither the sink nor the group (one clamped to the log end, one warned of an
    insert-mode replay); after --execute a run lands exactly the records from each new
    position on."""
    topic = unique("t-offsets-forms")
    create_topic(brokers, topic, PARTS)
    between = fill(brokers, topic)
    db, group = tmp_path / "sink.db", unique("kpg-forms")
    spec = sqlite_spec(tmp_path, brokers, topic, group, db)
    first = run_kpipe("run", str(spec), "--max-messages", "30", "--no-progress")
    assert first.returncode == 0, first.stderr
    stored, before = sqlite_offsets(db, group), sqlite_rows(db)
    assert sum(stored.values()) == 30 and sum(before.values()) == 30
    csv_file = tmp_path / "positions.csv"
    csv_file.write_text(f"{topic},5,7\n")
    forms = {0: ["--to-earliest"], 1: ["--to-latest"], 2: ["--to-offset", "3"],
             3: ["--to-datetime", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(between / 1000))
                 + f".{between % 1000:03d}Z"],
             4: ["--shift-by", "-2"], 5: ["--from-file", str(csv_file)]}
    expect = {0: 0, 1: END, 2: 3, 3: HALF, 4: max(0, stored.get(4, 0) - 2), 5: 7}

    group_before = group_committed(brokers, group, topic)
    for p, form in forms.items():
        dry = reset(spec, *form, "--topic", f"{topic}:{p}", "--json")
        assert dry.returncode == 0, dry.stderr
        plan = json.loads(dry.stdout)
        assert not plan["applied"] and [(m["partition"], m["new"]) for m in plan["partitions"]] == [(p, expect[p])]
    far = reset(spec, "--to-offset", "1000", "--topic", f"{topic}:0")
    assert far.returncode == 0 and "asked 1000: clamped to the log end" in far.stdout, far.stdout + far.stderr
    assert "insert-mode" not in far.stdout
    back = reset(spec, "--shift-by", "-1")
    assert back.returncode == 0 and "insert-mode table t" in back.stdout and "upsert" in back.stdout, back.stdout
    assert sqlite_offsets(db, group) == stored and sqlite_rows(db) == before, "a dry run changed the sink"
    assert group_committed(brokers, group, topic) == group_before, "a dry run changed the group"

    for p, form in forms.items():
        done = reset(spec, *form, "--topic", f"{topic}:{p}", "--execute")
        assert done.returncode == 0, done.stderr
    assert sqlite_offsets(db, group) == expect
    assert group_committed(brokers, group, topic) == expect

    again = run_kpipe("run", str(spec), "--until-caught-up", "--no-progress")
    assert again.returncode == 0, again.stderr
    landed = sqlite_rows(db) - before
    assert landed == Counter((p, o) for p in range(PARTS) for o in range(expect[p], END))


def test_show_agrees_with_lag_and_export_feeds_from_file(brokers, tmp_path):
    topic = filled_topic(brokers, "t-offsets-show", 4)
    out, name = tmp_path / "out", unique("show")
    spec = write_spec(tmp_path, brokers, topic, out, name=name)
    assert run_kpipe("run", str(spec), "--max-messages", "20", "--no-progress").returncode == 0
    show = run_kpipe("offsets", "show", str(spec), "--json")
    lag = run_kpipe("lag", str(spec), "--json")
    assert show.returncode == 0 and lag.returncode == 0, show.stderr + lag.stderr
    shown = {r["partition"]: r for r in json.loads(show.stdout)["partitions"]}
    lagged = {r["partition"]: r for r in json.loads(lag.stdout)["partitions"]}
    for p, r in lagged.items():
        s = shown[p]
        assert (s["start"], s["lag"], s["log_end"]) == (r["committed"] if r["committed"] is not None
                                                        else s["log_start"], r["lag"], r["end"]), (s, r)
        assert s["from"] == {"none": "start"}.get(r["source"], r["source"])
    table = run_kpipe("offsets", "show", str(spec))
    assert table.stdout.splitlines()[1].split() == ["topic", "partition", "sink", "group", "log-start", "log-end",
                                                    "lag", "next", "from"]
    exported = run_kpipe("offsets", "export", str(spec))
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.reader(exported.stdout.splitlines()))
    assert rows == [[topic, str(p), str(shown[p]["start"])] for p in range(4)]
    # Move on, then put the exported positions back: the files sink moves aside what lies past them.
    assert reset(spec, "--to-latest", "--execute").returncode == 0
    (tmp_path / "saved.csv").write_text(exported.stdout)
    back = reset(spec, "--from-file", str(tmp_path / "saved.csv"), "--execute", "--json")
    assert back.returncode == 0, back.stderr
    assert {m["partition"]: m["new"] for m in json.loads(back.stdout)["partitions"]} == \
        {p: shown[p]["start"] for p in range(4)}


def files_ids(out) -> Counter:
    """Ids in the published files (not the moved-aside ones), read with json."""
    ids: Counter = Counter()
    for f in out.rglob("*.jsonl"):
        if not any(part.startswith(".") for part in f.relative_to(out).parts):
            ids.update(orjson.loads(line)["id"] for line in f.read_bytes().splitlines())
    return ids


def test_files_replay_and_skip(brokers, tmp_path):
    topic = filled_topic(brokers, "t-offsets-files", 2)
    out, name = tmp_path / "out", unique("files")
    spec = write_spec(tmp_path, brokers, topic, out, name=name, max_records=4)
    assert run_kpipe("run", str(spec), "--until-caught-up", "--no-progress").returncode == 0
    everything = Counter(100 * p + o for p in range(2) for o in range(END))
    assert files_ids(out) == everything
    # Offset 5 sits inside a file of 4..7: a file is not split, so the reset is refused.
    inside = reset(spec, "--to-offset", "5", "--topic", f"{topic}:0", "--execute")
    assert inside.returncode == 2 and "reset to 4 or 8" in inside.stderr, inside.stderr
    assert reset(spec, "--to-offset", "4", "--topic", f"{topic}:0", "--execute").returncode == 0
    assert reset(spec, "--to-latest", "--topic", f"{topic}:1", "--execute").returncode == 0
    assert files_ids(out) == Counter(i for i in everything if i >= 100 or i < 4)
    moved = [f for f in (out / topic / "0").glob(".replaced-4-*/*.jsonl")]
    assert len(moved) == 2, moved  # 4..7 and 8..10: kept, not deleted
    assert run_kpipe("run", str(spec), "--until-caught-up", "--no-progress").returncode == 0
    assert files_ids(out) == everything


def test_postgres_replay_by_datetime_duplicates_in_insert_mode(brokers, tmp_path, dbs):
    db = dbs("postgres")
    topic = filled_topic(brokers, "t-offsets-pg", 2)
    group, table = db.group("reset"), db.table("reset")
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, sink={
        "type": "postgres", "url": db.url, "table": table, "mode": "insert",
        "metadata_columns": ["_partition", "_offset"]})
    assert run_kpipe("run", str(spec), "--until-caught-up", "--no-progress").returncode == 0
    back = reset(spec, "--to-datetime", "2000-01-01T00:00:00Z", "--topic", topic + ":1", "--execute")
    assert back.returncode == 0, back.stderr
    assert db.offsets(group) == {(topic, 0): END, (topic, 1): 0}
    assert run_kpipe("run", str(spec), "--until-caught-up", "--no-progress").returncode == 0
    rows = Counter(db.driver_rows(f"SELECT _partition, _offset FROM {db.q(table)}"))  # psycopg
    assert rows == Counter({**{(0, o): 1 for o in range(END)}, **{(1, o): 2 for o in range(END)}})


def test_s3_replay_and_skip(brokers, tmp_path, s3, bucket, moto_server):
    topic = filled_topic(brokers, "t-offsets-s3", 2)
    spec = write_s3_spec(tmp_path, brokers, topic, moto_server.url, bucket, "raw", name=unique("s3"),
                         max_records=100, format="jsonl")
    assert reset(spec, "--to-offset", "6", "--topic", f"{topic}:1", "--execute").returncode == 0
    assert state_of(s3, bucket, "raw", topic, 1)["next_offset"] == 6
    assert run_kpipe("run", str(spec), "--until-caught-up", "--no-progress").returncode == 0
    first = {k: v for k, v in objects(s3, bucket, "raw").items()}
    ids = Counter(r["id"] for k, v in first.items() for r in read_records(k, v))
    assert ids == Counter([o for o in range(END)] + [100 + o for o in range(6, END)])
    back = reset(spec, "--to-earliest", "--topic", f"{topic}:0", "--execute")
    assert back.returncode == 0, back.stderr
    assert state_of(s3, bucket, "raw", topic, 0)["next_offset"] == 0
    assert run_kpipe("run", str(spec), "--until-caught-up", "--no-progress").returncode == 0
    after = objects(s3, bucket, "raw")
    assert Counter(r["id"] for k, v in after.items() for r in read_records(k, v)) == ids  # same range: replaced


def test_a_reset_with_a_live_member_is_refused(brokers, tmp_path):
    topic = filled_topic(brokers, "t-offsets-live", 2)
    db, group = tmp_path / "sink.db", unique("kpg-live")
    spec = sqlite_spec(tmp_path, brokers, topic, group, db)
    proc = Proc(tmp_path / "logs", "live", "run", str(spec), "--no-progress")
    try:
        wait_for(lambda: sqlite_offsets(db, group) == {0: END, 1: END} if db.exists() else False, 60,
                 "the run to catch up", [proc])
        wait_for(lambda: str(describe(brokers, group).state.name) == "STABLE", 30, "the group to be stable", [proc])
        refused = reset(spec, "--to-earliest", "--execute")
        assert refused.returncode == 1, (refused.returncode, refused.stdout, refused.stderr)
        assert "refused" in refused.stderr and "stable" in refused.stderr, refused.stderr
        assert sqlite_offsets(db, group) == {0: END, 1: END}
    finally:
        stop_cleanly(proc)
    done = reset(spec, "--to-earliest", "--execute")
    assert done.returncode == 0, done.stderr
    assert sqlite_offsets(db, group) == {0: 0, 1: 0}



def files_run(brokers, tmp_path, prefix):
    topic = filled_topic(brokers, prefix, 2)
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=unique(prefix))
    assert run_kpipe("run", str(spec), "--until-caught-up", "--no-progress").returncode == 0
    return topic, out, spec


def yaml_name(spec) -> str:
    return yaml.safe_load(spec.read_text())["name"]


def heads(out, topic) -> dict:
    from kpipe.api import SinkContext
    from kpipe.sinks.files.sink import FilesSink
    return FilesSink({"path": str(out), "format": "jsonl"}, SinkContext("x", "x")).load_offsets(
        [(topic, 0), (topic, 1)])


def test_a_stale_plan_and_a_sink_that_cannot_move_are_refused_changing_nothing(brokers, tmp_path, monkeypatch,
                                                                                capsys):
    """Between the plan and its execution another writer moves partition 0 on: the sink's fence
    refuses the whole reset (exit 1), and neither the sink nor the group moves. A sink that
    stores offsets without alter_offsets: the dry run says so, --execute is refused (exit 1)."""
    import dataclasses

    from kpipe.api import Batch, Capabilities, SinkContext
    from kpipe.cli import main
    from kpipe.plugins import registry
    from kpipe.sinks.files.sink import FilesSink

    topic, out, spec = files_run(brokers, tmp_path, "t-offsets-stale")
    group = yaml_name(spec)
    before = group_committed(brokers, group, topic, 2)
    real = FilesSink.alter_offsets

    def late_writer_first(self, group, positions, expected):
        other = FilesSink({"path": str(out), "format": "jsonl"}, SinkContext("late", "late"))
        other.load_offsets([(topic, 0)])
        other.write([Batch(topic, 0, END, END + 2, [], [])])  # a run moved on: all filtered, .next = END + 2
        return real(self, group, positions, expected)

    with monkeypatch.context() as m:
        m.setattr(FilesSink, "alter_offsets", late_writer_first)
        assert main(["offsets", "reset", str(spec), "--to-earliest", "--execute"]) == 1
    assert "position moved since it was read" in capsys.readouterr().err
    assert heads(out, topic) == {(topic, 0): END + 2, (topic, 1): END}
    assert group_committed(brokers, group, topic, 2) == before

    reg = registry()
    monkeypatch.setitem(reg.plugins["sink"], "files", dataclasses.replace(
        reg.get("sink", "files"), capabilities=Capabilities(stores_offsets=True, idempotent_writes=True)))
    assert main(["offsets", "reset", str(spec), "--to-earliest"]) == 0
    assert "cannot move it (no alter_offsets)" in capsys.readouterr().out
    assert main(["offsets", "reset", str(spec), "--to-earliest", "--execute"]) == 1
    assert "the files sink cannot move its stored offsets" in capsys.readouterr().err
    assert heads(out, topic) == {(topic, 0): END + 2, (topic, 1): END}
    assert group_committed(brokers, group, topic, 2) == before

"""``kpipe lag`` and ``kpipe check`` against the real broker, the files sink and PostgreSQL;
``--until-caught-up`` exit codes as cron and systemd see them."""
from __future__ import annotations

import json

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from conftest import records_in, write_spec
from kit import SESSION, produce_events, run_kpipe, seal_events, unique
from sqlkit import dbs, write_sql_spec  # noqa: F401
from kpipe.api import SinkContext
from kpipe.sinks.files.sink import FilesSink


def broker_view(brokers: str, group: str, topic: str) -> dict[int, tuple[int, int]]:
    """{partition: (the group's committed offset, high watermark)} from a plain consumer."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": group})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
        return {tp.partition: (tp.offset, c.get_watermark_offsets(TopicPartition(topic, tp.partition),
                                                                   timeout=10, cached=False)[1])
                for tp in committed}
    finally:
        c.close()


def test_lag_equals_end_offsets_minus_committed_positions(brokers, topic, tmp_path):
    produced = seal_events(brokers, topic, len(produce_events(brokers, topic, 1000)))
    out = tmp_path / "out"
    name = unique("lag")
    spec = write_spec(tmp_path, brokers, topic, out, name=name)
    run = run_kpipe("run", str(spec), "--max-messages", "600", "--no-progress")
    assert run.returncode == 0, run.stderr
    proc = run_kpipe("lag", str(spec), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rows = {r["partition"]: r for r in report["partitions"]}
    assert set(rows) == {0, 1, 2, 3}
    view = broker_view(brokers, name, topic)
    store = FilesSink({"path": str(out), "format": "jsonl"}, SinkContext(name, name))
    stored = store.load_offsets([(topic, p) for p in range(4)])
    for p, r in rows.items():
        committed, end = view[p]
        assert r["end"] == end, (p, r, view)
        assert r["committed"] == committed == stored.get((topic, p), committed), (p, r, view, stored)
        assert r["lag"] == end - committed
        assert r["source"] == ("sink" if (topic, p) in stored else "group")
    assert report["total"]["end"] == produced == sum(e for _, e in view.values())
    assert report["total"]["lag"] == produced - 600
    assert report["total"]["committed"] == 600

    table = run_kpipe("lag", str(spec))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split() == ["topic", "partition", "committed", "end", "lag", "from"]
    assert lines[-1].split() == ["total", "600", str(produced), str(produced - 600)]
    assert len(lines) == 2 + 4 + 1


def test_lag_reads_the_postgres_offset_store(brokers, topic, tmp_path, dbs):

    db = dbs("postgres")
    produced = seal_events(brokers, topic, len(produce_events(brokers, topic, 400)))
    group = db.group("lag")
    spec = write_sql_spec(tmp_path, brokers, topic, group=group,
                          sink={"type": db.sink_type, "url": db.url, "table": db.table("lag")})
    run = run_kpipe("run", str(spec), "--until-caught-up", "--no-progress")
    assert run.returncode == 0, run.stderr
    stored = db.offsets(group)
    proc = run_kpipe("lag", str(spec), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["partitions"]
    view = broker_view(brokers, group, topic)
    for r in rows:
        assert r["source"] == "sink" and r["committed"] == stored[(topic, r["partition"])]
        assert r["end"] == view[r["partition"]][1]
        assert r["lag"] == r["end"] - r["committed"] == 0
    assert sum(r["end"] for r in rows) == produced


def _spec(tmp_path, brokers: str, topic: str, source=None, **extra) -> str:
    doc = {"name": unique("check"), "source": {"brokers": brokers, "topic": topic, "options": SESSION, **(source or {})},
           "sink": {"type": "files", "path": str(tmp_path / "out")}, **extra}
    path = tmp_path / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_check_ok(brokers, topic, tmp_path):
    spec = _spec(tmp_path, brokers, topic, errors={"deserialize": "dlq", "dlq": {"topic": topic}})
    proc = run_kpipe("check", spec)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0:2] for line in lines] == [
        ["ok", " spec"], ["ok", " kafka"], ["ok", f" topic {topic}"], ["ok", " sink files"], ["ok", " dlq"]]
    assert "4 partitions" in lines[2]
    assert f"no stored offset for {topic}[0] yet" in lines[3]
    assert proc.stderr == ""


def test_check_unknown_topic_exits_2_with_one_line(brokers, tmp_path):
    spec = _spec(tmp_path, brokers, "no-such-topic-anywhere")
    proc = run_kpipe("check", spec)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        f"kpipe check: {spec}: topic no-such-topic-anywhere: does not exist on {brokers}"]
    assert "FAILED: topic no-such-topic-anywhere" in proc.stdout
    assert "ok: sink files" in proc.stdout  # the other checks still ran


def test_check_unreachable_broker_exits_3_with_one_line(tmp_path):
    spec = _spec(tmp_path, "127.0.0.1:1", "t", retry={"max_attempts": 1})
    proc = run_kpipe("check", spec, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kpipe check: {spec}: kafka: connecting to Kafka"), lines
    assert "127.0.0.1:1" in lines[0]


def test_check_and_lag_exit_1_for_an_invalid_spec(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nsource:\n  brokers: b\n  topic: t\nsink:\n  type: files\n")
    for cmd in ("check", "lag"):
        proc = run_kpipe(cmd, str(spec))
        assert proc.returncode == 1 and "sink.path: missing required key 'path'" in proc.stderr


def test_lag_unreachable_broker_exits_3(tmp_path):
    spec = _spec(tmp_path, "127.0.0.1:1", "t", retry={"max_attempts": 1})
    proc = run_kpipe("lag", spec, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("case,expected", [("reachable", 0), ("unreachable", 3), ("invalid", 1)])
def test_until_caught_up_exit_codes(brokers, topic, tmp_path, case, expected):
    if case == "reachable":
        produce_events(brokers, topic, 100)
        spec = _spec(tmp_path, brokers, topic)
    elif case == "unreachable":
        spec = _spec(tmp_path, "127.0.0.1:1", topic, source={"connect_timeout": "3s"}, retry={"max_attempts": 1})
    else:
        spec = _spec(tmp_path, brokers, topic, batch={"max_age": "soon"})
    proc = run_kpipe("run", spec, "--until-caught-up", timeout=60)
    assert proc.returncode == expected, proc.stderr
    if case == "reachable":
        assert records_in(tmp_path / "out") > 0

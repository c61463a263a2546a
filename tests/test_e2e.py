"""End to end through the CLI against the real broker: files land exactly once, in order."""
from __future__ import annotations

import csv
import time

import orjson
from confluent_kafka import Consumer, TopicPartition

from conftest import assert_exactly_once, read_output, write_spec
from kit import produce_events, run_kpipe


def test_until_caught_up_lands_every_message_once_in_offset_order(brokers, topic, tmp_path):
    produce_events(brokers, topic, 20_000)
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, max_records=3000)
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    assert_exactly_once(out, 20_000)
    ids, ranges = read_output(out)
    for partition, files in ranges.items():
        assert files[0][0] == 0
        assert files[-1][1] == 4999  # round-robin: 5000 per partition
        assert all(last - first + 1 <= 3000 for first, last in files)
    for f in out.rglob("*.jsonl"):
        partition = int(f.parent.name)
        got = [orjson.loads(line)["id"] for line in f.read_bytes().splitlines()]
        first = int(f.name.split("+")[2])
        # produced round-robin, so offset o of partition p holds id 4*o + p
        assert got == [4 * o + partition for o in range(first, first + len(got))]


def test_committed_offsets_mirror_the_sink(brokers, topic, tmp_path):
    produce_events(brokers, topic, 1000)
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name="mirror")
    assert run_kpipe("run", str(spec), "--until-caught-up").returncode == 0
    c = Consumer({"bootstrap.servers": brokers, "group.id": "mirror"})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
    finally:
        c.close()
    assert sorted(tp.offset for tp in committed) == [250, 250, 250, 250]


def test_empty_topic_exits_zero_promptly(brokers, topic, tmp_path):
    spec = write_spec(tmp_path, brokers, topic, tmp_path / "out")
    started = time.monotonic()
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 20  # a group join is ~3 s here
    assert not list((tmp_path / "out").rglob("*.jsonl"))


def test_restart_resumes_where_the_files_end(brokers, topic, tmp_path):
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out)
    produce_events(brokers, topic, 2000)
    assert run_kpipe("run", str(spec), "--until-caught-up").returncode == 0
    before = sorted(p.name for p in out.rglob("*.jsonl"))
    produce_events(brokers, topic, 2000, start=2000)
    assert run_kpipe("run", str(spec), "--until-caught-up").returncode == 0
    after = sorted(p.name for p in out.rglob("*.jsonl"))
    assert set(before) < set(after) and len(after) == 8
    assert_exactly_once(out, 4000)


def test_max_messages_stops_after_n(brokers, topic, tmp_path):
    produce_events(brokers, topic, 5000)
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out)
    proc = run_kpipe("run", str(spec), "--max-messages", "1200")
    assert proc.returncode == 0, proc.stderr
    ids, _ = read_output(out)
    assert sum(ids.values()) == 1200 and len(ids) == 1200
    assert run_kpipe("run", str(spec), "--until-caught-up").returncode == 0
    assert_exactly_once(out, 5000)


def test_replay_from_earliest_writes_byte_identical_files(brokers, topic, tmp_path):
    produce_events(brokers, topic, 9000)
    first, second = tmp_path / "a", tmp_path / "b"
    for name, out in (("replay-a", first), ("replay-b", second)):
        spec = write_spec(tmp_path, brokers, topic, out, name=name, max_records=1000, filename=f"{name}.yaml")
        assert run_kpipe("run", str(spec), "--until-caught-up").returncode == 0
    files_a = sorted(p.relative_to(first) for p in first.rglob("*.jsonl"))
    files_b = sorted(p.relative_to(second) for p in second.rglob("*.jsonl"))
    assert files_a == files_b and len(files_a) == 12
    for rel in files_a:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_csv_format_reads_back(brokers, topic, tmp_path):
    produce_events(brokers, topic, 400)
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, fmt="csv")
    assert run_kpipe("run", str(spec), "--until-caught-up").returncode == 0
    rows = []
    for f in sorted(out.rglob("*.csv")):
        with open(f, newline="") as fh:
            rows += list(csv.DictReader(fh))
    assert sorted(int(r["id"]) for r in rows) == list(range(400))
    assert {r["name"] for r in rows if r["id"] == "7"} == {"event-7"}


def test_bad_json_fails_after_writing_what_precedes_it(brokers, topic, tmp_path):
    from kpipe.kafka_admin import produce

    good = [(b"k", orjson.dumps({"id": i})) for i in range(10)]
    produce(brokers, topic, iter(good[:5] + [(b"k", b"{not json")] + good[5:]), partitions=None)
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name="badjson")
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 2, proc.stderr
    assert "invalid JSON" in proc.stderr
    ids, _ = read_output(out)
    # all 11 went to one partition (same key): the 5 before the bad one landed, nothing after
    assert sorted(ids) == [0, 1, 2, 3, 4]
    c = Consumer({"bootstrap.servers": brokers, "group.id": "badjson"})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
    finally:
        c.close()
    assert max(tp.offset for tp in committed) == 5  # the bad record's offset: not past it
    bad_partition = [tp.partition for tp in committed if tp.offset == 5][0]
    assert f"{topic}[{bad_partition}]@5" in proc.stderr

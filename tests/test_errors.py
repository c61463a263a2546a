"""Bad records through the CLI against the real broker: the per-stage error policies (fail,
skip, dlq), the dead-letter queue's headers and its ordering with commits, tombstones, and
ranges that produce no records."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from conftest import read_output, write_spec
from kit import committed, edit_spec, event, produce_values, read_topic, run_kpipe, seal_events, unique
from kpipe.kafka_admin import create_topic

POISON = b'{"id": "not closed'


def spec_with(tmp_path: Path, brokers: str, topic: str, out: Path, **extra) -> Path:
    return edit_spec(write_spec(tmp_path, brokers, topic, out, name=unique("errors"), max_records=1000), **extra)


def produce_with_poison(brokers: str, topic: str, n: int, poison_at: int) -> tuple[int, int, int]:
    """Events 0..n-1 (event i to partition i % 4), except that event ``poison_at`` is replaced
    by invalid JSON; then a seal. Returns the poison's (partition, offset, timestamp)."""
    items = [(i % 4, str(i), POISON if i == poison_at else event(i)) for i in range(n)]
    where = produce_values(brokers, topic, items)
    seal_events(brokers, topic, n)
    return where[poison_at]


def test_poison_message_goes_to_the_dlq_with_its_headers_and_the_rest_lands(brokers, topic, tmp_path):
    dlq = f"{topic}.dlq"
    create_topic(brokers, dlq, 1)
    partition, offset, ts = produce_with_poison(brokers, topic, 10_000, poison_at=5001)
    out = tmp_path / "out"
    spec = spec_with(tmp_path, brokers, topic, out, errors={"deserialize": "dlq", "dlq": {"topic": dlq}})
    name = yaml.safe_load(spec.read_text())["name"]

    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    assert "dead-lettered 1" in proc.stderr
    ids, _ = read_output(out)
    assert set(ids) == set(range(10_004)) - {5001} and max(ids.values()) == 1

    (letter,) = read_topic(brokers, dlq, 1)
    assert letter.value() == POISON and letter.key() == b"5001"
    assert letter.timestamp() == (1, ts)
    headers = {k: v.decode() for k, v in letter.headers()}
    assert headers["kpipe.error.stage"] == "deserialize"
    assert headers["kpipe.error.topic"] == topic
    assert headers["kpipe.error.partition"] == str(partition)
    assert headers["kpipe.error.offset"] == str(offset)
    assert headers["kpipe.error.pipeline"] == name
    assert headers["kpipe.error.class"].endswith("DecodeError")  # the JSON parser's own error class
    assert "invalid JSON" in headers["kpipe.error.message"]
    assert committed(brokers, name, topic) == {p: 2501 for p in range(4)}


def test_an_unwritable_dlq_stops_the_run_without_committing_past_the_bad_record(brokers, topic, tmp_path):
    partition, offset, _ = produce_with_poison(brokers, topic, 4000, poison_at=2002)
    out = tmp_path / "out"
    spec = spec_with(tmp_path, brokers, topic, out, errors={
        "default": "dlq",
        "dlq": {"topic": "nowhere", "brokers": "127.0.0.1:1", "options": {"message.timeout.ms": 2000}}})
    name = yaml.safe_load(spec.read_text())["name"]

    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 2, proc.stderr
    assert "dead-letter topic 'nowhere'" in proc.stderr and "not acknowledged" in proc.stderr
    _, ranges = read_output(out)
    written_past = [r for r in ranges.get(partition, []) if r[1] >= offset]
    assert not written_past, f"partition {partition} written past the bad record at {offset}: {ranges[partition]}"
    assert committed(brokers, name, topic)[partition] <= offset


def test_skip_logs_the_record_and_goes_on(brokers, topic, tmp_path):
    partition, offset, _ = produce_with_poison(brokers, topic, 2000, poison_at=17)
    out = tmp_path / "out"
    spec = spec_with(tmp_path, brokers, topic, out, errors={"default": "skip"})
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    assert f"bad record at {topic}[{partition}]@{offset} (deserialize): invalid JSON" in proc.stderr
    assert "skipped 1" in proc.stderr
    ids, _ = read_output(out)
    assert set(ids) == set(range(2004)) - {17}


def test_fail_writes_what_precedes_and_commits_nothing_past(brokers, topic, tmp_path):
    partition, offset, _ = produce_with_poison(brokers, topic, 2000, poison_at=1001)
    out = tmp_path / "out"
    spec = spec_with(tmp_path, brokers, topic, out)  # errors default: fail
    name = yaml.safe_load(spec.read_text())["name"]
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 2
    assert f"bad record at {topic}[{partition}]@{offset}: deserialize: invalid JSON" in proc.stderr
    assert "(errors.deserialize: fail)" in proc.stderr
    _, ranges = read_output(out)
    assert ranges[partition][-1][1] == offset - 1  # everything before it, nothing after
    assert committed(brokers, name, topic)[partition] == offset


def test_validation_failures_name_the_field(brokers, topic, tmp_path):
    schema = tmp_path / "event.schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["id", "amount"],
                                  "properties": {"amount": {"type": "integer", "maximum": 900}}}))
    produce_values(brokers, topic, [(i % 4, str(i), event(i)) for i in range(1000)])
    seal_events(brokers, topic, 1000)
    out = tmp_path / "out"
    spec = spec_with(tmp_path, brokers, topic, out, errors={"validate": "skip"},
                     deserializer={"type": "json", "validate": schema.name})
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    too_big = {i for i in range(1004) if event(i)["amount"] > 900}
    assert too_big and "(validate): $.amount: " in proc.stderr
    ids, _ = read_output(out)
    assert set(ids) == set(range(1004)) - too_big
    assert re.search(rf"skipped {len(too_big)}\b", proc.stderr)


def test_tombstones_are_skipped_by_default_and_their_offsets_committed(brokers, topic, tmp_path):
    produce_values(brokers, topic, [(i % 4, str(i), None if i % 10 == 3 else event(i)) for i in range(400)])
    seal_events(brokers, topic, 400)
    out = tmp_path / "out"
    spec = spec_with(tmp_path, brokers, topic, out)
    name = yaml.safe_load(spec.read_text())["name"]
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    ids, _ = read_output(out)
    assert set(ids) == {i for i in range(404) if i % 10 != 3 or i >= 400}
    assert "filtered 40" in proc.stderr
    assert committed(brokers, name, topic) == {p: 101 for p in range(4)}

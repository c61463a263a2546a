"""Issue 15 item 7: what a jsonl file holds for tombstones (docs/sinks/files.md, Formats). A
tombstone never reaches the files sink: it is skipped, and its offset is covered by the file of
its batch. A record whose value is the JSON text ``null`` is not a tombstone: a ``null`` line."""
from __future__ import annotations

import json

from conftest import write_spec
from kit import ROOT, produce_values, run_kpipe, seal, unique
from kpipe.paths import parse_object_name


def test_a_tombstone_is_not_written_and_a_json_null_is(brokers, topic, tmp_path):
    values = [{"id": 0}, None, b"null", {"id": 3}, None]  # None: a Kafka tombstone (no value)
    produce_values(brokers, topic, [(0, str(i), v) for i, v in enumerate(values)])
    seal(brokers, topic, lambda p: {"seal": p})
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=unique("tombstones"))
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted((out / topic / "0").glob("*.jsonl"))
    lines = [json.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert lines == [{"id": 0}, None, {"id": 3}, {"seal": 0}]
    covered = [parse_object_name(f.name)[2:] for f in files]  # the files tile offsets 0..5
    assert covered[0][0] == 0 and covered[-1][1] == 5
    assert all(b[0] == a[1] + 1 for a, b in zip(covered, covered[1:]))


def test_tombstones_delete_is_refused_for_the_files_sink(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nsource: {brokers: localhost:9092, topic: t}\ntombstones: delete\n"
                    "sink: {type: files, path: ./out}\n")
    proc = run_kpipe("validate", str(spec))
    assert proc.returncode == 1 and "tombstones" in proc.stderr


def test_the_docs_say_what_a_tombstone_becomes():
    text = (ROOT / "docs" / "sinks" / "files.md").read_text()
    assert "A tombstone is `null`" not in text  # it can never be written (issue 15)
    assert "never reaches this sink" in text and "is written as a `null` line" in text

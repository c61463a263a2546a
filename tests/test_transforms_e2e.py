"""Transforms inside a real run: the chain reshapes and filters what lands, a transform's bad
record follows errors.transform, filtered offsets are still committed, and a python transform
next to the spec is found."""
from __future__ import annotations

import textwrap

import yaml

from conftest import write_spec
from kit import committed, edit_spec, event, produce_values, read_topic, run_kpipe, seal_events, unique
from kpipe.kafka_admin import create_topic


def test_a_chain_of_transforms_shapes_what_lands(brokers, topic, tmp_path):
    (tmp_path / "shaping.py").write_text(textwrap.dedent("""\
        def tag(value, meta):
            return {**value, "where": f"{meta.topic}/{meta.partition}@{meta.offset}"}
    """))
    dlq = f"{topic}.dlq"
    create_topic(brokers, dlq, 1)
    records = []
    for i in range(1000):
        v = event(i)
        if i == 401:
            v["amount"] = "lots"  # the cast rejects it
        records.append((i % 4, str(i), v))
    where = produce_values(brokers, topic, records)
    seal_events(brokers, topic, 1000)
    out = tmp_path / "out"
    name = unique("shape")
    spec = edit_spec(write_spec(tmp_path, brokers, topic, out, name=name, max_records=100), transforms=[
        {"cast": {"amount": "int"}},
        {"filter": "amount % 2 == 0"},
        {"set": {"double": "amount * 2", "topic": "_meta.topic"}},
        {"drop": ["name"]},
        {"python": "shaping:tag"},
    ], errors={"transform": "dlq", "dlq": {"topic": dlq}})

    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    lines = [yaml.safe_load(line) for f in sorted(out.rglob("*.jsonl")) for line in f.read_text().splitlines()]
    expected_ids = {i for i in range(1004) if i != 401 and event(i)["amount"] % 2 == 0}
    assert {v["id"] for v in lines} == expected_ids and len(lines) == len(expected_ids)
    by_id = {v["id"]: v for v in lines}
    p, o, _ = where[10]
    assert by_id[10] == {"id": 10, "amount": 10, "double": 20, "topic": topic, "where": f"{topic}/{p}@{o}"}
    assert f"filtered {1004 - 1 - len(expected_ids)}" in proc.stderr and "dead-lettered 1" in proc.stderr
    (letter,) = read_topic(brokers, dlq, 1)
    headers = {k: v.decode() for k, v in letter.headers()}
    assert headers["kpipe.error.stage"] == "transform" and "amount" in headers["kpipe.error.message"]
    assert committed(brokers, name, topic) == {p: 251 for p in range(4)}

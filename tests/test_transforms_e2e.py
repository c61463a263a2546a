"""Transforms inside a real run: the chain reshapes and filters what lands, a transform's bad
record follows errors.transform, filtered offsets are still committed, and a python transform
next to the spec is found."""
from __future__ import annotations

import textwrap

import yaml

from conftest import write_spec
from kit import committed, edit_spec, event, produce_values, read_topic, run_kpipe, seal, seal_events, unique
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


def test_a_partition_the_filter_empties_is_stored_as_caught_up(brokers, topic, tmp_path):
    """Every record of partition 3 is filtered out: the files sink still stores its position, so
    `kpipe lag` (which reads the sink's offsets) shows it caught up and a restart reads nothing."""
    def value(i: int, p: int) -> dict:
        return {**event(i), "country": "US" if p == 3 else "DE"}

    produce_values(brokers, topic, [(i % 4, str(i), value(i, i % 4)) for i in range(800)])
    seal(brokers, topic, lambda p: value(800 + p, p))  # exact end offsets under the bundled broker
    out = tmp_path / "out"
    spec = edit_spec(write_spec(tmp_path, brokers, topic, out, name=unique("emptied"), max_records=50),
                     transforms=[{"filter": 'country == "DE"'}])
    first = run_kpipe("run", str(spec), "--until-caught-up")
    assert first.returncode == 0, first.stderr
    assert not list((out / topic / "3").glob("*.jsonl")) and (out / topic / "3" / ".next").exists()
    lag = run_kpipe("lag", "--json", str(spec))
    assert lag.returncode == 0, lag.stderr
    rows = {r["partition"]: r for r in yaml.safe_load(lag.stdout)["partitions"]}
    assert rows[3]["committed"] == 201 and rows[3]["lag"] == 0, rows[3]
    again = run_kpipe("run", str(spec), "--until-caught-up")
    assert again.returncode == 0 and "consumed 0," in again.stderr, again.stderr

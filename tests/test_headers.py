"""Repeated Kafka header names (issue 15 item 5): Kafka lets a record carry a header name more
than once. Transforms see ``headers`` (name -> last value, as before) and ``header_list`` (every
pair, in order), in CEL, in python transforms and in ``kpipe test`` cases; a dead letter keeps
them all. The end-to-end tests produce real records with repeated names through the broker and
read what landed with orjson, and the dead letters with a plain confluent_kafka Consumer.
"""
from __future__ import annotations

import base64
import os

import orjson
import yaml
from confluent_kafka import Producer
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import write_spec
from kit import edit_spec, read_topic, run_kpipe, unique
from kpipe.api import Metadata
from kpipe.expressions import compile as cel
from kpipe.kafka_admin import create_topic
from kpipe.transforms.python import RecordMeta
from kpipe.transforms.testing import FakeMessage, run_cases

EXAMPLES = int(os.environ.get("KPIPE_HEADER_EXAMPLES", "60"))
HERE = os.path.dirname(os.path.abspath(__file__))

# few names, so that repeats are common; values are bytes or null, as Kafka allows
headers_lists = st.lists(st.tuples(st.sampled_from(["hop", "trace", "Hop", "x-id", ""]),
                                   st.one_of(st.none(), st.binary(max_size=8))), max_size=8)


def last_wins(pairs: list) -> dict:
    """The model of ``headers``: a name's last value."""
    out: dict = {}
    for k, v in pairs:
        out.pop(k, None)
        out[k] = v
    return out


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
@given(st.lists(headers_lists, min_size=1, max_size=4))
def test_every_view_of_the_headers_matches_the_model(records):
    msgs = [FakeMessage({"i": i}, headers=h or None, offset=i) for i, h in enumerate(records)]
    meta = Metadata("t", 0, msgs)
    as_list = cel("_meta.header_list")
    as_map = cel("_meta.headers")
    hops = cel('_meta.header_list.filter(h, h[0] == "hop").map(h, h[1])')
    for i, pairs in enumerate(records):
        assert meta.header_list(i) == pairs
        assert meta.headers(i) == last_wins(pairs)
        record = RecordMeta(meta, i)
        assert record.header_list == pairs and record.headers == last_wins(pairs)
        assert [tuple(p) for p in as_list.evaluate({}, meta, i)] == pairs
        assert dict(as_map.evaluate({}, meta, i)) == last_wins(pairs)
        assert list(hops.evaluate({}, meta, i)) == [v for k, v in pairs if k == "hop"]


def test_a_spec_test_case_gives_repeated_names_as_pairs():
    transforms = [{"set": {"hops": '_meta.header_list.filter(h, h[0] == "hop").map(h, string(h[1]))',
                           "last": "string(_meta.headers.hop)"}}]
    case = {"input": {"value": {"id": 1}, "headers": [["hop", "a"], ["src", "web"], ["hop", "b"]]},
            "expect": {"value": {"id": 1, "hops": ["a", "b"], "last": "b"}}}
    (result,) = run_cases(transforms, [case])
    assert result.ok, result.actual


def hops_of(value, meta):
    """A record-form python transform: every 'hop' header, in order (used by the run below)."""
    return {**value, "py_hops": [v.decode() for k, v in meta.header_list if k == "hop"],
            "py_last": meta.headers["hop"].decode()}


# -- through the broker --------------------------------------------------------------------

GOOD = [("hop", b"gateway"), ("trace", b"t-1"), ("hop", b"billing"), ("empty", None), ("hop", b"")]


def produce(brokers: str, topic: str, items: list) -> None:
    """``(partition, value, headers)`` records, each header list exactly as given."""
    p = Producer({"bootstrap.servers": brokers, "acks": "all", "linger.ms": 5})
    for partition, value, headers in items:
        p.produce(topic, value, partition=partition, headers=headers)
    assert p.flush(30) == 0


def test_repeated_headers_reach_transforms_and_dead_letters(brokers, topic, tmp_path):
    dlq = f"{topic}.dlq"
    create_topic(brokers, dlq, 1)
    items = [(i % 4, orjson.dumps({"id": i}), GOOD + [("n", str(i).encode())]) for i in range(40)]
    poison = (1, b'{"id": ', [("hop", b"a"), ("none", None), ("hop", b"b"), ("kpipe.error.stage", b"older")])
    items.insert(21, poison)
    produce(brokers, topic, items)
    # the bundled broker's end offset needs a one-record batch last (kit.seal)
    produce(brokers, topic, [(p, orjson.dumps({"id": 100 + p}), GOOD) for p in range(4)])
    out = tmp_path / "out"
    spec = edit_spec(write_spec(tmp_path, brokers, topic, out, name=unique("headers")),
                     errors={"deserialize": "dlq", "dlq": {"topic": dlq}},
                     transforms=[
                         {"set": {"hops": '_meta.header_list.filter(h, h[0] == "hop").map(h, string(h[1]))',
                                  "last_hop": "string(_meta.headers.hop)",
                                  "all": "_meta.header_list"}},
                         {"python": "test_headers:hops_of"}])
    proc = run_kpipe("run", str(spec), "--until-caught-up",
                     env={**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows = [orjson.loads(line) for f in out.rglob("*.jsonl") for line in f.read_bytes().splitlines()]
    assert sorted(r["id"] for r in rows) == list(range(40)) + [100, 101, 102, 103]
    for r in rows:
        assert r["hops"] == r["py_hops"] == ["gateway", "billing", ""]
        assert r["last_hop"] == r["py_last"] == ""  # the last 'hop' is the empty one
        sent = GOOD + ([("n", str(r["id"]).encode())] if r["id"] < 100 else [])
        # bytes land as base64 text in jsonl; a null header value stays null
        assert r["all"] == [[k, None if v is None else base64.b64encode(v).decode()] for k, v in sent]

    (letter,) = read_topic(brokers, dlq, 1)
    assert letter.value() == poison[1]
    got = letter.headers()
    # the record's own headers first, all of them in order, then kpipe's
    assert got[:4] == poison[2], got
    assert [k for k, _ in got[4:]] == ["kpipe.error.stage", "kpipe.error.class", "kpipe.error.message",
                                       "kpipe.error.topic", "kpipe.error.partition", "kpipe.error.offset",
                                       "kpipe.error.pipeline"]
    assert [v for k, v in got if k == "kpipe.error.stage"] == [b"older", b"deserialize"]
    assert yaml.safe_load(spec.read_text())["name"].encode() in dict(got).values()

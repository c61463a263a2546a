"""``verbatim: true`` (files sink, jsonl): the values' own JSON text, as the runner hands it over
(``SinkPlugin.raw_values``), lands so that other people's readers (json, DuckDB's read_json,
pyarrow.json) read what they read from the decoded-and-encoded default, for any JSON value in
any spelling (whitespace, escapes, number forms, line breaks between tokens); and a real run
over Tansu rejects invalid JSON at stage deserialize as the default does.
"""
from __future__ import annotations

import gzip
import json
import uuid

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpipe.api import SinkContext
from kpipe.formats import encode_jsonl
from kpipe.formats.jsonl import encode_verbatim
from kpipe.sinks.files.sink import FilesSink
from s3kit import make_batch

CTX = SinkContext(pipeline="p", group="g")
SAFE_INTS = st.integers(-(2**63), 2**64 - 1)  # what json, DuckDB and pyarrow all read as integers
VALUES = st.recursive(
    st.none() | st.booleans() | SAFE_INTS | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6) | st.sampled_from(["\u2028", "é€𝄞", "\x00", "a\nb", "\\", '"']),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8)
RECORDS = st.dictionaries(st.sampled_from(["a", "b", "c"]), VALUES, min_size=1)


@st.composite
def spelled(draw, value):
    """``value`` as some producer may have written it: separators, escapes, indentation (line
    breaks between tokens), spaces around."""
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, None, 1])),
                      separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")])))
    return (draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " ", "\r\n"]))).encode()


def written(tmp_path, values: list, verbatim: bool, compression: str = "none") -> bytes:
    s = FilesSink({"path": str(tmp_path / ("v" if verbatim else "d")), "format": "jsonl", "compression": compression,
                   "fsync": False, "verbatim": verbatim}, CTX)
    s.open()
    s.write([make_batch(values, topic="t")])
    [path] = (tmp_path / ("v" if verbatim else "d")).rglob("t+0+*")
    data = path.read_bytes()
    return gzip.decompress(data) if compression == "gzip" else data


def read_all(path: str) -> tuple[str, str, list]:
    """What DuckDB, pyarrow.json and json read from a jsonl file (a reader's refusal by its type)."""
    import duckdb
    import pyarrow.json as pj

    try:
        duck = repr(duckdb.sql(f"SELECT * FROM read_json('{path}', format='newline_delimited')").fetchall())
    except duckdb.Error as exc:
        duck = type(exc).__name__
    with open(path, "rb") as f:
        values = [json.loads(line) for line in f]
    arrow = "objects only"  # pyarrow.json reads one object a line (and crashed on a bare value)
    if all(type(v) is dict for v in values):
        try:
            arrow = repr(pj.read_json(path).to_pylist())
        except Exception as exc:  # pyarrow 26 refuses or trips on some shapes (lists of nulls)
            arrow = type(exc).__name__
    return duck, arrow, values


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given((st.lists(RECORDS, min_size=1, max_size=5) | st.lists(RECORDS | VALUES, min_size=1, max_size=5)).flatmap(
    lambda vs: st.tuples(st.just(vs), st.tuples(*[spelled(v) for v in vs]))))
def test_readers_read_verbatim_as_they_read_the_default(tmp_path_factory, case):
    values, raw = case
    d = tmp_path_factory.mktemp("verbatim")
    decoded = [msgspec.json.decode(r) for r in raw]  # what the json deserializer hands the default
    assert decoded == values
    files = {}
    for verbatim, batch in ((True, list(raw)), (False, decoded)):
        data = written(d, batch, verbatim)
        assert data.count(b"\n") == len(values) and data.endswith(b"\n")  # one value per line
        files[verbatim] = d / f"{verbatim}.jsonl"
        files[verbatim].write_bytes(data)
    assert read_all(str(files[True])) == read_all(str(files[False]))
    assert read_all(str(files[True]))[2] == values


def test_plain_lines_go_as_they_came_and_the_rest_as_jsonl(tmp_path):
    raw = [b'{"a": 1.50, "b": "\\u00e9"}', b'{\n "a": 2\n}', b"7 ", b'{"a":1E2}\r\n']
    assert encode_verbatim(raw[:1] + raw[2:3]) == b'{"a": 1.50, "b": "\\u00e9"}\n7 \n'  # one join, as they came
    assert encode_verbatim(raw) == b'{"a": 1.50, "b": "\\u00e9"}\n{"a":2}\n7 \n{"a":100.0}\n'
    assert encode_verbatim([None, {"x": 1}]) == b'null\n{"x":1}\n'  # a tombstone; a decoded value
    data = written(tmp_path, raw, True, "gzip")
    assert [json.loads(x) for x in data.splitlines()] == [{"a": 1.5, "b": "é"}, {"a": 2}, 7, {"a": 100.0}]


def test_verbatim_needs_the_json_deserializer_and_jsonl(tmp_path):
    from kpipe.spec import SpecError, load_spec

    base = ("name: t\nsource: {brokers: b, topic: t, group: g}\ndeserializer: {type: %s}\n"
            "sink: {type: files, path: out, verbatim: true%s}\n%s")
    spec = tmp_path / "s.yaml"
    spec.write_text(base % ("json", "", ""))
    assert load_spec(str(spec), env={}).sink_config["verbatim"] is True
    for deser, sink, extra, where in (("string", "", "", "deserializer.type"),
                                      ("json", ", format: csv", "", "sink.format"),
                                      ("json", "", "transforms: [{drop: [a]}]\n", "transforms")):
        spec.write_text(base % (deser, sink, extra))
        with pytest.raises(SpecError) as e:
            load_spec(str(spec), env={})
        assert f"s.yaml:" in str(e.value) and where in str(e.value), str(e.value)


def test_a_run_writes_the_values_as_they_came_and_rejects_invalid_json(brokers, topic, tmp_path):
    from confluent_kafka import Producer

    from kpipe.runtime import Runner
    from kpipe.spec import load_spec

    raw = [b'{"id": 1, "n": 1.50}', b"{not json", b'{"id":\n 3}', None, b'"text"']
    p = Producer({"bootstrap.servers": brokers})
    for v in raw:
        p.produce(topic, v, partition=0)
    assert p.flush(30) == 0
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        f"name: v\nsource: {{brokers: '{brokers}', topic: {topic}, group: g-{topic}, start: earliest,\n"
        f"  options: {{session.timeout.ms: 6000}}}}\ndeserializer: {{type: json}}\n"
        f"sink: {{type: files, path: {tmp_path / 'out'}, verbatim: true, compression: gzip}}\n"
        f"errors: {{deserialize: skip}}\n")
    result = Runner(load_spec(str(spec_path), env={}), until_caught_up=True).run()
    assert result.exit_code == 0, result.reason
    [path] = (tmp_path / "out").rglob("*.jsonl.gz")
    assert gzip.decompress(path.read_bytes()) == b'{"id": 1, "n": 1.50}\n{"id":3}\n"text"\n'
    assert path.name.endswith("+0000000000000000000+0000000000000000004.jsonl.gz")

"""A sink's own defaults (``SinkPlugin.defaults``): the table sinks (iceberg, delta) commit at
most every 5 minutes unless the spec says otherwise; the spec's value wins; ``kpipe check``
names a default that came from the sink (tests/test_iceberg_check.py); a plugin default the pipeline schema refuses is an
error at ``sink.type``."""
from __future__ import annotations

import dataclasses
import textwrap

import pytest

from kpipe.plugins import registry
from kpipe.spec import SpecError, load_spec

SINKS = {"iceberg": "  catalog: {type: sql, uri: 'sqlite:///c.db', warehouse: 'file:///tmp/w'}\n  table: a.b\n",
         "delta": "  uri: /tmp/t\n"}


def spec(tmp_path, sink: str, batch: str = ""):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent("""\
        name: p
        source: {brokers: 127.0.0.1:9, topic: t}
        """) + batch + f"sink:\n  type: {sink}\n" + SINKS[sink])
    return str(path)


@pytest.mark.parametrize("sink", sorted(SINKS))
def test_a_table_sink_commits_every_5_minutes_unless_the_spec_sets_max_age(tmp_path, sink):
    s = load_spec(spec(tmp_path, sink), env={})
    assert (s.max_age, s.sink_defaults) == (300.0, {"batch.max_age": "5m"})
    s = load_spec(spec(tmp_path, sink, "batch: {max_age: 2s, max_records: 7}\n"), env={})
    assert (s.max_age, s.max_records, s.sink_defaults) == (2.0, 7, {})
    s = load_spec(spec(tmp_path, sink, "batch: {max_records: 7}\n"), env={})  # other batch keys: still the sink's
    assert (s.max_age, s.max_records, s.sink_defaults) == (300.0, 7, {"batch.max_age": "5m"})


def test_a_sink_without_defaults_keeps_kpipes(tmp_path):
    path = tmp_path / "files.yaml"
    path.write_text("name: p\nsource: {brokers: 127.0.0.1:9, topic: t}\nsink: {type: files, path: out}\n")
    s = load_spec(str(path), env={})
    assert (s.max_age, s.sink_defaults) == (5.0, {})


@pytest.mark.parametrize("defaults, why", [
    ({"batch": {"max_age": "soon"}}, "expected a duration"),
    ({"batch": {"max_sizes": 3}}, "a sink may default only batch.*, retry.*"),
    ({"source": {"start": "latest"}}, "a sink may default only batch.*, retry.*"),
])
def test_a_plugin_default_the_schema_refuses_is_an_error_at_sink_type(tmp_path, monkeypatch, defaults, why):
    plugins = registry().plugins["sink"]
    monkeypatch.setitem(plugins, "delta", dataclasses.replace(plugins["delta"], defaults=defaults))
    with pytest.raises(SpecError) as info:
        load_spec(spec(tmp_path, "delta"), env={})
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (4, "sink.type") and why in problem.message, problem

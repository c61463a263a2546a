"""Spec loading: every bad spec is reported at its exact FILE:LINE:COL: PATH."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from kpipe.plugins import registry
from kpipe.spec import Problem, Spec, SpecError, load_spec, parse_duration, parse_size, pipeline_schema
from kpipe.spec import units

SINK = "sink:\n  type: files\n  path: ./out\n"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so problems read "spec.yaml:LINE:COL", independent of tmp_path


def write(text: str, name: str = "spec.yaml") -> str:
    Path(name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return name


def errors(text: str, env: dict | None = None) -> list[str]:
    """The problems for ``text`` as strings, in reported order."""
    with pytest.raises(SpecError) as info:
        load_spec(write(text), env={} if env is None else env)
    err = info.value
    assert str(err) == "\n".join(str(p) for p in err.problems)
    return [str(p) for p in err.problems]


def only(text: str, env: dict | None = None) -> str:
    found = errors(text, env)
    assert len(found) == 1, found
    return found[0]


# --- bad specs, one mistake each ----------------------------------------------------------


def test_typo_in_top_level_key_suggests_the_right_one():
    found = errors("""
        name: orders
        source: {brokers: b, topic: t}
        sinks:
          type: files
          path: ./out
    """)
    assert found == [
        "spec.yaml:1:1: sink: missing required key 'sink'",
        "spec.yaml:3:1: sinks: unknown key 'sinks'; did you mean 'sink'?",
    ]


def test_typo_in_sink_key_is_checked_by_the_plugin_schema():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        sink:
          type: files
          path: ./out
          fromat: jsonl
    """) == "spec.yaml:6:3: sink.fromat: unknown key 'fromat'; did you mean 'format'?"


def test_unknown_key_without_a_close_match_has_no_suggestion():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        sink: {type: files, path: ./out}
        zzz: 1
    """) == "spec.yaml:4:1: zzz: unknown key 'zzz'"


def test_wrong_type_points_at_the_value():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        sink: {type: files, path: ./out}
        batch:
          max_records: "many"
    """) == "spec.yaml:5:16: batch.max_records: 'many' is not of type 'integer'"


def test_missing_sink_points_at_the_top_of_the_file():
    assert only("""
        # a comment first: the root is still reported at 1:1
        name: orders
        source: {brokers: b, topic: t}
    """) == "spec.yaml:1:1: sink: missing required key 'sink'"


def test_missing_sink_path_points_at_the_sink_mapping():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        sink:
          type: files
          format: csv
    """) == "spec.yaml:4:3: sink.path: missing required key 'path'"


def test_bad_plugin_value_is_prefixed_with_sink():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        sink:
          type: files
          path: ./out
          format: orc
    """) == "spec.yaml:6:11: sink.format: 'orc' is not one of ['jsonl', 'csv', 'avro', 'parquet']"


def test_unset_variable_points_at_the_dollar_brace():
    assert only("""
        name: orders
        source:
          brokers: kafka-${HOST}:9092
          topic: t
        sink: {type: files, path: ./out}
    """) == ("spec.yaml:3:18: source.brokers: environment variable HOST is not set; "
             "set it, or give a default: ${HOST:-...}")


def test_unset_variable_in_quoted_scalar_counts_the_quote():
    found = errors("""
        name: orders
        source:
          brokers: "x ${A}"
          topic: 'y ${B}'
        sink: {type: files, path: ./out}
    """)
    assert [f.split(": ")[0] for f in found] == ["spec.yaml:3:15", "spec.yaml:4:13"]
    assert found[0].startswith("spec.yaml:3:15: source.brokers: environment variable A is not set")


def test_unset_variable_does_not_cascade_into_schema_errors():
    # brokers expands to "" (minLength 1), but only the variable is reported.
    assert only("""
        name: orders
        source: {brokers: "${B}", topic: t}
        sink: {type: files, path: ./out}
    """).startswith("spec.yaml:2:20: source.brokers: environment variable B is not set")


def test_yaml_syntax_error_uses_pyyaml_position_and_message():
    assert only("""
        name: orders
          source: x
        sink: {type: files, path: ./out}
    """) == "spec.yaml:2:9: <root>: mapping values are not allowed here"


def test_duplicate_key_points_at_the_second_one():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        sink:
          type: files
          path: ./a
          path: ./b
    """) == "spec.yaml:6:3: sink.path: duplicate key 'path'; first set at line 5, column 3"


def test_bad_enum_suggests_the_closest_value():
    assert only("""
        name: orders
        source:
          brokers: b
          topic: t
          start: earliset
        sink: {type: files, path: ./out}
    """) == ("spec.yaml:5:10: source.start: 'earliset' is not one of ['earliest', 'latest']; "
             "did you mean 'earliest'?")


def test_unknown_sink_type_lists_installed_plugins():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        sink:
          type: fils
          path: ./out
    """) == ("spec.yaml:4:9: sink.type: unknown sink type 'fils'; did you mean 'files'? "
             f"(installed: {', '.join(sorted(registry().names('sink')))})")
    # the built-ins at least; a plugin distribution installed here (tests/test_plugin_dists.py) adds its own
    assert {"files", "postgres", "s3", "sql"} <= set(registry().names("sink"))


def test_unknown_deserializer_type():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        deserializer: {type: thrift}
        sink: {type: files, path: ./out}
    """) == ("spec.yaml:3:22: deserializer.type: unknown deserializer type 'thrift' "
             "(installed: avro, bytes, json, protobuf, string)")


def test_bad_size_unit():
    found = only("""
        name: orders
        source: {brokers: b, topic: t}
        sink: {type: files, path: ./out}
        batch:
          max_bytes: 16mb
    """)
    assert found.startswith("spec.yaml:5:14: batch.max_bytes: expected a size:")
    assert found.endswith("got '16mb'")


def test_zero_size_is_rejected():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        sink: {type: files, path: ./out}
        batch: {max_bytes: 0KiB}
    """) == "spec.yaml:4:20: batch.max_bytes: '0KiB' is less than 1 byte"


def test_bad_duration():
    found = only("""
        name: orders
        source: {brokers: b, topic: t}
        sink: {type: files, path: ./out}
        batch:
          max_age: 5 seconds
    """)
    assert found.startswith("spec.yaml:5:12: batch.max_age: expected a duration:")
    assert found.endswith("got '5 seconds'")


def test_both_topic_and_topics():
    assert only("""
        name: orders
        source:
          brokers: b
          topic: a
          topics: [a, b]
        sink: {type: files, path: ./out}
    """) == "spec.yaml:5:3: source.topics: set exactly one of 'topic' or 'topics', not both"


def test_neither_topic_nor_topics():
    assert only("""
        name: orders
        source:
          brokers: b
        sink: {type: files, path: ./out}
    """) == "spec.yaml:3:3: source: set exactly one of 'topic' or 'topics'"


def test_bad_topic_list_item_uses_index_path():
    assert only("""
        name: orders
        source:
          brokers: b
          topics: [a, 7]
        sink: {type: files, path: ./out}
    """) == "spec.yaml:4:15: source.topics[1]: 7 is not of type 'string'"


def test_enable_auto_commit_true_is_rejected_at_the_key():
    assert only("""
        name: orders
        source:
          brokers: b
          topic: t
          options:
            enable.auto.commit: true
            enable.auto.offset.store: false
        sink: {type: files, path: ./out}
    """) == ("spec.yaml:6:5: source.options.enable.auto.commit: kpipe commits offsets itself, "
             "only after the sink write is durable; remove this option")


def test_group_id_and_bootstrap_servers_in_options():
    assert errors("""
        name: orders
        source:
          brokers: b
          topic: t
          options:
            group.id: other
            bootstrap.servers: x:9092
        sink: {type: files, path: ./out}
    """) == [
        "spec.yaml:6:5: source.options.group.id: set the consumer group with source.group, not in options",
        "spec.yaml:7:5: source.options.bootstrap.servers: set the brokers with source.brokers, not in options",
    ]


def test_option_values_must_be_scalars():
    assert only("""
        name: orders
        source:
          brokers: b
          topic: t
          options:
            fetch.min.bytes: [1]
        sink: {type: files, path: ./out}
    """) == "spec.yaml:6:22: source.options.fetch.min.bytes: a list is not of type 'string', 'number', 'boolean'"


def test_name_with_uppercase():
    found = only("""
        name: Orders
        source: {brokers: b, topic: t}
        sink: {type: files, path: ./out}
    """)
    assert found.startswith("spec.yaml:1:7: name: expected a name of lowercase letters")
    assert found.endswith("got 'Orders'")


def test_version_2_is_rejected():
    assert only("""
        name: orders
        version: 2
        source: {brokers: b, topic: t}
        sink: {type: files, path: ./out}
    """).startswith("spec.yaml:2:10: version: expected spec version 1")


def test_unknown_transform_is_reported_at_its_name():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        transforms:
          - {no_such_transform: x}
        sink: {type: files, path: ./out}
    """).startswith("spec.yaml:4:6: transforms[0].no_such_transform: unknown transform 'no_such_transform'")


def test_dlq_policy_needs_a_topic():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        sink: {type: files, path: ./out}
        errors: {deserialize: dlq}
    """) == "spec.yaml:4:23: errors.deserialize: policy 'dlq' needs a dead-letter topic: add errors.dlq.topic"


def test_tombstone_deletes_need_a_sink_that_can_delete():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        sink: {type: files, path: ./out}
        tombstones: delete
    """).startswith("spec.yaml:4:13: tombstones: sink 'files' cannot delete; use 'skip', or a sink that can")


def test_validate_schema_file_must_exist():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        deserializer: {type: json, validate: nope.schema.json}
        sink: {type: files, path: ./out}
    """).startswith("spec.yaml:3:38: deserializer.validate: no such file: ")


def test_every_error_is_reported_in_file_order():
    assert errors("""
        name: Orders
        source:
          brokers: ${KAFKA_BROKERS}
          topic: t
          start: latset
          options:
            group.id: g
        sink:
          type: files
          fromat: csv
        batch:
          max_records: 0
          max_age: soon
        extra: true
    """) == [
        "spec.yaml:1:7: name: expected a name of lowercase letters, digits, '-' and '_' that starts "
        "with a letter or digit, got 'Orders'",
        "spec.yaml:3:12: source.brokers: environment variable KAFKA_BROKERS is not set; "
        "set it, or give a default: ${KAFKA_BROKERS:-...}",
        "spec.yaml:5:10: source.start: 'latset' is not one of ['earliest', 'latest']; did you mean 'latest'?",
        "spec.yaml:7:5: source.options.group.id: set the consumer group with source.group, not in options",
        "spec.yaml:9:3: sink.path: missing required key 'path'",
        "spec.yaml:10:3: sink.fromat: unknown key 'fromat'; did you mean 'format'?",
        "spec.yaml:12:16: batch.max_records: 0 is less than the minimum of 1",
        "spec.yaml:13:12: batch.max_age: expected a duration: a number with a unit ms, s, m or h "
        "(e.g. 250ms, 5s, 1.5s, 2m, 1h), got 'soon'",
        "spec.yaml:14:1: extra: unknown key 'extra'",
    ]


def test_problems_carry_fields_and_are_sorted():
    with pytest.raises(SpecError) as info:
        load_spec(write("""
            zz: 1
            name: orders
            source: {brokers: b, topic: t}
            sink: {type: files, path: ./out}
            aa: 2
        """), env={})
    assert info.value.problems == [
        Problem("spec.yaml", 1, 1, "zz", "unknown key 'zz'"),
        Problem("spec.yaml", 5, 1, "aa", "unknown key 'aa'"),
    ]


@pytest.mark.parametrize("text, expected", [
    ("", "spec.yaml:1:1: <root>: the spec is empty"),
    ("# only a comment\n", "spec.yaml:1:1: <root>: the spec is empty"),
    ("- a\n- b\n", "spec.yaml:1:1: <root>: the spec must be a mapping of keys (name, source, sink, ...), not a list"),
])
def test_document_must_be_a_mapping(text, expected):
    assert only(text) == expected


def test_missing_file_is_a_spec_error():
    with pytest.raises(SpecError) as info:
        load_spec("nope.yaml", env={})
    assert str(info.value).startswith("nope.yaml:1:1: <root>: cannot read the spec:")


def test_recursive_alias_does_not_crash():
    assert only("""
        name: orders
        source: &s {brokers: b, topic: t, options: *s}
        sink: {type: files, path: ./out}
    """) == "spec.yaml:2:9: source.options: recursive alias: an anchor cannot contain itself"


# --- good specs ---------------------------------------------------------------------------


FULL = """
name: orders-to-files
version: 1
source:
  brokers: ${KAFKA_BROKERS:-localhost:9092}
  topics: [orders, refunds]
  group: orders-files
  start: latest
  options:
    session.timeout.ms: ${TIMEOUT:-6000}
    client.id: "${CLIENT:-42}"
    enable.partition.eof: ${EOF:-true}
    enable.auto.commit: false
    note: cost is $${price}
deserializer:
  type: string
transforms: []
sink:
  type: files
  path: ${OUT}/orders
  format: csv
batch:
  max_records: 500
  max_bytes: 1.5MiB
  max_age: 250ms
"""


def test_full_spec_normalizes():
    spec = load_spec(write(FULL), env={"OUT": "/data", "EOF": ""})
    assert spec == Spec(
        file="spec.yaml",
        name="orders-to-files",
        group="orders-files",
        brokers="localhost:9092",
        topics=["orders", "refunds"],
        start="latest",
        options={"session.timeout.ms": 6000, "client.id": "42", "enable.partition.eof": True,
                 "enable.auto.commit": False, "note": "cost is ${price}"},
        deserializer_type="string",
        deserializer_config={},
        transforms=[],
        policies={"deserialize": "fail", "validate": "fail", "transform": "fail", "sink": "fail"},
        sink_type="files",
        sink_config={"path": "/data/orders", "format": "csv", "verbatim": False, "fsync": True},
        max_records=500,
        max_bytes=1572864,
        max_age=0.25,
    )
    assert type(spec.options["session.timeout.ms"]) is int
    assert spec.locate(("sink", "path")) == (19, 9)
    assert spec.where(("source", "topics", 1)) == "spec.yaml:5:20"
    assert spec.locate(("sink", "fsync")) == (18, 3)  # a default: the sink mapping
    assert spec.locate(()) == (1, 1)


def test_minimal_spec_gets_every_default():
    spec = load_spec(write("""
        name: orders
        source:
          brokers: b:9092
          topic: orders
        sink:
          type: files
          path: ./out
    """), env={})
    assert (spec.name, spec.group, spec.brokers, spec.topics, spec.start) == (
        "orders", "orders", "b:9092", ["orders"], "earliest")
    assert spec.options == {}
    assert (spec.deserializer_type, spec.deserializer_config) == ("json", {})
    assert spec.transforms == []
    assert spec.sink_type == "files"
    assert spec.sink_config == {"path": "./out", "format": "jsonl", "verbatim": False, "fsync": True}
    assert (spec.max_records, spec.max_bytes, spec.max_age) == (10000, 16 * 1024 * 1024, 5.0)
    assert spec.locate(("source", "topics", 0)) == (4, 10)  # `topic:` stands in for topics[0]


def test_environment_values_win_over_defaults():
    spec = load_spec(write("""
        name: orders
        source:
          brokers: ${KAFKA_BROKERS:-localhost:9092}
          topic: ${TOPIC}
          options:
            fetch.wait.max.ms: ${WAIT:-100}
        sink: {type: files, path: ./out}
    """), env={"KAFKA_BROKERS": "k1:9092,k2:9092", "TOPIC": "t1", "WAIT": "250"})
    assert spec.brokers == "k1:9092,k2:9092"
    assert spec.topics == ["t1"]
    assert spec.options == {"fetch.wait.max.ms": 250}


def test_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("KPIPE_TEST_BROKERS", "envhost:1")
    spec = load_spec(write("""
        name: orders
        source: {brokers: "${KPIPE_TEST_BROKERS}", topic: t}
        sink: {type: files, path: ./out}
    """))
    assert spec.brokers == "envhost:1"


def test_merge_keys_fill_in_missing_keys():
    spec = load_spec(write("""
        name: orders
        source: {brokers: b, topic: t}
        sink:
          <<: {type: files, path: ./base, format: csv}
          path: ./mine
    """), env={})
    assert spec.sink_config == {"path": "./mine", "format": "csv", "verbatim": False, "fsync": True}


def test_max_bytes_as_integer():
    spec = load_spec(write("""
        name: orders
        source: {brokers: b, topic: t}
        sink: {type: files, path: ./out}
        batch: {max_bytes: 4096, max_age: 2m}
    """), env={})
    assert (spec.max_bytes, spec.max_age) == (4096, 120.0)


# --- helpers and the schema itself ---------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("1B", 1), ("500KB", 500_000), ("2MB", 2_000_000), ("1GB", 10**9),
    ("1KiB", 1024), ("16MiB", 16 * 2**20), ("1.5GiB", 3 * 2**29), ("3 KiB", 3072), (77, 77),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["16mb", "16", "MiB", "1.5", "-1KB", True, None])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text, expected", [
    ("250ms", 0.25), ("5s", 5.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["5", "5 s", "1d", "s", 5])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_schema_is_valid_and_documents_every_property():
    schema = pipeline_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$id"]

    def walk(node, where):
        for name, prop in node.get("properties", {}).items():
            assert prop.get("title") and prop.get("description"), f"{where}.{name}"
            walk(prop, f"{where}.{name}")
    walk(schema, "")


def test_schema_patterns_match_the_parsers():
    batch = pipeline_schema()["properties"]["batch"]["properties"]
    assert batch["max_bytes"]["anyOf"][1]["pattern"] == units.SIZE_PATTERN
    assert batch["max_age"]["pattern"] == units.DURATION_PATTERN
    assert batch["max_bytes"]["default"] == "16MiB" and batch["max_age"]["default"] == "5s"


def test_packaged_schema_is_the_repository_schema():
    import kpipe.spec
    packaged = Path(kpipe.spec.__file__).with_name("pipeline.schema.json")
    repo = Path(__file__).resolve().parents[1] / "schemas" / "pipeline.schema.json"
    assert packaged.is_symlink() and os.readlink(packaged) == "../../schemas/pipeline.schema.json"
    assert json.loads(packaged.read_text()) == json.loads(repo.read_text()) == pipeline_schema()


def test_an_expression_syntax_error_points_at_its_character():
    assert only("""
        name: orders
        source: {brokers: b, topic: t}
        transforms:
          - filter: 'amount > && 3'
        sink: {type: files, path: ./out}
    """).startswith("spec.yaml:4:23: transforms[0].filter: filter: syntax error at column 10")


def test_an_empty_default_is_an_empty_string_not_null(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\nsource: {brokers: b, topic: t}\nsink: {type: files, path: ./out}\n"
                    "deserializer:\n  type: avro\n  registry:\n    url: http://sr\n    username: u\n"
                    "    password: ${PW:-}\n")
    assert load_spec(str(spec), env={}).deserializer_config["registry"]["password"] == ""

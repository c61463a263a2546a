"""``type: json`` with ``registry``: Confluent's JSON Schema wire format, produced by Confluent's
own ``JSONSerializer`` against the test registry (``schema_registry.py``) over real HTTP, decoded
by kpipe's deserializer, through the runner's stages (``validate: registry``, keys), and the
config as ``kpipe validate`` reports it."""
from __future__ import annotations

import json

import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given, settings
from hypothesis import strategies as st

from kpipe.api import BadRecordError, FatalError, RetryableError
from kpipe.deserializers.basic import JsonDeserializer, json_plugin
from kpipe.deserializers.json_registry import JsonRegistryDeserializer
from kpipe.runtime.stages import Stages
from kpipe.spec import SpecError, load_spec
from kpipe.transforms.testing import FakeMessage
from schema_registry import SchemaRegistry, schema_registry  # noqa: F401 (a fixture)

DRAFT7 = "http://json-schema.org/draft-07/schema#"
V1 = {"$schema": DRAFT7, "title": "Order", "type": "object",
      "properties": {"order_id": {"type": "integer"}, "amount": {"type": "number"},
                     "created_at": {"type": "string", "format": "date-time"}},
      "required": ["order_id", "amount"]}
# v2 adds a field, and requires it
V2 = dict(V1, properties={**V1["properties"], "channel": {"type": "string"}},
          required=V1["required"] + ["channel"])


def order(i: int, channel: str | None = None) -> dict:
    return {"order_id": i, "amount": i * 1.25, "created_at": f"2026-12-04T10:{i % 60:02d}:00Z"} | \
        ({"channel": channel} if channel else {})


def serializer(reg, schema, **conf) -> JSONSerializer:
    text = schema if isinstance(schema, (str, Schema)) else json.dumps(schema)
    return JSONSerializer(text, SchemaRegistryClient({"url": reg.url}), conf=conf or None)


def serialize(ser: JSONSerializer, values: list, topic: str = "orders",
              field: str = MessageField.VALUE) -> list:
    ctx = SerializationContext(topic, field)
    return [ser(v, ctx) for v in values]


def deserializer(reg, **extra) -> JsonRegistryDeserializer:
    return json_plugin.create({"registry": {"url": reg.url, "timeout": "2s", **extra}})


def bad_at(d, raw) -> BadRecordError:
    with pytest.raises(BadRecordError) as info:
        d.deserialize(raw)
    return info.value


# -- decoding ---------------------------------------------------------------------------------


def test_without_registry_json_is_the_plain_deserializer(schema_registry):
    assert type(json_plugin.create({})) is JsonDeserializer
    assert type(deserializer(schema_registry)) is JsonRegistryDeserializer


def test_evolution_each_schema_id_fetched_once_and_schema_is_the_latest(schema_registry):
    first = serialize(serializer(schema_registry, V1), [order(i) for i in range(50)])
    second = serialize(serializer(schema_registry, V2), [order(i, "web") for i in range(50, 100)])
    assert {v[1:5] for v in first} != {v[1:5] for v in second}  # a new id for the added field
    d = deserializer(schema_registry)
    assert d.schema() is None  # nothing decoded yet
    out = d.deserialize(first + [None] + second)
    assert out == [order(i) for i in range(50)] + [None] + [order(i, "web") for i in range(50, 100)]
    assert d.schema() == V2
    assert d.deserialize(second[:1] + first[:1]) == [order(50, "web"), order(0)] and d.schema() == V1
    assert schema_registry.fetches(1) == 1 and schema_registry.fetches(2) == 1


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(values=st.lists(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5) | st.none(), max_size=30))
def test_every_value_decodes_to_what_the_producer_gave(values):
    """The model: what goes into JSONSerializer comes out (None: a tombstone)."""
    with SchemaRegistry() as reg:
        ser = serializer(reg, {"type": "object"})
        raw = [None if v is None else serialize(ser, [v])[0] for v in values]
        assert deserializer(reg).deserialize(raw) == values


# -- bad values: each at its index, a dependency failure never one -----------------------------


@pytest.mark.parametrize("value, expect", [
    (b'{"order_id": 1}', "magic byte 0x7b"),
    (b"\x00\x00\x00", "shorter than its 5-byte header"),
    (b"", "0 bytes"),
    (b"\x00\x00\x00\x00\x01{\"order_id\": ", "invalid JSON after the wire header (schema id 1)"),
    (b"\x00\x00\x00\x00\x01\xff\xfe", "schema id 1"),
    (b"\x00\x00\x00\x00\x01", "invalid JSON"),
])
def test_a_value_not_in_the_wire_format_is_a_bad_record_at_its_index(schema_registry, value, expect):
    good = serialize(serializer(schema_registry, V1), [order(1), order(2)])
    err = bad_at(deserializer(schema_registry), [good[0], None, good[1], value, good[0]])
    assert err.index == 3 and expect in str(err), str(err)


def test_an_unknown_id_is_a_bad_record_and_is_not_asked_again(schema_registry):
    good = serialize(serializer(schema_registry, V1), [order(1)])[0]
    unknown = b"\x00" + (42).to_bytes(4, "big") + b'{"order_id": 1}'
    d = deserializer(schema_registry)
    err = bad_at(d, [good, unknown])
    assert err.index == 1 and "schema id 42" in str(err) and "not found" in str(err).lower()
    assert bad_at(d, [unknown]).index == 0
    assert schema_registry.fetches(42) == 1  # the 404 is remembered for a while
    assert d.deserialize([good]) == [order(1)]


def test_an_avro_schema_id_is_a_bad_record(schema_registry):
    avro_id = schema_registry.register("avro-value", {"type": "record", "name": "R", "fields": []})
    err = bad_at(deserializer(schema_registry), [b"\x00" + avro_id.to_bytes(4, "big") + b"{}"])
    assert err.index == 0 and "AVRO schema, not JSON Schema" in str(err)


def test_registry_down_is_retryable_never_a_bad_record(schema_registry):
    raw = serialize(serializer(schema_registry, V1), [order(1)])
    schema_registry.stop()
    d = json_plugin.create({"registry": {"url": schema_registry.url.replace("//", "//bob:s3cret@"), "timeout": 2}})
    with pytest.raises(RetryableError) as info:
        d.deserialize(raw)
    assert schema_registry.url in str(info.value) and "s3cret" not in str(info.value)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_registry_server_errors_are_retryable_then_recover(schema_registry, status):
    raw = serialize(serializer(schema_registry, V1), [order(1)])
    d = deserializer(schema_registry)
    schema_registry.fail = [status]
    with pytest.raises(RetryableError, match=f"HTTP {status}"):
        d.deserialize(raw)
    assert d.deserialize(raw) == [order(1)]


def test_registry_basic_auth():
    with SchemaRegistry(username="sr-user", password="pa55word") as reg:
        ser = JSONSerializer(json.dumps(V1), SchemaRegistryClient(
            {"url": reg.url, "basic.auth.user.info": "sr-user:pa55word"}))
        raw = serialize(ser, [order(1)])
        assert deserializer(reg, username="sr-user", password="pa55word").deserialize(raw) == [order(1)]
        with pytest.raises(FatalError, match="HTTP 401") as info:
            deserializer(reg).deserialize(raw)
        assert "registry.username" in str(info.value)


# -- references ---------------------------------------------------------------------------------

MONEY = {"$schema": DRAFT7, "type": "object", "properties": {"units": {"type": "integer"},
                                                            "currency": {"type": "string", "maxLength": 3}},
         "required": ["units", "currency"]}
PRICED = {"$schema": DRAFT7, "type": "object",
          "properties": {"order_id": {"type": "integer"}, "price": {"$ref": "money.json"}},
          "required": ["order_id", "price"]}


def test_a_referenced_schema_is_bundled_in_for_validation(schema_registry):
    SchemaRegistryClient({"url": schema_registry.url}).register_schema("money", Schema(json.dumps(MONEY), "JSON"))
    ser = serializer(schema_registry, Schema(json.dumps(PRICED), "JSON", [SchemaReference("money.json", "money", 1)]))
    value = {"order_id": 1, "price": {"units": 250, "currency": "EUR"}}
    raw = serialize(ser, [value])  # the serializer itself validated it through the reference
    stages, msgs = stages_for(schema_registry, raw + [raw[0][:5] + b'{"order_id": 2, "price": {"units": 1, "currency": "EURO"}}'])
    out = stages.process("orders", 0, msgs, [m.value() for m in msgs])
    assert out.values == [value]
    ((index, stage, err),) = out.rejected
    assert (index, stage) == (1, "validate") and "$.price.currency" in str(err), str(err)
    # the sinks' schema: the referenced one in place of the top-level $ref, so price is typed
    assert stages.value_schema()["properties"]["price"] == {k: v for k, v in MONEY.items() if k != "$schema"}


# -- validate: registry, keys: through the runner's stages -----------------------------------


def write(tmp_path, deserializer_yaml: str, extra: str = "") -> str:
    path = tmp_path / "spec.yaml"
    path.write_text("name: p\nsource: {brokers: b, topic: t}\nsink: {type: files, path: ./out}\n"
                    "deserializer:\n" + deserializer_yaml + extra)
    return str(path)


def stages_for(reg, raw: list, keys: list | None = None, validate: bool = True, tmp_path=None):
    import tempfile
    from pathlib import Path

    where = Path(tmp_path or tempfile.mkdtemp())
    key_yaml = f"key_deserializer: {{type: json, registry: {{url: '{reg.url}'}}}}\n" if keys is not None else ""
    spec = load_spec(write(where, f"  type: json\n  registry: {{url: '{reg.url}'}}\n"
                                  + ("  validate: registry\n" if validate else ""), key_yaml), env={})
    msgs = [FakeMessage(value=v, key=None if keys is None else keys[i], offset=i) for i, v in enumerate(raw)]
    return Stages(spec), msgs


def test_validate_registry_checks_each_value_against_its_own_id(schema_registry, tmp_path):
    v1 = serializer(schema_registry, V1, **{"validate": False})
    v2 = serializer(schema_registry, V2, **{"validate": False})
    raw = serialize(v1, [order(0), {"order_id": 1}, order(2)]) + \
        serialize(v2, [order(3, "app"), order(4), order(5, "web")]) + serialize(v1, [order(6)])
    stages, msgs = stages_for(schema_registry, raw, tmp_path=tmp_path)
    out = stages.process("orders", 0, msgs, raw)
    # {"order_id": 1} lacks amount under v1; order(4) lacks channel, which only v2 requires
    assert [(i, stage) for i, stage, _ in out.rejected] == [(1, "validate"), (4, "validate")]
    assert "'amount' is a required property" in str(out.rejected[0][2])
    assert "'channel' is a required property" in str(out.rejected[1][2])
    assert out.values == [order(0), order(2), order(3, "app"), order(5, "web"), order(6)]
    assert stages.value_schema() == V1  # the sinks' declared types: the latest id decoded
    # compiled once per id: a second batch asks the registry nothing more
    stages.process("orders", 0, msgs, raw)
    assert schema_registry.fetches(1) == 1 and schema_registry.fetches(2) == 1


def test_without_validate_a_value_off_its_schema_passes(schema_registry, tmp_path):
    raw = serialize(serializer(schema_registry, V1, **{"validate": False}), [{"order_id": "x"}])
    stages, msgs = stages_for(schema_registry, raw, validate=False, tmp_path=tmp_path)
    assert stages.process("orders", 0, msgs, raw).values == [{"order_id": "x"}]


def test_a_bad_value_is_rejected_at_deserialize_not_validate(schema_registry, tmp_path):
    raw = serialize(serializer(schema_registry, V1), [order(0)]) + [b"{}"]
    stages, msgs = stages_for(schema_registry, raw, tmp_path=tmp_path)
    out = stages.process("orders", 0, msgs, raw)
    assert out.values == [order(0)] and [(i, s) for i, s, _ in out.rejected] == [(1, "deserialize")]


def test_keys_go_through_key_deserializer(schema_registry, tmp_path):
    key_schema = {"type": "object", "properties": {"customer": {"type": "string"}}}
    keys = serialize(serializer(schema_registry, key_schema), [{"customer": f"c{i}"} for i in range(3)],
                     field=MessageField.KEY)
    raw = serialize(serializer(schema_registry, V1), [order(i) for i in range(3)])
    keys[2] = b"\x01" + keys[2][1:]  # a bad key: its record is a bad record at deserialize
    stages, msgs = stages_for(schema_registry, raw, keys=keys, tmp_path=tmp_path)
    out = stages.process("orders", 0, msgs, raw)
    assert out.keys == [{"customer": "c0"}, {"customer": "c1"}] and out.values == [order(0), order(1)]
    assert [(i, s) for i, s, _ in out.rejected] == [(2, "deserialize")] and "magic byte 0x01" in str(out.rejected[0][2])


# -- the config, as kpipe validate reports it ---------------------------------------------------


def problems(tmp_path, deserializer_yaml: str) -> list[str]:
    try:
        load_spec(write(tmp_path, deserializer_yaml), env={})
    except SpecError as err:
        return [str(p) for p in err.problems]
    return []


def test_config_errors_point_at_the_spec_line(tmp_path):
    spec = tmp_path / "spec.yaml"
    assert problems(tmp_path, "  type: json\n  validate: registry\n") == [
        f"{spec}:6:13: deserializer.validate: validate: registry needs deserializer.registry (the Schema "
        f"Registry the JSON Schemas come from); for a file named registry write ./registry"]
    found = problems(tmp_path, "  type: avro\n  registry: {url: 'http://sr:8081'}\n  validate: registry\n")
    assert found == [f"{spec}:7:13: deserializer.validate: validate: registry needs type json with a registry "
                     f"(Confluent's JSON Schema), not type 'avro'; for a file named registry write ./registry"]
    assert problems(tmp_path, "  type: json\n  registry: {url: 'sr:8081'}\n") == [
        f"{spec}:6:19: deserializer.registry.url: expected an http:// or https:// URL of the Schema Registry, "
        f"got 'sr:8081'"]
    found = problems(tmp_path, "  type: json\n  registry: {url: 'http://sr', username: u, timeout: soon}\n")
    assert any("registry.timeout: expected a duration" in p for p in found), found
    assert any("'password' is a dependency of 'username'" in p for p in found), found
    assert any("schema" in p for p in problems(tmp_path, "  type: json\n  schema: x.json\n"))
    # a file named registry is still a file
    assert problems(tmp_path, "  type: json\n  validate: ./registry\n") == [
        f"{spec}:6:13: deserializer.validate: no such file: {tmp_path / 'registry'}"]


def test_a_valid_spec_sets_the_registry_stage(tmp_path):
    spec = load_spec(write(tmp_path, "  type: json\n  registry: {url: 'http://sr:8081'}\n  validate: registry\n"),
                     env={})
    assert spec.validate_registry and spec.validate_schema is None
    assert spec.deserializer_config["registry"]["url"] == "http://sr:8081"


def test_a_given_value_is_checked_against_the_latest_schema_decoded(schema_registry, tmp_path):
    """A ``kpipe test`` case that gives the decoded value has no header (its raw is b"")."""
    raw = serialize(serializer(schema_registry, V1), [order(0)])
    stages, msgs = stages_for(schema_registry, [b""], tmp_path=tmp_path)
    off_schema = {"order_id": "x"}
    assert stages.process("orders", 0, msgs, [b""], decoded=[off_schema]).values == [off_schema]  # none yet
    stages.process("orders", 0, [FakeMessage(value=raw[0])], raw)
    out = stages.process("orders", 0, msgs, [b""], decoded=[off_schema])
    assert out.values == [] and [(i, s) for i, s, _ in out.rejected] == [(0, "validate")]
    # a value without a header among values with one: each run against its own schema
    validator = stages.validator
    assert validator.check([off_schema, order(1)], [b"", raw[0]]) == [(0, validator.check([off_schema], [b""])[0][1])]


def test_kpipe_test_cases_give_json_encoded_with_the_subjects_latest_schema(schema_registry, tmp_path):
    """``input: {json: ...}``: the value in the wire format of the latest schema of TOPIC-value,
    then decoded and validated as a value on the topic would be."""
    from kit import run_kpipe

    serialize(serializer(schema_registry, V1), [order(0)], topic="t")  # registers V1 under t-value
    spec = write(tmp_path, f"  type: json\n  registry: {{url: '{schema_registry.url}'}}\n  validate: registry\n",
                 "tests:\n"
                 "  - name: good\n    input: {json: {order_id: 1, amount: 2.5}}\n"
                 "    expect: {value: {order_id: 1, amount: 2.5}}\n"
                 "  - name: off its schema\n    input: {json: {order_id: 1}}\n"
                 "    expect: {error: {stage: validate, message: \"'amount' is a required property\"}}\n"
                 "  - name: no such subject\n    input: {json: {order_id: 1}, topic: nope}\n"
                 "    expect: {value: {order_id: 1}}\n")
    proc = run_kpipe("test", spec)
    assert "PASS  good" in proc.stdout and "PASS  off its schema" in proc.stdout, proc.stdout + proc.stderr
    assert "FAIL  no such subject" in proc.stdout and "no schema under subject nope-value" in proc.stdout, proc.stdout
    assert proc.returncode == 1


@pytest.mark.parametrize("kind", ["json", "avro"])
def test_a_registry_answer_with_unusable_references_is_a_bad_record_not_a_crash(schema_registry, kind):
    from kpipe.deserializers.avro import avro_plugin

    if kind == "json":
        sid = schema_registry.register("j-value", {"type": "object"}, "JSON")
        d, payload = deserializer(schema_registry), b"{}"
    else:
        sid = schema_registry.register("a-value", {"type": "record", "name": "R", "fields": []})
        d, payload = avro_plugin.create({"registry": {"url": schema_registry.url, "timeout": 2}}), b""
    schema_registry.schemas[sid - 1]["references"] = ["bogus"]  # the registry now serves this
    err = bad_at(d, [b"\x00" + sid.to_bytes(4, "big") + payload])
    assert err.index == 0 and "references that are not a list" in str(err), str(err)

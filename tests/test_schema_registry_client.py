"""Confluent's own Schema Registry client and ``AvroSerializer`` against the test registry
(``schema_registry.py``), and kpipe decoding what they wrote.

The first tests pin the registry's answers to what ``SchemaRegistryClient`` expects, so the
test registry stands in for a real one. The others produce the way a Confluent producer does
(auto-register, ``use.latest.version``, the subject name strategies, schema references) and
decode with kpipe, through a real ``kpipe run`` for the evolution cases, reading the files back
with orjson and pyarrow.
"""
from __future__ import annotations

import io
import json

import orjson
import pyarrow.dataset as pads
import pytest
import yaml
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import write_spec
from kit import produce_values, run_kpipe, seal, unique
from kpipe.deserializers.avro import AvroDeserializer
from schema_registry import schema_registry  # noqa: F401 (a fixture)

V1 = {"type": "record", "name": "Order", "namespace": "kpipe.example",
      "fields": [{"name": "order_id", "type": "long"}, {"name": "amount", "type": "double"}]}
# v2 adds a field with a default (a BACKWARD-compatible change): readers of v2 fill it in for v1 data
V2 = dict(V1, fields=V1["fields"] + [{"name": "channel", "type": "string", "default": "web"}])
N = 120


def text(schema) -> str:
    return json.dumps(schema)


def client(reg) -> SchemaRegistryClient:
    """A fresh client: its caches are empty, so every call reaches the registry."""
    return SchemaRegistryClient({"url": reg.url})


def serializer(reg, schema, **conf) -> AvroSerializer:
    return AvroSerializer(client(reg), text(schema), conf=conf or None)


def serialize(ser: AvroSerializer, topic: str, values: list) -> list[bytes]:
    ctx = SerializationContext(topic, MessageField.VALUE)
    return [ser(v, ctx) for v in values]


def decode(reg, raw: list, **extra) -> list:
    return AvroDeserializer({"registry": {"url": reg.url, "timeout": "5s"}, **extra}).deserialize(raw)


def schema_id(raw: bytes) -> int:
    assert raw[0] == 0, raw[:5]  # magic byte 0, then the 4-byte big-endian id
    return int.from_bytes(raw[1:5], "big")


def order(i: int, channel: str | None = None) -> dict:
    return {"order_id": i, "amount": i * 1.25} | ({"channel": channel} if channel else {})


# -- the registry's answers, as Confluent's client reads them -------------------------------


def test_the_client_registers_looks_up_and_reads_back_versions(schema_registry):
    sid1 = client(schema_registry).register_schema("orders-value", Schema(text(V1), "AVRO"))
    # the same schema again (another client, no cache): the same id, no new version
    assert client(schema_registry).register_schema("orders-value", Schema(text(V1), "AVRO")) == sid1
    sid2 = client(schema_registry).register_schema("orders-value", Schema(text(V2), "AVRO"))
    assert sid2 != sid1

    c = client(schema_registry)
    assert json.loads(c.get_schema(sid1).schema_str) == V1
    assert c.get_schema(sid2).schema_type == "AVRO"
    latest = c.get_latest_version("orders-value")
    assert (latest.subject, latest.version, latest.schema_id) == ("orders-value", 2, sid2)
    assert json.loads(latest.schema.schema_str) == V2
    first = c.get_version("orders-value", 1)
    assert (first.version, first.schema_id) == (1, sid1)
    assert c.get_versions("orders-value") == [1, 2]
    assert c.get_subjects() == ["orders-value"]
    found = client(schema_registry).lookup_schema("orders-value", Schema(text(V1), "AVRO"))
    assert (found.subject, found.version, found.schema_id) == ("orders-value", 1, sid1)


def test_the_client_gets_the_registry_error_codes(schema_registry):
    client(schema_registry).register_schema("orders-value", Schema(text(V1), "AVRO"))
    c = client(schema_registry)
    cases = [
        (lambda: c.get_schema(99), 40403),
        (lambda: c.lookup_schema("orders-value", Schema(text(V2), "AVRO")), 40403),
        (lambda: c.lookup_schema("no-such-value", Schema(text(V1), "AVRO")), 40401),
        (lambda: c.get_latest_version("no-such-value"), 40401),
        (lambda: c.get_version("orders-value", 7), 40402),
        (lambda: c.register_schema("orders-value", Schema('{"type": "recrd"}', "AVRO")), 42201),
    ]
    for call, code in cases:
        with pytest.raises(SchemaRegistryError) as info:
            call()
        assert info.value.error_code == code, info.value


def test_soft_deleted_versions_show_only_when_asked_for(schema_registry):
    c = client(schema_registry)
    sid1 = c.register_schema("orders-value", Schema(text(V1), "AVRO"))
    c.register_schema("orders-value", Schema(text(V2), "AVRO"))
    assert c.delete_version("orders-value", 1) == 1
    assert c.get_versions("orders-value") == [2]
    assert c.get_versions("orders-value", deleted=True) == [1, 2]
    assert client(schema_registry).get_version("orders-value", 1, deleted=True).schema_id == sid1
    with pytest.raises(SchemaRegistryError):
        client(schema_registry).lookup_schema("orders-value", Schema(text(V1), "AVRO"))
    found = client(schema_registry).lookup_schema("orders-value", Schema(text(V1), "AVRO"), deleted=True)
    assert (found.version, found.schema_id) == (1, sid1)
    with pytest.raises(SchemaRegistryError) as info:  # permanent only after soft, as the real one
        c.delete_subject("orders-value", permanent=True)
    assert info.value.error_code == 40405
    assert c.delete_subject("orders-value") == [2]
    assert c.get_subjects() == [] and c.get_subjects(deleted=True) == ["orders-value"]
    assert c.delete_subject("orders-value", permanent=True) == [1, 2]
    assert c.get_subjects(deleted=True) == []
    assert c.get_schema(sid1).schema_str  # ids stay readable: old messages still decode


def test_normalize_makes_equivalent_schemas_one(schema_registry):
    spelled_out = dict(V1, fields=[{"name": "order_id", "type": {"type": "long"}},
                                   {"name": "amount", "type": "double"}])
    sid = client(schema_registry).register_schema("orders-value", Schema(text(V1), "AVRO"), normalize_schemas=True)
    assert client(schema_registry).register_schema(
        "orders-value", Schema(text(spelled_out), "AVRO"), normalize_schemas=True) == sid
    # without normalize the spelling differs, so it is another schema, as in the real registry
    assert client(schema_registry).register_schema("orders-value", Schema(text(spelled_out), "AVRO")) != sid


# -- AvroSerializer produces, kpipe decodes -------------------------------------------------


def test_auto_register_then_kpipe_decodes_both_versions(schema_registry):
    first = serialize(serializer(schema_registry, V1), "orders", [order(i) for i in range(3)])
    second = serialize(serializer(schema_registry, V2), "orders", [order(i, "app") for i in range(3, 6)])
    assert client(schema_registry).get_versions("orders-value") == [1, 2]  # TopicNameStrategy
    assert {schema_id(v) for v in first} == {1} and {schema_id(v) for v in second} == {2}
    assert decode(schema_registry, first + second) == [order(i) for i in range(3)] + [
        order(i, "app") for i in range(3, 6)]


def test_use_latest_version_writes_with_the_subjects_latest_schema(schema_registry):
    c = client(schema_registry)
    c.register_schema("orders-value", Schema(text(V1), "AVRO"))
    sid2 = c.register_schema("orders-value", Schema(text(V2), "AVRO"))
    # the producer's code still knows v1; the serializer writes v2, filling in the default
    ser = serializer(schema_registry, V1, **{"auto.register.schemas": False, "use.latest.version": True})
    raw = serialize(ser, "orders", [order(1), order(2, "app")])
    assert [schema_id(v) for v in raw] == [sid2, sid2]
    assert decode(schema_registry, raw) == [order(1, "web"), order(2, "app")]


def test_without_auto_register_the_serializer_looks_the_schema_up(schema_registry):
    sid = client(schema_registry).register_schema("orders-value", Schema(text(V1), "AVRO"))
    raw = serialize(serializer(schema_registry, V1, **{"auto.register.schemas": False}), "orders", [order(7)])
    assert schema_id(raw[0]) == sid
    assert ("POST", "/subjects/orders-value?normalize=False&deleted=False") in schema_registry.requests
    assert decode(schema_registry, raw) == [order(7)]


@pytest.mark.parametrize("strategy, subject", [("TOPIC", "orders-value"),
                                               ("RECORD", "kpipe.example.Order"),
                                               ("TOPIC_RECORD", "orders-kpipe.example.Order")])
def test_every_subject_name_strategy_decodes_by_id(schema_registry, strategy, subject):
    raw = serialize(serializer(schema_registry, V1, **{"subject.name.strategy.type": strategy}),
                    "orders", [order(1), order(2)])
    assert client(schema_registry).get_subjects() == [subject]
    # the consumer needs no subject: the id in the value names the schema
    assert decode(schema_registry, raw) == [order(1), order(2)]


def test_a_schema_with_references_from_the_serializer(schema_registry):
    money = {"type": "record", "name": "Money", "namespace": "kpipe.example",
             "fields": [{"name": "units", "type": "long"}, {"name": "currency", "type": "string"}]}
    priced = {"type": "record", "name": "Priced", "namespace": "kpipe.example",
              "fields": [{"name": "id", "type": "long"}, {"name": "price", "type": "kpipe.example.Money"}]}
    client(schema_registry).register_schema("money", Schema(text(money), "AVRO"))
    ref = SchemaReference("kpipe.example.Money", "money", 1)
    ser = AvroSerializer(client(schema_registry), Schema(text(priced), "AVRO", [ref]))
    values = [{"id": i, "price": {"units": 100 * i, "currency": "EUR"}} for i in range(3)]
    raw = serialize(ser, "priced", values)
    assert schema_id(raw[0]) == 2
    assert decode(schema_registry, raw) == values


# -- through the broker and a real kpipe run -----------------------------------------------


def run_to(tmp_path, brokers, topic, raw: list, seal_value, fmt: str, **deserializer) -> object:
    """Produce ``raw`` round-robin to the 4 partitions, seal, ``kpipe run --until-caught-up``
    into the files sink; returns the output directory."""
    produce_values(brokers, topic, ((i % 4, str(i), v) for i, v in enumerate(raw)))
    seal(brokers, topic, lambda p: seal_value)  # the Tansu end-offset quirk (kit.seal)
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=unique("sr"), fmt=fmt)
    doc = yaml.safe_load(spec.read_text())
    doc["deserializer"] = {"type": "avro", **deserializer}
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def landed_jsonl(out) -> list:
    rows = [orjson.loads(line) for f in sorted(out.rglob("*.jsonl")) for line in f.read_bytes().splitlines()]
    return sorted(rows, key=lambda r: r["order_id"])


def evolving(reg, topic: str, **conf) -> tuple[list, bytes]:
    """A producer that moves from v1 to v2 half way, as after a deploy; the seal is v2."""
    first = serialize(serializer(reg, V1, **conf), topic, [order(i) for i in range(N // 2)])
    if conf.get("use.latest.version"):
        client(reg).register_schema(f"{topic}-value", Schema(text(V2), "AVRO"))
    ser2 = serializer(reg, V2, **conf)
    second = serialize(ser2, topic, [order(i, f"c{i % 3}") for i in range(N // 2, N)])
    return first + second, serialize(ser2, topic, [order(10_000, "seal")])[0]


def expected(v1_channel=None) -> list:
    """Each record as written; a v1 record has no channel, or ``v1_channel`` when resolved."""
    rows = [order(i, v1_channel) for i in range(N // 2)] + [order(i, f"c{i % 3}") for i in range(N // 2, N)]
    return rows + [order(10_000, "seal")] * 4


def test_auto_registered_evolution_lands_each_record_as_written(brokers, topic, tmp_path, schema_registry):
    raw, sealed = evolving(schema_registry, topic)
    out = run_to(tmp_path, brokers, topic, raw, sealed, "jsonl", registry={"url": schema_registry.url})
    # each value is decoded with its own writer schema: a v1 record has no channel at all
    assert landed_jsonl(out) == expected()


def test_use_latest_version_evolution_with_a_reader_schema(brokers, topic, tmp_path, schema_registry):
    client(schema_registry).register_schema(f"{topic}-value", Schema(text(V1), "AVRO"))
    raw, sealed = evolving(schema_registry, topic, **{"auto.register.schemas": False, "use.latest.version": True})
    assert {schema_id(v) for v in raw} == {1, 2}
    avsc = tmp_path / "order-v2.avsc"
    avsc.write_text(text(V2))
    out = run_to(tmp_path, brokers, topic, raw, sealed, "jsonl",
                 registry={"url": schema_registry.url}, reader_schema=str(avsc))
    # resolved to v2: the v1 records take the field's default
    assert landed_jsonl(out) == expected(v1_channel="web")


def test_evolution_into_parquet_is_one_table_with_nulls_for_v1(brokers, topic, tmp_path, schema_registry):
    raw, sealed = evolving(schema_registry, topic)
    out = run_to(tmp_path, brokers, topic, raw, sealed, "parquet", registry={"url": schema_registry.url})
    table = pads.dataset(str(out), format="parquet", exclude_invalid_files=True).to_table()
    rows = sorted(table.select(["order_id", "amount", "channel"]).to_pylist(), key=lambda r: r["order_id"])
    assert rows == [r | {"channel": r.get("channel")} for r in expected()]


MONEY = {"type": "record", "name": "Money", "namespace": "kpipe.example",
         "fields": [{"name": "units", "type": "long"}, {"name": "currency", "type": "string"}]}
# two fields of the referenced type: the second must name it, not define it again
PRICED = {"type": "record", "name": "Priced", "namespace": "kpipe.example",
          "fields": [{"name": "order_id", "type": "long"}, {"name": "price", "type": "kpipe.example.Money"},
                     {"name": "tax", "type": ["null", "Money"], "default": None}]}


def priced(i: int) -> dict:
    return {"order_id": i, "price": {"units": 100 * i, "currency": "EUR"},
            "tax": None if i % 2 else {"units": 19 * i, "currency": "EUR"}}


@pytest.mark.parametrize("fmt", ["avro", "parquet"])
def test_a_referenced_type_lands_as_a_typed_column(brokers, topic, tmp_path, schema_registry, fmt):
    """The sinks take their column types from the deserializer's schema: with references, the
    referenced types must be in it, or the avro format cannot write and parquet loses the struct."""
    from fastavro import reader

    client(schema_registry).register_schema("money", Schema(text(MONEY), "AVRO"))
    ser = AvroSerializer(client(schema_registry),
                         Schema(text(PRICED), "AVRO", [SchemaReference("kpipe.example.Money", "money", 1)]))
    raw = serialize(ser, topic, [priced(i) for i in range(N)])
    out = run_to(tmp_path, brokers, topic, raw, serialize(ser, topic, [priced(10_000)])[0], fmt,
                 registry={"url": schema_registry.url})
    if fmt == "avro":
        rows = [r for f in sorted(out.rglob("*.avro")) for r in reader(f.open("rb"))]
    else:
        table = pads.dataset(str(out), format="parquet", exclude_invalid_files=True).to_table()
        assert str(table.schema.field("price").type) == "struct<units: int64, currency: string>"
        rows = table.select(["order_id", "price", "tax"]).to_pylist()
    assert sorted(rows, key=lambda r: r["order_id"]) == [priced(i) for i in range(N)] + [priced(10_000)] * 4


def test_the_schema_sinks_get_stands_alone_with_nested_references(schema_registry):
    """A reference that references another, types used more than once, short names and a type
    of another namespace: ``schema()`` defines each once and parses without the registry."""
    from fastavro import parse_schema, schemaless_reader, schemaless_writer

    currency = {"type": "enum", "name": "Currency", "namespace": "kpipe.money", "symbols": ["EUR", "USD"]}
    money = {"type": "record", "name": "Money", "namespace": "kpipe.example",
             "fields": [{"name": "units", "type": "long"}, {"name": "currency", "type": "kpipe.money.Currency"}]}
    priced = {"type": "record", "name": "Priced", "namespace": "kpipe.example",
              "fields": [{"name": "price", "type": "Money"}, {"name": "tax", "type": ["null", "kpipe.example.Money"]},
                         {"name": "history", "type": {"type": "array", "items": "Money"}},
                         {"name": "unit", "type": "kpipe.money.Currency"}]}
    c = client(schema_registry)
    c.register_schema("currency", Schema(text(currency), "AVRO"))
    c.register_schema("money", Schema(text(money), "AVRO", [SchemaReference("kpipe.money.Currency", "currency", 1)]))
    ser = AvroSerializer(client(schema_registry), Schema(
        text(priced), "AVRO", [SchemaReference("kpipe.example.Money", "money", 1)]))
    eur = {"units": 5, "currency": "EUR"}
    values = [{"price": eur, "tax": None, "history": [eur, {"units": 1, "currency": "USD"}], "unit": "USD"},
              {"price": eur, "tax": eur, "history": [], "unit": "EUR"}]
    raw = serialize(ser, "priced", values)
    d = AvroDeserializer({"registry": {"url": schema_registry.url}})
    assert d.deserialize(raw) == values
    alone = parse_schema(d.schema())  # no named types given: the schema holds them all
    for v, r in zip(values, raw):
        buf = io.BytesIO()
        schemaless_writer(buf, alone, v)
        assert buf.getvalue() == r[5:]  # the same binary encoding: the same schema
        assert schemaless_reader(io.BytesIO(r[5:]), alone) == v

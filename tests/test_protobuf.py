"""The protobuf deserializer, one list of raw values at a time: values produced by Confluent's
own ProtobufSerializer against the test registry (``schema_registry.py``) over real HTTP, and
plain messages from a descriptor set or a ``.proto`` file."""
from __future__ import annotations

import datetime as dt

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2

from kpipe.api import BadRecordError, FatalError, RetryableError
from kpipe.deserializers.protobuf import ProtobufDeserializer
from protokit import PROTOS, classes, compile_tree
from schema_registry import SchemaRegistry, schema_registry  # noqa: F401 (a fixture)

UTC = dt.timezone.utc
FILES = compile_tree("shop/v1/order.proto")
TYPES = classes(FILES)
Order, Refund, Detail = TYPES["shop.v1.Order"], TYPES["shop.v1.Refund"], TYPES["shop.v1.Refund.Reason.Detail"]
# version 2 of order.proto: a field added (schema evolution)
V2_TEXT = (PROTOS / "shop/v1/order.proto").read_text().replace(
    "  repeated string tags = 13;\n", "  repeated string tags = 13;\n  string channel = 14;\n")
Order2 = classes(compile_tree("shop/v1/order.proto", replace={"shop/v1/order.proto": V2_TEXT}))["shop.v1.Order"]


def order(i: int, cls=Order, **extra):
    """An order with every kind of field set, and what it decodes to."""
    msg = cls(order_id=2**40 + i, customer=f"c{i}", status=1 + i % 2, labels={"k": str(i)},
              signature=bytes([i % 256, 0]), big=2**64 - 1 - i, tags=[f"t{i}", "x"], **extra)
    msg.created_at.FromDatetime(dt.datetime(2026, 11, 26, 12, 0, i % 60, 123456))
    line = msg.lines.add(sku=f"sku-{i}", quantity=i % 7)
    line.price.units = 100 + i
    line.price.currency = "EUR"
    if i % 2:
        msg.coupon.value = f"SAVE{i}"
        msg.card_token = f"tok-{i}"
        msg.discount = 0.0  # set, though zero: an optional field keeps it
    else:
        msg.invoice_id = f"inv-{i}"
    want = {"order_id": 2**40 + i, "customer": f"c{i}", "status": ["STATUS_PLACED", "STATUS_SHIPPED"][i % 2],
            "created_at": dt.datetime(2026, 11, 26, 12, 0, i % 60, 123456, tzinfo=UTC),
            "coupon": f"SAVE{i}" if i % 2 else None,
            "lines": [{"sku": f"sku-{i}", "quantity": i % 7,
                       "price": {"currency": "EUR", "units": 100 + i, "nanos": 0}}],
            "labels": {"k": str(i)}, "signature": bytes([i % 256, 0]),
            "discount": 0.0 if i % 2 else None, "big": 2**64 - 1 - i, "tags": [f"t{i}", "x"],
            **({"card_token": f"tok-{i}"} if i % 2 else {"invoice_id": f"inv-{i}"}), **extra}
    return msg, want


def serializer(reg, cls, **conf):
    return ProtobufSerializer(cls, SchemaRegistryClient({"url": reg.url}), {"use.deprecated.format": False, **conf})


def produce(reg, cls, msgs, topic="orders", field=MessageField.VALUE) -> list:
    ser = serializer(reg, cls)
    return [ser(m, SerializationContext(topic, field)) for m in msgs]


def registry_deserializer(reg, **extra) -> ProtobufDeserializer:
    return ProtobufDeserializer({"registry": {"url": reg.url, "timeout": 5}, **extra})


def bad_at(deserializer, raw) -> BadRecordError:
    with pytest.raises(BadRecordError) as info:
        deserializer.deserialize(raw)
    return info.value


# -- the registry ----------------------------------------------------------------------------


@pytest.mark.parametrize("serialized", [True, False], ids=["serialized", "text-only-registry"])
def test_serializer_values_decode_with_imports_and_references(serialized):
    with SchemaRegistry(serialized_format=serialized) as reg:
        pairs = [order(i) for i in range(6)]
        raw = produce(reg, Order, [m for m, _ in pairs])
        # the import of shop/v1/common.proto is a reference; google/protobuf/* are not registered
        assert sorted(reg.subjects) == ["orders-value", "shop/v1/common.proto"]
        d = registry_deserializer(reg)
        assert d.deserialize(raw[:3] + [None] + raw[3:]) == [w for _, w in pairs[:3]] + [None] + [w for _, w in pairs[3:]]
        assert d.deserialize(raw) == [w for _, w in pairs]
        sid = int.from_bytes(raw[0][1:5], "big")
        assert reg.fetches(sid) == 1  # cached by id
        asked = [p for m, p in reg.requests if m == "GET" and "format=serialized" in p]
        assert len(asked) == 2  # the schema and its one reference, each in serialized form


def test_message_indexes_pick_nested_and_second_messages(schema_registry, caplog):
    orders = produce(schema_registry, Order, [order(1)[0]], "mixed")
    refunds = produce(schema_registry, Refund, [Refund(order_id=7, amount={"units": 3})], "mixed-refunds")
    details = produce(schema_registry, Detail, [Detail(text="late")], "mixed-details")
    # one schema (one file) three ways: [0] is the short form, then [1], then [1, 0, 0]
    assert orders[0][5:6] == b"\x00" and refunds[0][5:7] == b"\x02\x02" and details[0][5:9] == b"\x06\x02\x00\x00"
    d = registry_deserializer(schema_registry)
    got = d.deserialize([details[0], orders[0], refunds[0], details[0]])
    assert got == [{"text": "late"}, order(1)[1],
                   {"order_id": 7, "amount": {"currency": "", "units": 3, "nanos": 0}}, {"text": "late"}]
    assert d.schema()["name"] == "shop.v1.Refund.Reason.Detail"  # the most recent type
    assert schema_registry.fetches(int.from_bytes(orders[0][1:5], "big")) == 1
    # one message class per (schema id, message indexes), built once however the values alternate
    caplog.set_level("INFO", logger="kpipe.protobuf")
    assert d.deserialize([orders[0], refunds[0], details[0]] * 3)[3:6] == got[1:3] + got[:1]
    assert [r.getMessage().split(": ")[-1] for r in caplog.records] == []
    fresh = registry_deserializer(schema_registry)
    fresh.deserialize([orders[0], refunds[0], details[0], orders[0]] * 2)
    assert sorted(r.getMessage().split(": ")[-1] for r in caplog.records) == [
        "shop.v1.Order", "shop.v1.Refund", "shop.v1.Refund.Reason.Detail"]


@pytest.mark.parametrize("serialized", [True, False], ids=["serialized", "text-only-registry"])
def test_unregistered_imports_json_values_maps_and_recursion(serialized):
    from fastavro import parse_schema

    from kpipe.formats.dataset import declared

    Shipment = classes(compile_tree("shop/v1/shipment.proto"))["shop.v1.Shipment"]
    msg = Shipment(id="s1", due={"year": 2026, "month": 11, "day": 26}, slots={7: "am", -1: "pm"},
                   notes=[{"string_value": "fragile"}, {"null_value": 0}])
    msg.attributes.update({"a": 1, "b": [True, None, "x"], "c": {"d": 2.5}})
    msg.children[True].id = "inner"
    msg.children[True].weight.value = 12
    want = {"id": "s1", "due": {"year": 2026, "month": 11, "day": 26},
            "attributes": {"a": 1.0, "b": [True, None, "x"], "c": {"d": 2.5}}, "weight": None,
            "slots": {"7": "am", "-1": "pm"}, "notes": ["fragile", None],
            "children": {"true": {"id": "inner", "due": None, "attributes": None, "weight": 12, "slots": {},
                                  "children": {}, "notes": []}}}
    with SchemaRegistry(serialized_format=serialized) as reg:
        raw = produce(reg, Shipment, [msg], "shipments")
        assert sorted(reg.subjects) == ["shipments-value"]  # google/* are never registered
        d = registry_deserializer(reg)
        assert d.deserialize(raw) == [want]
    parse_schema(d.schema())  # a valid Avro schema, the recursion by name
    types = declared(d.schema(), {})
    assert types["due"] == {"struct": {"year": "integer", "month": "integer", "day": "integer"}}
    assert types["attributes"] == "json" and types["slots"] == "json" and types["weight"] == "bigint"
    assert types["notes"] == {"list": "json"}


def test_schema_evolution_a_field_added(schema_registry):
    old = produce(schema_registry, Order, [order(i)[0] for i in range(3)], "evolving")
    new = produce(schema_registry, Order2, [order(i, Order2, channel=f"ch{i}")[0] for i in range(3, 6)], "evolving")
    assert old[0][1:5] != new[0][1:5]  # a second version, a second id
    d = registry_deserializer(schema_registry)
    got = d.deserialize([old[0], new[0], old[1], new[1]])
    assert got == [order(0)[1], order(3, Order2, channel="ch3")[1], order(1)[1], order(4, Order2, channel="ch4")[1]]
    assert "channel" in [f["name"] for f in d.schema()["fields"]]
    assert d.deserialize([old[2]]) == [order(2)[1]]
    assert "channel" not in [f["name"] for f in d.schema()["fields"]]


def wire(sid: int, rest: bytes) -> bytes:
    return b"\x00" + sid.to_bytes(4, "big") + rest


@pytest.mark.parametrize("make, expect", [
    (lambda sid, good: b"\x01" + good[1:], "magic byte 0x01"),
    (lambda sid, good: good[:3], "shorter than its 5-byte header"),
    (lambda sid, good: wire(sid, b""), "message-index varint is cut short"),
    (lambda sid, good: wire(sid, b"\x04\x80"), "message-index varint is cut short"),
    (lambda sid, good: wire(sid, b"\x01"), "-1 message indexes"),
    (lambda sid, good: wire(sid, b"\x04\x02\x01") + good[6:], "a negative message index (-1)"),
    (lambda sid, good: wire(sid, b"\x02\x0a") + good[6:], "message index 5 of [5]"),
    (lambda sid, good: wire(sid, b"\x04\x02\x08") + good[6:], "message index 4 of [1, 4]"),
    (lambda sid, good: good[:6] + b"\xff\xff\xff", "invalid Protobuf value of 3 bytes"),
    (lambda sid, good: good[:-1], "not a shop.v1.Order"),
    (lambda sid, good: wire(999, good[5:]), "schema id 999 is not in the schema registry"),
], ids=["magic", "short", "no-indexes", "truncated-varint", "negative-count", "negative-index", "index-out-of-range",
        "nested-index-out-of-range", "garbage-payload", "truncated-payload", "unknown-id"])
def test_bad_values_are_bad_records_at_their_index(schema_registry, make, expect):
    good = produce(schema_registry, Order, [order(i)[0] for i in range(3)], "bad")
    sid = int.from_bytes(good[0][1:5], "big")
    bad = make(sid, good[1])
    err = bad_at(registry_deserializer(schema_registry), [good[0], None, bad, good[2]])
    assert err.index == 2 and expect in str(err), str(err)


def test_unknown_id_is_not_asked_again(schema_registry):
    d = registry_deserializer(schema_registry)
    for _ in range(3):
        assert bad_at(d, [wire(42, b"\x00")]).index == 0
    assert schema_registry.fetches(42) == 1


def test_a_non_protobuf_schema_id_is_a_bad_record(schema_registry):
    sid = schema_registry.register("avro-value", {"type": "record", "name": "R", "fields": []})
    err = bad_at(registry_deserializer(schema_registry), [wire(sid, b"\x00")])
    assert "is a AVRO schema, not Protobuf" in str(err), str(err)


def test_a_timestamp_no_datetime_holds_is_a_bad_record(schema_registry):
    msg, _ = order(1)
    msg.created_at.seconds = 400_000_000_000  # year ~14,600: valid protobuf, past datetime's range
    raw = produce(schema_registry, Order, [order(0)[0], msg], "far")
    err = bad_at(registry_deserializer(schema_registry), raw)
    assert err.index == 1 and "OverflowError" in str(err), str(err)


def test_registry_down_is_retryable_never_a_bad_record():
    with SchemaRegistry() as reg:
        raw = produce(reg, Order, [order(0)[0]])
    d = ProtobufDeserializer({"registry": {"url": reg.url, "timeout": 1}})
    with pytest.raises(RetryableError, match="unreachable"):
        d.deserialize(raw)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_registry_server_errors_are_retryable_then_recover(schema_registry, status):
    raw = produce(schema_registry, Order, [order(0)[0]], "flaky")
    d = registry_deserializer(schema_registry)
    schema_registry.fail = [status]
    with pytest.raises(RetryableError, match=f"HTTP {status}"):
        d.deserialize(raw)
    assert d.deserialize(raw) == [order(0)[1]]


def test_a_reference_that_fails_to_load_is_retryable_and_nothing_half_cached(schema_registry):
    raw = produce(schema_registry, Order, [order(0)[0]], "flaky-ref")
    d = registry_deserializer(schema_registry)
    schema_registry.fail = [None, 503]  # the schema's own GET answers, its reference's fails
    with pytest.raises(RetryableError, match="HTTP 503"):
        d.deserialize(raw)
    assert d.deserialize(raw) == [order(0)[1]]


def test_keys_with_the_key_subject(schema_registry):
    keys = produce(schema_registry, Refund, [Refund(order_id=i) for i in range(3)], "keyed", MessageField.KEY)
    assert "keyed-key" in schema_registry.subjects
    d = registry_deserializer(schema_registry)
    assert [k["order_id"] for k in d.deserialize(keys)] == [0, 1, 2]


# -- without a registry ----------------------------------------------------------------------


def descriptor_set(tmp_path, files=FILES):
    path = tmp_path / "orders.pb"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=files).SerializeToString())
    return str(path)


def test_descriptor_set_plain_messages(tmp_path):
    d = ProtobufDeserializer({"descriptor_set": descriptor_set(tmp_path), "message": "shop.v1.Order"})
    pairs = [order(i) for i in range(4)]
    assert d.deserialize([m.SerializeToString() for m, _ in pairs] + [None]) == [w for _, w in pairs] + [None]
    assert d.schema()["name"] == "shop.v1.Order"
    err = bad_at(d, [pairs[0][0].SerializeToString(), b"\x0a\xff"])
    assert err.index == 1 and "not a shop.v1.Order" in str(err)


def test_descriptor_set_without_its_imports_finds_the_well_known_ones(tmp_path):
    own = [f for f in FILES if not f.name.startswith("google/")]
    d = ProtobufDeserializer({"descriptor_set": descriptor_set(tmp_path, own), "message": ".shop.v1.Order"})
    msg, want = order(3)
    assert d.deserialize([msg.SerializeToString()]) == [want]


def test_proto_file_compiled_at_load(tmp_path):
    d = ProtobufDeserializer({"proto": str(PROTOS / "shop/v1/order.proto"), "import_path": str(PROTOS),
                              "message": "shop.v1.Refund.Reason.Detail"})
    assert d.deserialize([Detail(text="x").SerializeToString()]) == [{"text": "x"}]


def test_including_default_values_false_keeps_only_what_was_sent(tmp_path):
    d = ProtobufDeserializer({"descriptor_set": descriptor_set(tmp_path), "message": "shop.v1.Order",
                              "including_default_values": False})
    msg = Order(customer="c", discount=0.0)
    msg.lines.add(sku="s")
    assert d.deserialize([msg.SerializeToString()]) == [{"customer": "c", "discount": 0.0, "lines": [{"sku": "s"}]}]
    assert all(isinstance(f["type"], list) for f in d.schema()["fields"])  # any of them may be missing


@pytest.mark.parametrize("config, expect", [
    ({"descriptor_set": "nope.pb", "message": "a.B"}, "cannot read"),
    ({"descriptor_set": "{set}", "message": "shop.v1.Nope"}, "has no message 'shop.v1.Nope'"),
    ({"descriptor_set": "{junk}", "message": "a.B"}, "is not a FileDescriptorSet"),
    ({"proto": "{bad_proto}", "message": "a.B"}, "bad.proto:2:"),
    ({"proto": str(PROTOS / "shop/v1/order.proto"), "message": "shop.v1.Order"}, "shop/v1/common.proto"),
    ({"descriptor_set": "{set}"}, "needs 'message'"),
    ({"registry": {"url": "http://127.0.0.1:1"}, "message": "a.B"}, "'message' goes with descriptor_set"),
])
def test_unusable_configurations_are_fatal(tmp_path, config, expect):
    (tmp_path / "junk.pb").write_bytes(b"\xff\xff\xff")
    (tmp_path / "bad.proto").write_text('syntax = "proto3";\nmessage B { strin x = 1; }\n')
    paths = {"{set}": descriptor_set(tmp_path), "{junk}": str(tmp_path / "junk.pb"),
             "{bad_proto}": str(tmp_path / "bad.proto")}
    config = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in config.items()}
    with pytest.raises(FatalError, match=expect.replace("(", r"\(")):
        ProtobufDeserializer(config)


def test_encode_json_round_trips_through_the_json_mapping(tmp_path, schema_registry):
    d = ProtobufDeserializer({"descriptor_set": descriptor_set(tmp_path), "message": "shop.v1.Order"})
    given = {"orderId": "12", "createdAt": "2026-11-26T12:00:00.5Z", "status": "STATUS_SHIPPED",
             "coupon": "X", "labels": {"a": "b"}, "signature": "AAE="}
    want = {"order_id": 12, "customer": "", "status": "STATUS_SHIPPED",
            "created_at": dt.datetime(2026, 11, 26, 12, 0, 0, 500000, tzinfo=UTC), "coupon": "X",
            "lines": [], "labels": {"a": "b"}, "signature": b"\x00\x01", "discount": None, "big": 0, "tags": []}
    assert d.deserialize([d.encode_json(given, "orders")]) == [want]
    with pytest.raises(FatalError, match="not a shop.v1.Order"):
        d.encode_json({"nope": 1}, "orders")
    produce(schema_registry, Order, [order(0)[0]], "json-in")
    r = registry_deserializer(schema_registry)
    assert r.deserialize([r.encode_json(given, "json-in")]) == [want]
    with pytest.raises(FatalError, match="no usable Protobuf schema under subject 'elsewhere-value'"):
        r.encode_json(given, "elsewhere")

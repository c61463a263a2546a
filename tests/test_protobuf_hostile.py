"""Hostile and unusual Protobuf values: nesting past any real schema, lengths that promise more
than is there, the well-known types kpipe maps as plain messages (Any, Duration, Empty), and
an id the registry learns only after a value carrying it was refused."""
from __future__ import annotations

import datetime as dt

import pytest
from confluent_kafka.serialization import MessageField, SerializationContext

from kpipe.api import SinkContext
from kpipe.deserializers import registry
from protokit import classes, compile_tree
from schema_registry import schema_registry  # noqa: F401 (a fixture)
from test_protobuf import Order, bad_at, order, produce, registry_deserializer, serializer

Shipment = classes(compile_tree("shop/v1/shipment.proto"))["shop.v1.Shipment"]
ENVELOPE_TYPES = classes(compile_tree("shop/v1/envelope.proto"))
Envelope, Part = ENVELOPE_TYPES["shop.v1.Envelope"], ENVELOPE_TYPES["shop.v1.Envelope.Part"]


def nested(depth: int):
    """A Shipment holding itself ``depth`` times over (map<bool, Shipment> children)."""
    msg = Shipment(id="top")
    inner = msg
    for _ in range(depth):
        inner = inner.children[True]
    return msg


def _delimited(tag: int, payload: bytes) -> bytes:
    n, head = len(payload), bytearray([tag])
    while n > 127:
        head.append((n & 127) | 128)
        n >>= 7
    return bytes(head) + bytes([n]) + payload


def test_nesting_past_the_parsers_limit_is_a_bad_record_at_its_index(schema_registry):
    ser = serializer(schema_registry, Shipment)
    ctx = SerializationContext("deep", MessageField.VALUE)
    fine, too_deep = ser(nested(20), ctx), ser(nested(500), ctx)
    # hand-made: 50,000 levels of children -> entry value -> children... in 800 KB; never a
    # recursion in Python, never a dict per level: upb refuses it at its depth limit (100)
    hostile = fine[:6]
    payload = b""
    for _ in range(50_000):
        payload = _delimited(0x32, _delimited(0x12, payload))
    hostile += payload
    d = registry_deserializer(schema_registry)
    got = d.deserialize([fine])[0]
    for _ in range(20):
        got = got["children"]["true"]
    assert got["id"] == "" and got["children"] == {}
    for bad in (too_deep, hostile):
        err = bad_at(d, [fine, None, bad, fine])
        assert err.index == 2 and "not a shop.v1.Shipment" in str(err), str(err)


def test_a_length_past_the_end_is_a_bad_record_not_an_allocation(schema_registry):
    good = [m for m, _ in (order(0), order(1))]
    raw = [serializer(schema_registry, Order)(m, SerializationContext("huge", MessageField.VALUE)) for m in good]
    # field 2 (customer, a string) said to be 2 GiB long, in a 12-byte value
    lying = raw[0][:6] + b"\x12\xff\xff\xff\xff\x07" + b"abc"
    err = bad_at(registry_deserializer(schema_registry), [raw[0], lying, raw[1]])
    assert err.index == 1 and "invalid Protobuf value of 9 bytes" in str(err), str(err)


def test_any_duration_and_empty_are_plain_messages_with_column_types(schema_registry, tmp_path):
    import pyarrow.parquet as pq
    from fastavro import parse_schema

    from kpipe.formats.dataset import declared
    from kpipe.sinks.files.sink import FilesSink
    from s3kit import make_batch

    msg = Envelope(id=1, nothing={})
    msg.extra.Pack(Part(name="inner"))
    msg.took.seconds, msg.took.nanos = 90, 5
    raw = serializer(schema_registry, Envelope)(msg, SerializationContext("wkt", MessageField.VALUE))
    d = registry_deserializer(schema_registry)
    (got,) = d.deserialize([raw])
    assert got["extra"] == {"type_url": "type.googleapis.com/shop.v1.Envelope.Part",
                            "value": Part(name="inner").SerializeToString()}
    assert got["took"] == {"seconds": 90, "nanos": 5} and got["nothing"] == {}
    parse_schema(d.schema())
    types = declared(d.schema(), {})
    assert types["extra"] == {"struct": {"type_url": "text", "value": "bytes"}}
    assert types["took"] == {"struct": {"seconds": "bigint", "nanos": "integer"}} and types["nothing"] == "json"
    # Empty (a message of no fields) is declared json: as a struct of no fields, parquet would
    # refuse every record that sets it
    sink = FilesSink({"path": str(tmp_path), "format": "parquet", "fsync": False},
                     SinkContext("p", "g", value_schema=d.schema))
    sink.open()
    sink.write([make_batch([got], 0, topic="t")])
    sink.close()
    (path,) = (tmp_path / "t").rglob("*.parquet")
    (row,) = pq.read_table(path).to_pylist()
    assert row["id"] == 1 and row["took"] == {"seconds": 90, "nanos": 5} and row["extra"] == got["extra"]
    assert row["nothing"] == "{}"


def test_an_id_registered_after_a_miss_is_refused_until_the_miss_expires(schema_registry, monkeypatch):
    """What docs/deserializers.md says: an unknown id is a bad record, and that answer is kept
    for MISSING_TTL seconds, even if the id is registered meanwhile; after that it decodes."""
    sid = len(schema_registry.schemas) + 1  # the id the next new schema gets (no references)
    msg = Shipment(id="s5")
    early = b"\x00" + sid.to_bytes(4, "big") + b"\x00" + msg.SerializeToString()
    now = [1000.0]
    monkeypatch.setattr(registry.time, "monotonic", lambda: now[0])
    d = registry_deserializer(schema_registry)
    assert "is not in the schema registry" in str(bad_at(d, [early]))
    late = serializer(schema_registry, Shipment)(msg, SerializationContext("late", MessageField.VALUE))
    assert late == early  # the producer registered it since: the same id, the same bytes
    now[0] += registry.MISSING_TTL - 1
    assert bad_at(d, [late]).index == 0
    assert schema_registry.fetches(sid) == 1  # not asked again within the TTL
    now[0] += 2
    assert d.deserialize([late]) == [{"id": "s5", "due": None, "attributes": None, "weight": None,
                                      "slots": {}, "children": {}, "notes": []}]
    assert schema_registry.fetches(sid) == 2


def test_a_timestamps_nanoseconds_below_a_microsecond_are_cut_not_rounded(schema_registry):
    msg, _ = order(0)
    msg.created_at.nanos = 123_456_999  # rounding would give .123457
    raw = serializer(schema_registry, Order)(msg, SerializationContext("nanos", MessageField.VALUE))
    (got,) = registry_deserializer(schema_registry).deserialize([raw])
    assert got["created_at"] == dt.datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("nanos", [-1, 1_000_000_000])
def test_a_timestamp_with_nanos_out_of_range_is_a_bad_record(schema_registry, nanos):
    msg, _ = order(0)
    msg.created_at.nanos = nanos
    raw = serializer(schema_registry, Order)(msg, SerializationContext("nanos", MessageField.VALUE))
    err = bad_at(registry_deserializer(schema_registry), [raw])
    assert err.index == 0 and "nanos" in str(err), str(err)


def test_garbage_with_ever_new_unknown_ids_keeps_a_bounded_memory_of_them(schema_registry, monkeypatch):
    """Each unknown id is remembered for MISSING_TTL seconds; once that many misses pile up,
    the expired ones are dropped, so a stream of garbage cannot grow the cache without bound."""
    now = [1000.0]
    monkeypatch.setattr(registry.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(registry, "MISSING_SWEEP", 40)
    d = registry_deserializer(schema_registry)
    for sid in range(1000, 1040):
        assert bad_at(d, [b"\x00" + sid.to_bytes(4, "big") + b"\x00"]).index == 0
    now[0] += registry.MISSING_TTL + 1  # all 40 expired
    for sid in range(2000, 2010):
        bad_at(d, [b"\x00" + sid.to_bytes(4, "big") + b"\x00"])
    assert len(d._schemas._missing) == 10
    assert bad_at(d, [b"\x00" + (2000).to_bytes(4, "big") + b"\x00"]).index == 0  # still remembered
    assert schema_registry.fetches(2000) == 1


@pytest.mark.parametrize("refs", [["bogus"], {"name": "x"}, [{"name": "x.proto", "subject": None, "version": 1}]])
def test_a_registry_answer_with_unusable_references_is_that_ids_bad_record(schema_registry, refs):
    """Not a crash, and not blamed on the value before it: the schema id's own bad record."""
    raw = produce(schema_registry, Order, [order(0)[0]], "good")
    ships = produce(schema_registry, Shipment, [Shipment(id="x")], "ships")
    sid = int.from_bytes(ships[0][1:5], "big")
    schema_registry.schemas[sid - 1]["references"] = refs  # the registry now serves this
    for batch in ([ships[0]], [raw[0], ships[0]]):
        err = bad_at(registry_deserializer(schema_registry), batch)
        assert err.index == len(batch) - 1 and f"schema id {sid}" in str(err), str(err)
        assert "references that are not a list" in str(err), str(err)

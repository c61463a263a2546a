"""Properties of the protobuf deserializer against simple models: the wire header against
Confluent's own encoder, decoded messages against the values they were built from, and any
bytes at all against the rule that a value decodes or is a bad record, nothing else."""
from __future__ import annotations

import datetime as dt
import io

from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpipe.api import BadRecordError
from kpipe.deserializers.protobuf import ProtobufDeserializer
from kpipe.deserializers.protobuf_wire import WireError, encode_indexes, read_indexes
from protokit import classes, compile_tree
from schema_registry import SchemaRegistry

FILES = compile_tree("shop/v1/order.proto")
Order = classes(FILES)["shop.v1.Order"]
UTC = dt.timezone.utc
INDEXES = st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=6)


def confluent_header(indexes: list) -> bytes:
    buf = io.BytesIO()
    ProtobufSerializer._encode_varints(buf, indexes)
    return buf.getvalue()


@given(INDEXES, st.binary(max_size=20))
def test_message_indexes_read_what_confluent_writes(indexes, payload):
    head = confluent_header(indexes)
    assert encode_indexes(indexes) == head
    got, pos = read_indexes(b"\x00\x00\x00\x00\x01" + head + payload, 5)
    assert list(got) == indexes and pos == 5 + len(head)


@given(INDEXES)
def test_a_cut_header_is_a_wire_error(indexes):
    head = confluent_header(indexes)
    for cut in range(len(head)):
        try:
            got, pos = read_indexes(head[:cut], 0)
        except WireError:
            continue
        # a prefix that still parses must be a shorter, different array (never read past the end)
        assert pos <= cut and list(got) != indexes


TEXT = st.text(max_size=8)
LINE = st.fixed_dictionaries({"sku": TEXT, "quantity": st.integers(0, 2**32 - 1),
                              "units": st.none() | st.integers(-(2**63), 2**63 - 1)})
ORDERS = st.fixed_dictionaries({
    "order_id": st.integers(-(2**63), 2**63 - 1), "customer": TEXT, "status": st.integers(0, 2),
    "micros": st.none() | st.integers(-62135596800 * 10**6, 253402300799 * 10**6 + 999999),
    "coupon": st.none() | TEXT, "lines": st.lists(LINE, max_size=3),
    "labels": st.dictionaries(TEXT, TEXT, max_size=3), "signature": st.binary(max_size=8),
    "payment": st.none() | st.tuples(st.sampled_from(["card_token", "invoice_id"]), TEXT),
    "discount": st.none() | st.floats(allow_nan=False), "big": st.integers(0, 2**64 - 1),
    "tags": st.lists(TEXT, max_size=3)})
STATUS = ["STATUS_UNSPECIFIED", "STATUS_PLACED", "STATUS_SHIPPED"]


def build(o: dict):
    """The message ``o`` describes, and the dict the deserializer should make of it (the model)."""
    msg = Order(order_id=o["order_id"], customer=o["customer"], status=o["status"], labels=o["labels"],
                signature=o["signature"], big=o["big"], tags=o["tags"])
    want = {"order_id": o["order_id"], "customer": o["customer"], "status": STATUS[o["status"]],
            "created_at": None, "coupon": o["coupon"], "lines": [], "labels": o["labels"],
            "signature": o["signature"], "discount": o["discount"], "big": o["big"], "tags": o["tags"]}
    if o["micros"] is not None:
        seconds, micros = divmod(o["micros"], 10**6)
        msg.created_at.seconds, msg.created_at.nanos = seconds, micros * 1000
        want["created_at"] = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=o["micros"])
    if o["coupon"] is not None:
        msg.coupon.value = o["coupon"]
    for line in o["lines"]:
        added = msg.lines.add(sku=line["sku"], quantity=line["quantity"])
        price = None
        if line["units"] is not None:
            added.price.units = line["units"]
            price = {"currency": "", "units": line["units"], "nanos": 0}
        want["lines"].append({"sku": line["sku"], "quantity": line["quantity"], "price": price})
    if o["payment"] is not None:
        setattr(msg, *o["payment"])
        want[o["payment"][0]] = o["payment"][1]
    if o["discount"] is not None:
        msg.discount = o["discount"]
    return msg, want


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ORDERS, min_size=1, max_size=5))
def test_decoded_orders_are_the_values_they_were_built_from(tmp_path_factory, orders):
    d = _plain_deserializer(tmp_path_factory)
    built = [build(o) for o in orders]
    assert d.deserialize([m.SerializeToString() for m, _ in built]) == [w for _, w in built]


_CACHE: dict = {}


def _plain_deserializer(tmp_path_factory):
    if "plain" not in _CACHE:
        from google.protobuf import descriptor_pb2

        path = tmp_path_factory.mktemp("pb") / "orders.pb"
        path.write_bytes(descriptor_pb2.FileDescriptorSet(file=FILES).SerializeToString())
        _CACHE["plain"] = ProtobufDeserializer({"descriptor_set": str(path), "message": "shop.v1.Order"})
    return _CACHE["plain"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=4), st.integers(0, 3))
def test_any_bytes_decode_or_are_a_bad_record_at_their_index(junk, where):
    d, good, sid = _wire_deserializer()
    raw = [good] * where + [b"\x00" + sid.to_bytes(4, "big") + j for j in junk]
    try:
        out = d.deserialize(raw)
    except BadRecordError as err:
        assert where <= err.index < len(raw)
        assert len(d.deserialize(raw[:err.index])) == err.index  # what came before it decodes
    else:
        assert len(out) == len(raw) and all(isinstance(v, dict) for v in out)


def _wire_deserializer():
    """A registry deserializer that has loaded the schema of ``good`` (a value Confluent's
    serializer wrote) from a registry that is gone since: any other id would be a failure."""
    if "wire" not in _CACHE:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.serialization import MessageField, SerializationContext

        with SchemaRegistry() as reg:
            ser = ProtobufSerializer(Order, SchemaRegistryClient({"url": reg.url}), {"use.deprecated.format": False})
            good = ser(Order(order_id=1), SerializationContext("t", MessageField.VALUE))
            d = ProtobufDeserializer({"registry": {"url": reg.url, "timeout": 1}})
            d.deserialize([good])
        _CACHE["wire"] = (d, good, int.from_bytes(good[1:5], "big"))
    return _CACHE["wire"]

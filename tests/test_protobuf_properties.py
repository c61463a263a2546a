"""Properties of the protobuf deserializer against simple models: the wire header against
Confluent's own encoder, decoded messages against the values they were built from and against
json_format's own reading of them, and any bytes at all against the rule that a value decodes
or is a bad record, nothing else."""
from __future__ import annotations

import base64
import datetime as dt
import io
import struct

from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from google.protobuf import json_format
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


# -- any message of a descriptor with every shape, against json_format's own reading -------------
#
# The model is json_format.MessageToDict (proto field names, fields without presence printed),
# turned into kpipe's values by the documented differences alone: int64-like text -> int, base64
# -> bytes, RFC 3339 text -> an aware datetime cut to microseconds, a Duration's "1.5s" -> its
# seconds and nanos (kpipe maps Duration as a plain message), a float field the float32 it holds
# (json_format prints the shortest text), and None for an unset field with presence (with
# including_default_values) where MessageToDict leaves it out.

Envelope = classes(compile_tree("shop/v1/envelope.proto"))["shop.v1.Envelope"]
_INT64 = {"TYPE_INT64", "TYPE_SINT64", "TYPE_SFIXED64", "TYPE_UINT64", "TYPE_FIXED64"}
_NAMES = {v: k for k, v in vars(type(Envelope.DESCRIPTOR.fields[0])).items() if k.startswith("TYPE_")}


def _float32(x) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _aware(text: str) -> dt.datetime:
    """RFC 3339 as json_format prints it (0, 3, 6 or 9 digits of fraction, Z), cut to microseconds."""
    whole, _, frac = text[:-1].partition(".")
    return dt.datetime.fromisoformat(whole + "." + (frac + "000000")[:6] + "+00:00")


def _duration(text: str, defaults: bool) -> dict:
    whole, _, frac = text[:-1].partition(".")
    fields = {"seconds": int(whole), "nanos": int((frac + "000000000")[:9])}
    return {k: v for k, v in fields.items() if v or defaults}  # a plain message: zeros are not sent


def _scalar(f, v, defaults: bool):
    kind = _NAMES[f.type]
    if kind == "TYPE_MESSAGE":
        name = f.message_type.full_name
        if name == "google.protobuf.Timestamp":
            return _aware(v)
        if name == "google.protobuf.Duration":
            return _duration(v, defaults)
        if name in ("google.protobuf.Int64Value", "google.protobuf.UInt64Value"):
            return int(v)
        if name == "google.protobuf.BytesValue":
            return base64.b64decode(v)
        if name == "google.protobuf.FloatValue":
            return _float32(v)
        if name.startswith("google.protobuf.") and name.endswith("Value"):
            return v
        return _model(f.message_type, v, defaults)
    if kind in _INT64:
        return int(v)
    if kind == "TYPE_BYTES":
        return base64.b64decode(v)
    if kind == "TYPE_FLOAT":
        return _float32(v)
    return v  # enums: the name, or the number the enum lacks


def _model(desc, printed: dict, defaults: bool) -> dict:
    out = {}
    for f in desc.fields:
        if f.name not in printed:
            real_oneof = f.containing_oneof is not None and len(f.containing_oneof.fields) > 1
            if defaults and not real_oneof:
                out[f.name] = None  # a field with presence, unset
            continue
        v = printed[f.name]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            out[f.name] = {k: _scalar(f.message_type.fields_by_name["value"], x, defaults) for k, x in v.items()}
        elif f.is_repeated:
            out[f.name] = [_scalar(f, x, defaults) for x in v]
        else:
            out[f.name] = _scalar(f, v, defaults)
    return out


def model(msg, defaults: bool) -> dict:
    printed = json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=defaults)
    return _model(msg.DESCRIPTOR, printed, defaults)


INT64 = st.integers(-(2**63), 2**63 - 1)
TS = st.fixed_dictionaries({"seconds": st.integers(-62135596800, 253402300799), "nanos": st.integers(0, 999_999_999)})
FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
LEAF = st.fixed_dictionaries({}, optional={"n": INT64, "blob": st.binary(max_size=6), "at": TS})
PART = st.fixed_dictionaries({}, optional={"name": TEXT, "leaf": LEAF, "leaves": st.lists(LEAF, max_size=2)})
KIND = st.integers(0, 5)  # 4 and 5 are numbers the enum lacks: proto3 keeps them
ENVELOPES = st.fixed_dictionaries({}, optional={
    "id": st.integers(0, 2**64 - 1), "kind": KIND, "kinds": st.lists(KIND, max_size=3), "part": PART,
    "parts": st.lists(PART, max_size=2), "by_name": st.dictionaries(TEXT, PART, max_size=2),
    "kind_by_n": st.dictionaries(INT64, KIND, max_size=2),
    "text": TEXT, "leaf": LEAF, "code": st.integers(-(2**31), 2**31 - 1),
    "count": st.builds(lambda v: {"value": v}, INT64), "flag": st.builds(lambda v: {"value": v}, st.booleans()),
    "raw": st.builds(lambda v: {"value": v}, st.binary(max_size=4)),
    "weight": st.builds(lambda v: {"value": v}, FLOAT32), "times": st.lists(TS, max_size=2),
    "ratio": FLOAT32, "small": st.integers(-(2**31), 2**31 - 1),
    "took": st.fixed_dictionaries({"seconds": st.integers(0, 315_576_000_000), "nanos": st.integers(0, 999_999_999)}),
    "nothing": st.just({})})


def envelope(fields: dict):
    """The message ``fields`` describes: of the oneof ``body``, the last of its fields drawn wins."""
    msg = Envelope()
    for name, value in fields.items():
        if name in ("id", "kind", "text", "code", "ratio", "small"):
            setattr(msg, name, value)
        elif isinstance(value, list):
            getattr(msg, name).extend(value if name == "kinds" else [type(getattr(msg, name).add())(**x) for x in value])
        elif name in ("by_name", "kind_by_n"):
            for k, x in value.items():
                if name == "kind_by_n":
                    msg.kind_by_n[k] = x
                else:
                    getattr(msg, name)[k].CopyFrom(type(msg.part)(**x))
        else:
            getattr(msg, name).CopyFrom(type(getattr(msg, name))(**value))
    return msg


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ENVELOPES, min_size=1, max_size=4))
def test_any_envelope_decodes_as_json_format_reads_it(envelopes):
    serialize, with_defaults, sent_only = _envelope_registry()
    msgs = [envelope(e) for e in envelopes]
    raw = [serialize(m) for m in msgs]
    assert with_defaults.deserialize(raw) == [model(m, True) for m in msgs]
    assert sent_only.deserialize(raw) == [model(m, False) for m in msgs]


def _envelope_registry():
    """ProtobufSerializer for Envelope and two registry deserializers (including_default_values
    true and false) that have loaded its schema, from a registry that is gone since."""
    if "envelope" not in _CACHE:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.serialization import MessageField, SerializationContext

        with SchemaRegistry() as reg:
            ser = ProtobufSerializer(Envelope, SchemaRegistryClient({"url": reg.url}), {"use.deprecated.format": False})
            ctx = SerializationContext("envelopes", MessageField.VALUE)
            first = ser(Envelope(), ctx)
            ds = [ProtobufDeserializer({"registry": {"url": reg.url, "timeout": 1}, "including_default_values": d})
                  for d in (True, False)]
            for d in ds:
                d.deserialize([first])
        _CACHE["envelope"] = (lambda m: ser(m, ctx), *ds)
    return _CACHE["envelope"]

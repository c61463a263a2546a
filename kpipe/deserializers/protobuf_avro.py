"""A Protobuf message type as the equivalent Avro record schema, for ``Deserializer.schema()``.

The sinks already take column types from an Avro schema (``kpipe.formats.dataset.declared``),
so a message descriptor becomes the Avro schema that describes the dicts ``protobuf_decode``
builds: int32 -> int, int64 -> long, uint32 -> long, uint64 -> long (values past 2^63 - 1 do
not fit a signed column), float, double, boolean, string, bytes, an enum -> string, a Timestamp
-> long timestamp-micros, a wrapper -> its value or null, a message -> a nullable record,
repeated -> array, a map -> map, Struct / Value / ListValue and a message of no fields (Empty,
which Parquet could not store as a struct) -> a wide union (JSON columns).
Fields that may be missing or null (oneof members, fields with presence, and every field when
``including_default_values`` is off) are unions with null.
"""
from __future__ import annotations

from .protobuf_decode import JSON_TYPES, TIMESTAMP, WRAPPERS, repeated

__all__ = ["avro_schema"]

_SCALARS = {  # FieldDescriptor.TYPE_* names, without the prefix
    "INT32": "int", "SINT32": "int", "SFIXED32": "int", "UINT32": "long", "FIXED32": "long",
    "INT64": "long", "SINT64": "long", "SFIXED64": "long", "UINT64": "long", "FIXED64": "long",
    "FLOAT": "float", "DOUBLE": "double", "BOOL": "boolean", "STRING": "string", "BYTES": "bytes",
    "ENUM": "string",
}
_WRAPPED = {"DoubleValue": "double", "FloatValue": "float", "Int64Value": "long", "UInt64Value": "long",
            "Int32Value": "int", "UInt32Value": "long", "BoolValue": "boolean", "StringValue": "string",
            "BytesValue": "bytes"}
_JSON_UNION = ["null", "boolean", "double", "string"]  # wider than nullable: a JSON column


def _nullable(t):
    if t == "null" or (isinstance(t, list) and "null" in t):
        return t
    return ["null", *t] if isinstance(t, list) else ["null", t]


def avro_schema(desc, including_default_values: bool = True) -> dict:
    """The Avro record schema of message type ``desc`` (see the module docstring)."""
    from google.protobuf.descriptor import FieldDescriptor

    scalars = {getattr(FieldDescriptor, "TYPE_" + k): v for k, v in _SCALARS.items()}
    seen: set = set()

    def one(f):
        if f.type in (f.TYPE_MESSAGE, f.TYPE_GROUP):
            full = f.message_type.full_name
            if full == TIMESTAMP:
                return {"type": "long", "logicalType": "timestamp-micros"}
            if full in WRAPPERS:
                return ["null", _WRAPPED[f.message_type.name]]
            if full in JSON_TYPES:
                return list(_JSON_UNION)
            return record(f.message_type)
        return scalars[f.type]

    def field_type(f):
        if repeated(f):
            entry = f.message_type if f.type == f.TYPE_MESSAGE else None
            if entry is not None and entry.GetOptions().map_entry:
                t = {"type": "map", "values": one(entry.fields_by_name["value"])}
            else:
                t = {"type": "array", "items": one(f)}
            return t if including_default_values else _nullable(t)
        t = one(f)
        if f.has_presence or f.containing_oneof is not None or not including_default_values:
            t = _nullable(t)
        return t

    def record(d):
        if not d.fields:  # google.protobuf.Empty: no column format holds a struct of no fields
            return list(_JSON_UNION)
        if d.full_name in seen:  # defined already (or contains itself): by name
            return d.full_name
        seen.add(d.full_name)
        return {"type": "record", "name": d.full_name,
                "fields": [{"name": f.name, "type": field_type(f)} for f in d.fields]}

    return record(desc)

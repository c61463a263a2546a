"""Protobuf messages to plain Python values, by functions generated per message type.

``json_format.MessageToDict`` walks every field through several Python calls and formats int64
as text; a function written out once per message type (``to_dict``) reads each field by name
and builds the dict in one expression, several times faster (benchmarks/deserializers.py).

The values, keyed by the ``.proto`` field names:

- integers stay ``int`` (int64 and uint64 too), floats ``float``, bytes ``bytes``;
- an enum is its value's name (an unknown number, which proto3 keeps, stays the number);
- ``google.protobuf.Timestamp`` is a timezone-aware ``datetime`` in UTC (microseconds: Python's
  resolution; nanoseconds below one are cut, not rounded; nanos outside 0 to 999,999,999, which
  the Timestamp spec forbids, make the value a bad record);
- the wrappers (``Int64Value``, ``StringValue``...) are their value, or None when unset;
  ``Struct``, ``Value`` and ``ListValue`` are the JSON values they hold; the other well-known
  types (``Any``, ``Duration``, ``Empty``...) are plain messages;
- a repeated field is a list, a map a dict (keys as text, as in the JSON mapping);
- of a oneof, only the set field is there;
- ``including_default_values`` (the default): every other field is there, its default when
  not sent, None for an unset field that has presence (a message, ``optional``); without it,
  only the fields that were sent (or are not their default) are.
"""
from __future__ import annotations

import datetime as dt
import keyword
from typing import Any, Callable

__all__ = ["to_dict", "repeated", "WRAPPERS", "TIMESTAMP", "JSON_TYPES"]

TIMESTAMP = "google.protobuf.Timestamp"
WRAPPERS = {"google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
            "google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
            "google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue"}
JSON_TYPES = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_TD = dt.timedelta


def repeated(f) -> bool:
    """Whether field ``f`` is repeated (``is_repeated`` in protobuf 6.31+, where ``label`` went)."""
    flag = getattr(f, "is_repeated", None)
    return flag if flag is not None else f.label == f.LABEL_REPEATED


def _timestamp(ts) -> dt.datetime:
    nanos = ts.nanos
    if not 0 <= nanos < 1_000_000_000:  # timedelta would carry it into the seconds: a wrong time
        raise ValueError(f"Timestamp nanos {nanos} out of range (0 to 999,999,999)")
    return _EPOCH + _TD(0, ts.seconds, nanos // 1000)  # positional: ~10 % faster than keywords


def _json_value(m) -> Any:
    from google.protobuf import json_format

    return json_format.MessageToDict(m)


def _synthetic_oneofs(desc) -> set:
    """Names of the fields declared ``optional`` in proto3: each sits alone in a oneof that is
    no real choice."""
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.DescriptorProto()
    desc.CopyToProto(proto)
    return {f.name for f in proto.field if f.proto3_optional}


class _Builder:
    """Writes one function per message type into a shared namespace, so that a message type
    that contains itself calls its own function."""

    def __init__(self, defaults: bool):
        self.defaults = defaults
        self.ns: dict = {"_ts": _timestamp, "_json": _json_value}
        self.names: dict = {}  # message full name -> function name
        self.sources: list[str] = []

    def function(self, desc) -> str:
        name = self.names.get(desc.full_name)
        if name is None:
            name = self.names[desc.full_name] = f"_m{len(self.names)}"
            self.sources.append(self._message(desc, name))
        return name

    def _const(self, value) -> str:
        name = f"_c{len(self.ns)}"
        self.ns[name] = value
        return name

    def _one(self, f, x: str) -> str:
        """The expression converting one element ``x`` of field ``f`` (not repeated)."""
        if f.type == f.TYPE_ENUM:
            names = self._const({v.number: v.name for v in f.enum_type.values})
            return f"{names}.get({x}, {x})"
        if f.type in (f.TYPE_MESSAGE, f.TYPE_GROUP):
            full = f.message_type.full_name
            if full == TIMESTAMP:
                return f"_ts({x})"
            if full in WRAPPERS:
                return f"{x}.value"
            if full in JSON_TYPES:
                return f"_json({x})"
            return f"{self.function(f.message_type)}({x})"
        return x

    def _field(self, f, m: str) -> str:
        """The expression of field ``f``'s whole value in message ``m``."""
        get = f"getattr({m}, {f.name!r})" if keyword.iskeyword(f.name) else f"{m}.{f.name}"
        if repeated(f):
            entry = f.message_type if f.type == f.TYPE_MESSAGE else None
            if entry is not None and entry.GetOptions().map_entry:
                key_f, value_f = entry.fields_by_name["key"], entry.fields_by_name["value"]
                key = "k"
                if key_f.type == key_f.TYPE_BOOL:
                    key = "('true' if k else 'false')"
                elif key_f.type != key_f.TYPE_STRING:
                    key = "str(k)"
                value = self._one(value_f, "v")
                if key == "k" and value == "v":
                    return f"dict({get})"
                return f"{{{key}: {value} for k, v in {get}.items()}}"
            one = self._one(f, "x")
            return f"list({get})" if one == "x" else f"[{one} for x in {get}]"
        return self._one(f, get)

    def _message(self, desc, name: str) -> str:
        optional = _synthetic_oneofs(desc)
        lines = [f"def {name}(m):", "    d = {}"]
        always = []  # (name, expression) set in the dict literal
        for f in desc.fields:
            oneof = f.containing_oneof
            if oneof is not None and f.name not in optional:
                continue  # a real oneof: below
            value = self._field(f, "m")
            if f.has_presence:
                test = f"m.HasField({f.name!r})"
                if self.defaults:
                    always.append((f.name, f"({value} if {test} else None)"))
                else:
                    lines.append(f"    if {test}: d[{f.name!r}] = {value}")
            elif self.defaults:
                always.append((f.name, value))
            else:
                raw = self._field_raw(f)
                lines.append(f"    if {raw}: d[{f.name!r}] = {value}")
        if always:
            lines[1] = "    d = {" + ", ".join(f"{k!r}: {v}" for k, v in always) + "}"
        for oneof in desc.oneofs:
            members = [f for f in oneof.fields if f.name not in optional]
            if not members:
                continue
            lines.append(f"    w = m.WhichOneof({oneof.name!r})")
            for i, f in enumerate(members):
                lines.append(f"    {'if' if i == 0 else 'elif'} w == {f.name!r}: d[{f.name!r}] = {self._field(f, 'm')}")
        lines.append("    return d")
        if len(lines) == 3 and always:  # no conditional field: one expression
            lines[1:] = ["    return {" + lines[1][len("    d = {"):]]
        return "\n".join(lines)

    @staticmethod
    def _field_raw(f) -> str:
        return f"getattr(m, {f.name!r})" if keyword.iskeyword(f.name) else f"m.{f.name}"


def to_dict(desc, including_default_values: bool = True) -> Callable[[Any], dict]:
    """A function turning a message of type ``desc`` into a dict (see the module docstring)."""
    builder = _Builder(including_default_values)
    top = builder.function(desc)
    # The source is built only from descriptor names, which protoc restricts to identifiers,
    # and from repr() of them; values live in the namespace, never in the text.
    exec(compile("\n\n".join(builder.sources), f"<protobuf {desc.full_name}>", "exec"), builder.ns)  # noqa: S102
    return builder.ns[top]

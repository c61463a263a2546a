"""``protobuf``: Protobuf values, with no generated code, in Confluent wire format or plain.

- ``registry: {url: ...}``: every value is Confluent's Protobuf wire format: byte 0, a 4-byte
  big-endian schema id, the message indexes (``protobuf_wire``), then the message. The schema
  and its references are fetched by id (``protobuf_schema.RegistrySchemas``), once per id.
- ``descriptor_set: orders.pb`` + ``message: shop.v1.Order``: every value is one message, no
  header; the descriptor set is what ``protoc --descriptor_set_out --include_imports`` writes.
- ``proto: orders.proto`` + ``message``: the same, compiled at load time by protoc (grpcio-tools).

Message classes are built at run time (``message_factory.GetMessageClass``) and cached by
(schema id, message indexes); each type's dict builder is generated once (``protobuf_decode``).
``schema()`` is the Avro record schema equivalent to the message type (``protobuf_avro``), which
gives the sinks their column types. The protobuf package is imported only when a pipeline uses
this deserializer, so ``kpipe validate`` never loads it.
"""
from __future__ import annotations

import logging
import urllib.parse
from typing import Any, Mapping

from kpipe.api import BadRecordError, Deserializer, DeserializerPlugin, FatalError

from .registry import REGISTRY_SCHEMA, NotFound, SchemaCache, client_from_config, split_header

__all__ = ["ProtobufDeserializer", "protobuf_plugin", "CONFIG_SCHEMA"]

log = logging.getLogger("kpipe.protobuf")

CONFIG_SCHEMA = {
    "type": "object",
    "description": "Protobuf values, decoded with no generated code: Confluent wire format with the schema "
                   "fetched by id from a Schema Registry (registry), or plain messages of one type from a "
                   "descriptor set (descriptor_set) or a .proto file (proto).",
    "properties": {
        "registry": {**REGISTRY_SCHEMA,
                     "description": "Confluent wire format (magic byte 0, 4-byte schema id, message indexes, "
                                    "then the message); the schema and its references come from "
                                    "GET {url}/schemas/ids/{id}, fetched once per id."},
        "descriptor_set": {"type": "string", "minLength": 1, "x-path": True,
                           "description": "Path of a FileDescriptorSet (protoc --descriptor_set_out=FILE "
                                          "--include_imports); every value is one plain message of type "
                                          "'message'. Relative to the spec file's directory."},
        "proto": {"type": "string", "minLength": 1, "x-path": True,
                  "description": "Path of a .proto file, compiled when the pipeline starts (needs "
                                 "kpipe[protobuf]). Every value is one plain message of type 'message'. "
                                 "Relative to the spec file's directory."},
        "import_path": {"type": "string", "minLength": 1, "x-path": "directory",
                        "description": "With proto: the directory its imports are relative to (protoc's -I); "
                                       "default: the .proto file's own directory. google/protobuf/*.proto "
                                       "are always found."},
        "message": {"type": "string", "pattern": r"^\.?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
                    "x-expected": "a message's full name, such as shop.v1.Order",
                    "description": "Full name of the message type of every value (with descriptor_set or proto; "
                                   "with a registry the wire header's message indexes name it)."},
        "including_default_values": {
            "type": "boolean", "default": True,
            "description": "Every field is in the decoded dict, its default when not sent (null for an unset "
                           "message or optional field), so columns stay stable; false: only the fields sent."},
    },
    "oneOf": [{"required": ["registry"]}, {"required": ["descriptor_set"]}, {"required": ["proto"]}],
    "dependentRequired": {"descriptor_set": ["message"], "proto": ["message"], "import_path": ["proto"]},
    "dependentSchemas": {"registry": {"properties": {"message": {
        "not": {}, "x-expected": "no 'message' with a registry (the wire header's message indexes name it)"}}}},
    "additionalProperties": False,
}


class _Type:
    """One message type: its class, its dict builder, and (made when asked) its Avro schema."""

    __slots__ = ("desc", "parse", "to_dict", "defaults", "_avro", "pool")

    def __init__(self, desc, defaults: bool, pool):
        from google.protobuf import message_factory

        from .protobuf_decode import to_dict

        self.desc, self.defaults, self.pool = desc, defaults, pool
        self.parse = message_factory.GetMessageClass(desc).FromString
        self.to_dict = to_dict(desc, defaults)
        self._avro = None

    def avro(self) -> dict:
        if self._avro is None:
            from .protobuf_avro import avro_schema

            self._avro = avro_schema(self.desc, self.defaults)
        return self._avro


class ProtobufDeserializer(Deserializer):
    """Decodes Protobuf messages to dicts keyed by the ``.proto`` field names (see
    ``protobuf_decode`` for the values). ``None`` (a tombstone, a missing key) stays ``None``.
    """

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        try:
            import google.protobuf  # noqa: F401
        except ImportError:
            raise FatalError('deserializer protobuf needs the protobuf package: run: pip install "kpipe[protobuf]"') from None
        from .protobuf_schema import (ProtocError, RegistrySchemas, compile_file, find_message, pool_of,
                                      read_descriptor_set)

        self._defaults = bool(config.get("including_default_values", True))
        self._latest: _Type | None = None
        self._types: dict[tuple, _Type] = {}  # (schema id, message indexes) -> its type
        self.registry = None
        sources = [k for k in ("registry", "descriptor_set", "proto") if config.get(k)]
        if len(sources) != 1:
            raise FatalError("protobuf: set exactly one of 'registry', 'descriptor_set' or 'proto'")
        if config.get("registry"):
            if config.get("message"):
                raise FatalError("protobuf: 'message' goes with descriptor_set or proto; with a registry "
                                 "the wire header's message indexes name the message")
            self.registry = client_from_config(config["registry"], "protobuf")
            self._schemas = SchemaCache(RegistrySchemas(self.registry).load, "protobuf",
                                        self.registry.display_url)
            return
        if not config.get("message"):
            raise FatalError(f"protobuf: {sources[0]} needs 'message', the full name of the values' type")
        path = config[sources[0]]
        try:
            if sources[0] == "descriptor_set":
                with open(path, "rb") as f:
                    files = read_descriptor_set(f.read(), path)
            else:
                files = compile_file(path, config.get("import_path"))
            pool = pool_of(files)
        except OSError as exc:
            raise FatalError(f"protobuf {sources[0]}: cannot read {path}: {exc.strerror or exc}") from None
        except (ProtocError, ValueError, TypeError) as exc:
            raise FatalError(f"protobuf {sources[0]}: {path}: {exc}") from None
        desc = find_message(pool, config["message"], path)
        self._latest = _Type(desc, self._defaults, pool)

    def schema(self):
        """The Avro record schema equivalent to the values' message type (with a registry: that of
        the most recent type decoded; None before the first value)."""
        return self._latest.avro() if self._latest is not None else None

    def deserialize(self, raw):
        if self.registry is None:
            return self._plain(raw)
        return self._wire(raw)

    def _plain(self, raw):
        t = self._latest
        parse, to_dict = t.parse, t.to_dict
        out: list = []
        append = out.append
        try:
            for v in raw:
                append(None if v is None else to_dict(parse(v)))
        except Exception as exc:  # DecodeError, or a value no Python type holds (a Timestamp past year 9999)
            raise _bad(exc, len(out), raw[len(out)], t.desc.full_name) from None
        return out

    def _wire(self, raw):
        from .protobuf_wire import WireError, read_indexes

        out: list = []
        append = out.append
        head = None  # the previous value's header: a value that starts with it needs no lookups
        t = parse = to_dict = None
        start = sid = 0
        for i, v in enumerate(raw):
            if v is None:
                append(None)
                continue
            if head is None or not v.startswith(head):
                sid = split_header(v, i)
                try:
                    indexes, start = read_indexes(v, 5)
                except WireError as exc:
                    raise BadRecordError(f"invalid Protobuf wire header (schema id {sid}): {exc}",
                                         index=i) from None
                t = self._types.get((sid, indexes)) or self._type(sid, indexes, i)
                parse, to_dict = t.parse, t.to_dict
                head = v[:start]
                self._latest = t
            try:  # only the message itself: a registry failure is never this value's fault
                append(to_dict(parse(v[start:])))
            except Exception as exc:  # DecodeError, or a value no Python type holds
                raise _bad(exc, i, v[start:], t.desc.full_name, sid) from None
        return out

    def _type(self, sid: int, indexes: tuple, index: int) -> _Type:
        from .protobuf_schema import message_at

        pool, file_desc = self._schemas.get(sid, index)
        try:
            desc = message_at(file_desc, indexes)
        except IndexError as exc:
            raise BadRecordError(f"schema id {sid} from {self.registry.display_url}: {exc}", index=index) from None
        t = self._types[(sid, indexes)] = _Type(desc, self._defaults, pool)
        log.info("protobuf: schema id %d, message indexes %s: %s", sid, list(indexes), desc.full_name)
        return t

    def encode_json(self, value: Any, topic: str) -> bytes:
        """The raw value ``value`` (a message in protobuf's JSON mapping, parsed by
        ``json_format.ParseDict``) stands for, as this deserializer reads it: a plain message, or
        with a registry the wire format of the latest schema under ``{topic}-value`` (the
        serializers' default subject), first message. For ``kpipe test`` cases."""
        from google.protobuf import json_format

        if self.registry is not None:
            subject = f"{topic}-value"
            try:
                doc = self.registry.get(f"/subjects/{urllib.parse.quote(subject, safe='')}/versions/latest")
                sid = int(doc["id"])
                t = self._types.get((sid, (0,))) or self._type(sid, (0,), 0)
            except (NotFound, BadRecordError, KeyError, TypeError, ValueError) as exc:
                raise FatalError(f"input.json: no usable Protobuf schema under subject {subject!r} in "
                                 f"{self.registry.display_url}: {exc}") from None
            header = b"\x00" + sid.to_bytes(4, "big") + b"\x00"
        else:
            t, header = self._latest, b""
        try:
            msg = json_format.ParseDict(value, t.parse(b""))
        except json_format.ParseError as exc:
            raise FatalError(f"input.json is not a {t.desc.full_name} in protobuf's JSON mapping: {exc}") from None
        return header + msg.SerializeToString()


def _bad(exc: Exception, index: int, payload: bytes, name: str, sid: int | None = None) -> BadRecordError:
    what = f"Protobuf value of {len(payload)} bytes" + (f" (schema id {sid})" if sid is not None else "")
    detail = str(exc) or type(exc).__name__
    return BadRecordError(f"invalid {what}: not a {name}: {type(exc).__name__}: {detail}", index=index)


protobuf_plugin = DeserializerPlugin(
    "protobuf", CONFIG_SCHEMA, ProtobufDeserializer,
    "Protobuf values: Confluent wire format via a Schema Registry, or plain messages from a descriptor set "
    "or .proto (no generated code)", extra="protobuf")

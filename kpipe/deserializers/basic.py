"""``json``, ``string`` and ``bytes``: the deserializers that need no schema (``json`` can read
Confluent's JSON Schema wire format too, with ``registry``: see ``json_registry``)."""
from __future__ import annotations

from kpipe.api import BadRecordError, Deserializer, DeserializerPlugin

from .registry import REGISTRY_SCHEMA

__all__ = ["JsonDeserializer", "StringDeserializer", "BytesDeserializer",
           "json_plugin", "string_plugin", "bytes_plugin"]

_NO_OPTIONS = {"type": "object", "properties": {}, "additionalProperties": False}
_JSON_OPTIONS = {
    "type": "object",
    "properties": {"registry": REGISTRY_SCHEMA},
    "additionalProperties": False,
}


class JsonDeserializer(Deserializer):
    """UTF-8 JSON via msgspec. A tombstone (null value) becomes ``None``.

    msgspec, not orjson: ~20% less time per ~100-byte value (benchmarks/README.md,
    "Deserializers"), and integers past 64 bits stay exact where orjson makes them floats.
    Imported here, not at module level, so that listing plugins does not pay for it.
    """

    def __init__(self, config):
        super().__init__(config)
        import msgspec

        self._decode = msgspec.json.Decoder().decode
        # ValidationError (a number past float range) is a DecodeError; bad UTF-8 and deep nesting are not.
        self._errors = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

    def deserialize(self, raw):
        decode, errors = self._decode, self._errors
        try:
            # The common case: one C-level pass, no per-record try block.
            return [decode(v) if v is not None else None for v in raw]
        except errors:
            pass
        out = []
        for i, v in enumerate(raw):
            try:
                out.append(decode(v) if v is not None else None)
            except errors as exc:
                raise BadRecordError(f"invalid JSON: {type(exc).__name__}: {exc}", index=i) from None
        return out


def _json(config) -> Deserializer:
    """Plain JSON, or with ``registry`` Confluent's JSON Schema wire format."""
    if config.get("registry"):
        from .json_registry import JsonRegistryDeserializer

        return JsonRegistryDeserializer(config)
    return JsonDeserializer(config)


class StringDeserializer(Deserializer):
    """UTF-8 text."""

    def deserialize(self, raw):
        try:
            return list(map(bytes.decode, raw))  # one C-level pass when nothing is null or bad
        except (TypeError, UnicodeDecodeError):
            pass
        out = []
        for i, v in enumerate(raw):
            try:
                out.append(v.decode() if v is not None else None)
            except UnicodeDecodeError as exc:
                raise BadRecordError(f"invalid UTF-8: {exc}", index=i) from None
        return out


class BytesDeserializer(Deserializer):
    """The raw bytes, untouched."""

    def deserialize(self, raw):
        return list(raw)


json_plugin = DeserializerPlugin("json", _JSON_OPTIONS, _json,
                                 "UTF-8 JSON values (msgspec); with registry, Confluent's JSON Schema wire format")
string_plugin = DeserializerPlugin("string", _NO_OPTIONS, StringDeserializer, "UTF-8 text values")
bytes_plugin = DeserializerPlugin("bytes", _NO_OPTIONS, BytesDeserializer, "raw bytes, untouched")

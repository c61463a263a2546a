"""The built-in transforms: their descriptors, cheap to import (no factory is loaded here).

Each descriptor is registered through the ``kpipe.transforms`` entry-point group in
``pyproject.toml``, the same door a third-party transform uses. In a spec, ``- NAME: CONFIG``
runs ``registry().get("transform", NAME).create(CONFIG)`` once; ``CONFIG`` has been checked
against the descriptor's ``config_schema`` first. See ``docs/transforms.md``.
"""
from __future__ import annotations

from kpipe.api import TransformPlugin

__all__ = [
    "ConfigError", "CAST_TYPES", "HASH_ALGORITHMS", "TIME_FORMATS",
    "select_plugin", "drop_plugin", "rename_plugin", "set_plugin", "cast_plugin",
    "flatten_plugin", "filter_plugin", "parse_timestamp_plugin", "mask_plugin",
    "hash_plugin", "python_plugin",
]


class ConfigError(ValueError):
    """A transform's CONFIG is unusable; raised by ``create``, never by ``apply``.

    ``path`` leads from CONFIG to the offending value (``("total",)`` for ``set: {total: ...}``;
    ``()`` for CONFIG itself). ``offset`` is the 0-based character in that string value where
    the problem is, when known (an expression's syntax error), so a spec loader can point at
    ``file:line:col``.
    """

    def __init__(self, message: str, path: tuple = (), offset: int | None = None):
        super().__init__(message)
        self.path = tuple(path)
        self.offset = offset


CAST_TYPES = ["int", "float", "string", "bool",
              # Kafka Connect's Cast names, for people bringing their SMT configs along
              "int8", "int16", "int32", "int64", "float32", "float64", "boolean"]
HASH_ALGORITHMS = ["sha256", "sha512", "sha384", "sha224", "sha1", "md5", "blake2b", "blake2s",
                   "sha3_256", "sha3_512"]
TIME_FORMATS = ["iso8601", "epoch_s", "epoch_ms", "epoch_us"]

_FIELD = {"type": "string", "minLength": 1, "description": "a field; dots reach into nested objects (a.b.c)"}
_FIELDS = {"type": "array", "items": _FIELD, "minItems": 1, "uniqueItems": True}
_EXPR = {"type": "string", "minLength": 1, "description": "a CEL expression over the record"}
_SCALAR = {"type": ["string", "number", "boolean", "null"]}

_CEL = "cel"  # the extra that installs the expression language


def _plugin(name: str, schema: dict, factory: str, description: str, extra: str = "") -> TransformPlugin:
    return TransformPlugin(name, schema, f"kpipe.transforms.{factory}", description, extra)


select_plugin = _plugin(
    "select", _FIELDS, "fields:Select",
    "keep only these fields (Kafka Connect ReplaceField include)")
drop_plugin = _plugin(
    "drop", _FIELDS, "fields:Drop",
    "remove these fields (Kafka Connect ReplaceField exclude)")
rename_plugin = _plugin(
    "rename", {"type": "object", "minProperties": 1, "additionalProperties": _FIELD,
               "propertyNames": _FIELD},
    "fields:Rename", "rename fields, old: new (Kafka Connect ReplaceField renames)")
set_plugin = _plugin(
    "set", {"type": "object", "minProperties": 1, "additionalProperties": _EXPR,
            "propertyNames": _FIELD},
    "expr:Set", "set fields from CEL expressions (Kafka Connect InsertField, and more)", _CEL)
cast_plugin = _plugin(
    "cast", {"type": "object", "minProperties": 1, "additionalProperties": {"enum": CAST_TYPES},
             "propertyNames": _FIELD},
    "fields:Cast", "convert field types (Kafka Connect Cast)")
flatten_plugin = _plugin(
    "flatten", {"type": ["object", "null"], "additionalProperties": False, "properties": {
        "separator": {"type": "string", "minLength": 1, "default": "_"},
        "arrays": {"enum": ["keep", "index"], "default": "keep",
                   "description": "index: a list under k becomes k_0, k_1, ..."},
    }},
    "fields:Flatten", "nested objects to top-level keys (Kafka Connect Flatten)")
filter_plugin = _plugin(
    "filter", _EXPR, "expr:Filter",
    "keep the records a CEL expression is true for (Kafka Connect Filter with a predicate)", _CEL)
parse_timestamp_plugin = _plugin(
    "parse_timestamp", {"type": "object", "required": ["field"], "additionalProperties": False,
                        "properties": {
        "field": _FIELD,
        "format": {"type": "string", "minLength": 1, "default": "iso8601",
                   "description": "iso8601 | epoch_s | epoch_ms | epoch_us | a strptime pattern"},
        "to": {"type": "string", "minLength": 1, "default": "iso8601",
               "description": "iso8601 | epoch_s | epoch_ms | epoch_us | datetime | a strftime pattern"},
        "target": {**_FIELD, "description": "write here instead of replacing the field"},
        "timezone": {"type": "string", "minLength": 1, "default": "UTC",
                     "description": "the zone of input without an offset, and of strftime output"},
    }},
    "timestamps:ParseTimestamp", "parse and convert a timestamp field (Kafka Connect TimestampConverter)")
mask_plugin = _plugin(
    "mask", {"oneOf": [
        _FIELDS,
        {"type": "object", "required": ["fields"], "additionalProperties": False, "properties": {
            "fields": _FIELDS, "replacement": {**_SCALAR, "default": "****"}}},
    ]},
    "fields:Mask", "replace field values with a fixed mask (Kafka Connect MaskField)")
hash_plugin = _plugin(
    "hash", {"type": "object", "required": ["fields"], "additionalProperties": False, "properties": {
        "fields": _FIELDS,
        "algorithm": {"enum": HASH_ALGORITHMS, "default": "sha256"},
        "salt": {"type": "string", "description": "with a salt, the digest is an HMAC keyed with it"},
    }},
    "fields:Hash", "replace field values with their hex digest (keyed with a salt: HMAC)")
_FUNCTION = {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
             "description": "package.module:function"}
python_plugin = _plugin(
    "python", {"oneOf": [
        _FUNCTION,
        {"type": "object", "required": ["function"], "additionalProperties": False, "properties": {
            "function": _FUNCTION,
            "batch": {"type": "boolean", "default": False,
                      "description": "fn(values, meta) -> list, like Transform.apply"}}},
    ]},
    "python:PythonTransform", "your own function, per record or per batch")


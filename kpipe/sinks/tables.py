"""Config schema fragments the table sinks (delta, iceberg) share, so their ``mode``, ``key``,
``columns`` and ``evolve`` keys validate and read alike; each sink words only what differs."""
from __future__ import annotations

from kpipe.formats.schema import FORMAT_PROPERTIES

__all__ = ["mode_property", "KEY_PROPERTY", "COLUMNS_PROPERTY", "evolve_property", "UPSERT_NEEDS_KEY"]

KEY_PROPERTY = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "uniqueItems": True,
                "description": "Key columns; required for upsert."}

COLUMNS_PROPERTY = FORMAT_PROPERTIES["columns"] | {
    "description": "Declared column types, name: type (the SQL sinks' names). The deserializer's Avro schema "
                   "and the spec's JSON Schema come first; other fields are inferred from the first batch "
                   "that has them. A value that does not fit its column is a bad record."}

UPSERT_NEEDS_KEY = {"if": {"properties": {"mode": {"const": "upsert"}}, "required": ["mode"]},
                    "then": {"required": ["key"]}}


def mode_property(upsert: str) -> dict:
    """``mode``: append or upsert; ``upsert`` says how this table format keeps one row per key."""
    return {"enum": ["append", "upsert"], "default": "append",
            "description": f"append adds every record; upsert {upsert}"}


def evolve_property(added: str) -> dict:
    """``evolve``: what a record field with no column does; ``added`` names the column it adds."""
    return {"enum": ["add_columns", "fail"], "default": "add_columns",
            "description": f"A record field with no column: add {added}, or fail. Columns are never dropped "
                           "and their types never changed."}

"""What the table sinks (delta, iceberg) share: config schema fragments, so their ``mode``,
``key``, ``columns`` and ``evolve`` keys validate and read alike (each sink words only what
differs), and ``records_table``, a batch's records as an Arrow table of the columns such a table
can hold."""
from __future__ import annotations

from kpipe.formats.base import EncodeError
from kpipe.formats.schema import FORMAT_PROPERTIES

__all__ = ["mode_property", "KEY_PROPERTY", "COLUMNS_PROPERTY", "evolve_property", "UPSERT_NEEDS_KEY",
           "untyped", "records_table"]

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


def untyped(t) -> bool:
    """``t`` has a part no value has typed yet: ``null``, a list of it, a struct with no fields or
    with such a field. Delta and Iceberg have no null type, so the column waits (it is left out of
    the table) until a value gives every part a type."""
    if isinstance(t, dict):
        if "struct" in t:
            return not t["struct"] or any(map(untyped, t["struct"].values()))
        return untyped(t["list"])
    return t == "null"


def _empty(v) -> bool:
    """``v`` holds no value a type could come from: null, or lists and objects of only those."""
    if isinstance(v, list):
        return all(map(_empty, v))
    if isinstance(v, dict):
        return all(map(_empty, v.values()))
    return v is None


def records_table(pa, schema: dict, values: list, fmt: str):
    """``values`` as an Arrow table of ``schema``'s typed columns. An untyped column is left out,
    so its values read back null; they must be null or empty (``[]``, ``[null]``, ``{}``), else
    ``EncodeError(index)`` names the record, as do records that do not fit a typed column."""
    from kpipe.formats.parquet import typed_table

    typed = {k: t for k, t in schema.items() if not untyped(t)}
    if len(typed) == len(schema):
        return typed_table(pa, typed, values)
    left = schema.keys() - typed.keys()
    for i, v in enumerate(values):
        if isinstance(v, dict) and not all(_empty(v.get(k)) for k in left):
            raise EncodeError(f"a value no {fmt} column type holds", i)
    return typed_table(pa, typed, [{k: x for k, x in v.items() if k in typed} if isinstance(v, dict) else v
                                   for v in values])

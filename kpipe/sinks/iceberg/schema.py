"""An Iceberg table's columns as dataset types (``kpipe.formats.dataset``), the columns a write
needs, and a batch's records as an Arrow table of exactly those types.

The table's own types win for its columns (they never change: a value that does not fit is a
bad record); declared types (Avro, JSON Schema, ``columns:``) name the columns it lacks; the
rest is inferred from the records and added as optional columns."""
from __future__ import annotations

import uuid

from kpipe.formats.base import EncodeError
from kpipe.formats.dataset import declared, widen
from kpipe.formats.arrowtypes import arrow_type, dataset_schema
from kpipe.sinks import tables

__all__ = ["table_types", "write_types", "uuid_columns", "arrow_schema", "records_table", "EncodeError"]


def table_types(pa, iceberg_schema) -> dict:
    """The table's columns as dataset types; a column of Iceberg's ``uuid`` type is ``uuid``."""
    from pyiceberg.types import UUIDType

    out = dataset_schema(pa, iceberg_schema.as_arrow())
    for f in iceberg_schema.fields:
        if isinstance(f.field_type, UUIDType):
            out[f.name] = "uuid"
    return out


def write_types(have: dict, value_schema, columns: dict, values: list) -> dict:
    """The columns to write ``values`` with: the table's as they are, then declared, then inferred.
    A declared ``uuid`` or ``json`` over a string column keeps the column and converts the
    value (canonical text), as in a table written before kpipe stored Iceberg uuids."""
    out = dict(have)
    for name, t in declared(value_schema, columns).items():
        if name not in out or (out[name] == "text" and t in ("uuid", "json")):
            out[name] = t
    out, _ = widen(out, values, frozenset(out))  # the table's and the declared types are fixed
    return out


def uuid_columns(have: dict, types: dict, key: list) -> set:
    """The top-level columns stored as Iceberg ``uuid`` (16 bytes): typed ``uuid``, new or
    already ``uuid`` in the table. Not a key column: pyiceberg's copy-on-write delete filters
    with Arrow's ``equal``, which has no kernel for the uuid extension type, so a key stays text.
    Nested uuids stay text too (Arrow's uuid type inside a struct or list is left out for now)."""
    return {k for k, t in types.items() if t == "uuid" and have.get(k, "uuid") == "uuid" and k not in key}


def arrow_schema(pa, types: dict, uuids: set):
    """The Arrow schema a table is created or evolved with: ``uuids`` as Arrow's uuid type."""
    return pa.schema([pa.field(k, pa.uuid() if k in uuids else arrow_type(pa, t)) for k, t in types.items()
                      if not tables.untyped(t)])


def records_table(pa, types: dict, values: list, uuids: set = frozenset()):
    """``values`` as an Arrow table of ``types`` (``kpipe.sinks.tables.records_table``), the
    ``uuids`` columns as Arrow's uuid type (their canonical text turned into 16 bytes)."""
    data = tables.records_table(pa, types, values, "Iceberg")
    for name in uuids & set(data.column_names):
        text = data.column(name).to_pylist()
        col = pa.array([None if v is None else uuid.UUID(v).bytes for v in text], pa.uuid())
        data = data.set_column(data.column_names.index(name), name, col)
    return data

"""An Iceberg table's columns as dataset types (``kpipe.formats.dataset``), the columns a write
needs, and a batch's records as an Arrow table of exactly those types.

The table's own types win for its columns (they never change: a value that does not fit is a
bad record); declared types (Avro, JSON Schema, ``columns:``) name the columns it lacks; the
rest is inferred from the records and added as optional columns."""
from __future__ import annotations

from kpipe.formats.base import EncodeError
from kpipe.formats.dataset import declared, widen
from kpipe.formats.arrowtypes import dataset_schema
from kpipe.sinks import tables

__all__ = ["table_types", "write_types", "records_table", "EncodeError"]

def table_types(pa, iceberg_schema) -> dict:
    return dataset_schema(pa, iceberg_schema.as_arrow())


def write_types(have: dict, value_schema, columns: dict, values: list) -> dict:
    """The columns to write ``values`` with: the table's as they are, then declared, then inferred."""
    out = dict(have)
    for name, t in declared(value_schema, columns).items():
        out.setdefault(name, t)
    out, _ = widen(out, values, frozenset(out))  # the table's and the declared types are fixed
    return out


def records_table(pa, types: dict, values: list):
    """``values`` as an Arrow table of ``types`` (``kpipe.sinks.tables.records_table``)."""
    return tables.records_table(pa, types, values, "Iceberg")

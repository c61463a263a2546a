"""A Delta table's schema as a dataset schema (``kpipe.formats.dataset``), and a batch's records
as an Arrow table of exactly those types.

The table's own schema wins for its columns: their types never change, so a value that does not
fit is a bad record. Declared types (Avro, JSON Schema, ``columns:``) name the columns the table
does not have yet; everything else is inferred from the records (``widen``) and added as a
nullable column.
"""
from __future__ import annotations

from kpipe.formats.base import EncodeError
from kpipe.formats.dataset import declared, widen
from kpipe.sinks import tables

__all__ = ["write_schema", "records_table", "EncodeError"]


def write_schema(pa, have: dict, value_schema, columns: dict, values: list) -> dict:
    """The columns to write ``values`` with: the table's (``have``) as they are, declared types for
    the others, then inferred ones."""
    from kpipe.formats.arrowtypes import arrow_type

    out = dict(have)
    for name, t in declared(value_schema, columns).items():
        if name not in out:
            out[name] = t
        elif arrow_type(pa, t) == arrow_type(pa, out[name]):
            out[name] = t  # json or uuid over a string column: the declared rule converts the value
    out, _ = widen(out, values, frozenset(out))
    return out


def records_table(pa, schema: dict, values: list):
    """``values`` as an Arrow table of ``schema``'s types (``kpipe.sinks.tables.records_table``)."""
    return tables.records_table(pa, schema, values, "Delta")

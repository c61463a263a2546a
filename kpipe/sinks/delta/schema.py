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
from kpipe.formats.parquet import typed_table

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
    """``values`` as an Arrow table of ``schema``'s types; columns no value has typed yet (only
    nulls) are left out, as Delta has no null type. ``EncodeError(index)`` names a record that
    does not fit."""
    typed = {k: t for k, t in schema.items() if not _untyped(t)}
    for i, v in enumerate(values):  # a field whose column is left out must be null in every record
        if isinstance(v, dict) and any(v.get(k) is not None for k in schema.keys() - typed.keys()):
            raise EncodeError("a value no Delta column type holds", i)
    return typed_table(pa, typed, [{k: x for k, x in v.items() if k in typed} if isinstance(v, dict) else v
                                   for v in values] if len(typed) != len(schema) else values)


def _untyped(t) -> bool:
    if isinstance(t, dict):
        if "struct" in t:
            return not t["struct"] or any(map(_untyped, t["struct"].values()))
        return _untyped(t["list"])
    return t == "null"

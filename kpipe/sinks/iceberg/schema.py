"""An Iceberg table's columns as dataset types (``kpipe.formats.dataset``), the columns a write
needs, and a batch's records as an Arrow table of exactly those types.

The table's own types win for its columns (they never change: a value that does not fit is a
bad record); declared types (Avro, JSON Schema, ``columns:``) name the columns it lacks; the
rest is inferred from the records and added as optional columns."""
from __future__ import annotations

from kpipe.formats.base import EncodeError
from kpipe.formats.dataset import declared, is_untyped, widen
from kpipe.formats.parquet import _typed_table

__all__ = ["table_types", "write_types", "records_table", "EncodeError"]

_SIMPLE = (("is_int64", "bigint"), ("is_int32", "integer"), ("is_int16", "smallint"), ("is_int8", "smallint"),
           ("is_float64", "double"), ("is_float32", "real"), ("is_boolean", "boolean"), ("is_date32", "date"),
           ("is_time64", "time"), ("is_binary", "bytes"), ("is_large_binary", "bytes"),
           ("is_fixed_size_binary", "bytes"))


def _type(pa, t):
    if pa.types.is_struct(t):
        return {"struct": {t.field(i).name: _type(pa, t.field(i).type) for i in range(t.num_fields)}}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"list": _type(pa, t.value_type)}
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    for test, name in _SIMPLE:
        if getattr(pa.types, test)(t):
            return name
    return "text"  # string, large_string; Iceberg's uuid reads back as text too


def table_types(pa, iceberg_schema) -> dict:
    return {f.name: _type(pa, f.type) for f in iceberg_schema.as_arrow()}


def write_types(have: dict, value_schema, columns: dict, values: list) -> dict:
    """The columns to write ``values`` with: the table's as they are, then declared, then inferred."""
    out = dict(have)
    for name, t in declared(value_schema, columns).items():
        out.setdefault(name, t)
    out, _ = widen(out, values, frozenset(out))  # the table's and the declared types are fixed
    return out


def records_table(pa, types: dict, values: list):
    """``values`` as an Arrow table of ``types``; a column no value has typed yet (only nulls) is
    left out, as Iceberg has no null type. ``EncodeError(index)`` names a record that does not fit."""
    typed = {k: t for k, t in types.items() if not is_untyped(t)}
    untyped = types.keys() - typed.keys()
    if untyped:
        for i, v in enumerate(values):
            if any(v.get(k) is not None for k in untyped):
                raise EncodeError("a value no Iceberg column type holds", i)
        values = [{k: x for k, x in v.items() if k in typed} for v in values]
    return _typed_table(pa, typed, values)

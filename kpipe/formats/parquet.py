"""parquet: written by pyarrow (the ``parquet`` extra), in row groups as they fill.

Columns are the union of the records' top-level fields in first-seen order. Each column's type
is what pyarrow infers from all its values in the object (ints, floats, strings, bytes, nested
objects as structs, lists as lists); a column whose values pyarrow cannot put in one type (say
numbers and strings) is written as strings, with non-string values as JSON text. A column that
is null everywhere is a nullable string column, and so is a column whose type would hold an
object with no fields (``{}``), which Parquet cannot write: its values land as JSON text. Text is
``jsontext.dumps``: exact (integers past 64 bits, decimals), Infinity and NaN refused. A record
nested deeper than readers open (``MAX_SCHEMA_DEPTH``) is refused (``EncodeError``), never
written as a file no reader opens. A record that is not an object becomes a single ``value``
column.

Given a dataset schema (``schema``, see ``kpipe.formats.dataset``), the file carries exactly its
Arrow types instead (``arrowtypes``): every typed column, in the schema's order, whether or not
the file's records have a value for it; a value that does not fit its column is a bad record.
Columns with no type yet (only nulls so far) are left out.
"""
from __future__ import annotations

from kpipe.api import FatalError

from .base import EncodeError, Writer, as_row, check_columns
from .jsontext import dumps

__all__ = ["ParquetWriter", "CODECS", "require_pyarrow", "typed_table"]

CODECS = {"none": "NONE", "snappy": "SNAPPY", "gzip": "GZIP", "zstd": "ZSTD"}
ROW_GROUP_ROWS = 128 * 1024
MAX_SCHEMA_DEPTH = 100
"""The deepest schema (root included) Parquet readers open: Arrow's reader refuses deeper ones
("schema too deeply nested"), which would make the whole file unreadable."""


def require_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise FatalError('format parquet needs pyarrow; run: pip install "kpipe[parquet]"') from None
    return pyarrow


def _text(value):
    if value is None or isinstance(value, str):
        return value
    return dumps(value).decode()  # exact JSON text, or NotJson (a ValueError)


class ParquetWriter(Writer):
    def __init__(self, out, compression: str = "snappy", level: int | None = None,
                 row_group_rows: int = ROW_GROUP_ROWS, schema: dict | None = None):
        if compression not in CODECS:
            raise ValueError(f"parquet cannot use compression {compression!r}; use one of {', '.join(CODECS)}")
        self.out = out
        self.codec = CODECS[compression]
        self.level = level
        self.row_group_rows = row_group_rows
        self.writer = None
        self.schema = schema

    def _table(self, values: list):
        pa = require_pyarrow()
        if self.schema is not None:
            return typed_table(pa, self.schema, values)
        rows = [as_row(v) for v in values]
        columns: dict[str, None] = {}
        for row in rows:
            for k in row:
                columns.setdefault(k, None)
        check_columns(columns, rows, "Parquet")
        if rows and not columns:  # a Parquet file without a column cannot hold a row count
            raise EncodeError("cannot write as Parquet: an object with no fields, and no record beside it has one", 0)
        arrays = []
        for c in columns:
            col = [row.get(c) for row in rows]
            try:
                arr = pa.array(col)
            except (pa.ArrowException, TypeError, ValueError, OverflowError, RecursionError):
                arr = None  # no one type holds them all (or a value pyarrow refuses): text
            if arr is not None and _coerced(pa, col, arr.type):
                arr = None  # pyarrow would silently turn a boolean into a float, or text into bytes
            if arr is not None and not pa.types.is_null(arr.type) and not _has_empty_struct(arr.type):
                if 1 + _type_depth(arr.type) > MAX_SCHEMA_DEPTH:
                    bad = max(range(len(col)), key=lambda i: _depth(col[i]))
                    raise EncodeError(f"cannot write as Parquet: field {c!r} is nested deeper than Parquet readers "
                                      f"open ({MAX_SCHEMA_DEPTH} schema levels; an object is one, a list two)", bad)
            else:
                arr = _text_array(pa, col)
            arrays.append(arr)
        return pa.Table.from_arrays(arrays, names=list(columns))

    def write(self, values: list) -> None:
        import pyarrow.parquet as pq

        pa = require_pyarrow()
        try:
            table = self._table(values)
        except EncodeError:
            raise
        except (pa.ArrowException, ValueError, TypeError) as exc:
            if self.schema is None:
                raise
            bad = _first_unwritable(values, self.schema)  # what the checks before pyarrow missed
            if bad is None:
                raise
            raise EncodeError(f"cannot write as Parquet: {type(exc).__name__}: {exc}", bad) from None
        try:
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.out, table.schema, compression=self.codec,
                                               compression_level=self.level if self.codec in ("GZIP", "ZSTD") else None)
            elif table.schema != self.writer.schema:
                table = table.cast(self.writer.schema)
            self.writer.write_table(table, row_group_size=self.row_group_rows)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            bad = _first_unwritable(values, self.schema)
            if bad is None:
                raise
            raise EncodeError(f"cannot write as Parquet: {type(exc).__name__}: {exc}", bad) from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def typed_table(pa, schema: dict, values: list):
    """The records as a table of exactly ``schema``'s types (``arrowtypes``); ``EncodeError(index)``
    names a record that does not fit (a bad record). Shared by the parquet format and the table
    sinks (delta, iceberg), so a value lands in a column by one set of rules.

    A column whose values' kinds (worked out from their type sets, shared with ``widen``) map
    onto its type exactly is built by pyarrow from the Python values in one call; any other
    column, or one pyarrow refuses, is fitted value by value, which names the record that does
    not fit."""
    from .arrowtypes import Unfit, arrow_type, direct, has_empty_struct, to_array
    from .batchcols import take

    cols = take(values)
    rows = cols.rows
    names = [k for k, t in schema.items() if not has_empty_struct(t)]
    check_columns(schema, rows, "Parquet")
    if not schema.keys() >= cols.names.keys():
        for i, row in enumerate(rows):
            if not schema.keys() >= row.keys():
                extra = next(k for k in row if k not in schema)
                raise EncodeError(f"cannot write as Parquet: the dataset has no column for field {extra!r}", i)
    if rows and not names:  # a file needs a column to hold its row count
        raise EncodeError("cannot write as Parquet: an object with no fields, and no record beside it has one", 0)
    arrays = []
    for c in schema:  # a column with no type yet is written as Arrow's null type: only nulls fit
        t, col, arr = schema[c], cols.col(c), None
        try:
            kind = cols.kind(c)
        except RecursionError:
            kind = None
        if direct(kind, t):
            try:
                arr = pa.array(col, arrow_type(pa, t))
            except (pa.ArrowException, TypeError, ValueError, OverflowError, RecursionError):
                arr = None  # e.g. an integer a double would round: the checks below name it
        if arr is None:
            try:
                arr = to_array(pa, col, t)
            except Unfit as exc:
                raise EncodeError(f"cannot write as Parquet: field {c!r}: {exc}", exc.index) from None
        if c in names:
            arrays.append(arr)
    return pa.Table.from_arrays(arrays, names=names)


def _text_array(pa, col: list):
    """The column as strings: text as it is, anything else as exact JSON text (``jsontext``)."""
    try:
        return pa.array([_text(v) for v in col], pa.string())
    except (TypeError, ValueError) as exc:  # NotJson, a lone surrogate
        for i, v in enumerate(col):
            try:
                t = _text(v)
                if t is not None:
                    t.encode()
            except (TypeError, ValueError) as exc:
                raise EncodeError(f"cannot write as Parquet: {exc}", i) from None
        raise exc


def _coerced(pa, col: list, t) -> bool:
    """pyarrow put a boolean where its type has a float, or a str where it has binary: it infers
    ``double`` from ``[1.5, True]`` (True becomes 1.0) and ``binary`` from ``[b"x", "a"]``. Each
    such leaf is checked over all its values at once, by the types they hold (in C)."""
    if pa.types.is_floating(t):
        return bool in set(map(type, col))
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return str in set(map(type, col))
    if pa.types.is_struct(t):
        for i in range(t.num_fields):
            f = t.field(i)
            if _leaves(pa, f.type):
                name = f.name
                if _coerced(pa, [v.get(name) if type(v) is dict else None for v in col], f.type):
                    return True
        return False
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if not _leaves(pa, t.value_type):
            return False
        return _coerced(pa, [x for v in col if type(v) is list or type(v) is tuple for x in v], t.value_type)
    return False


def _leaves(pa, t) -> bool:
    """``t`` has a leaf pyarrow may have coerced into: a float or binary."""
    if pa.types.is_struct(t):
        return any(_leaves(pa, t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _leaves(pa, t.value_type)
    return pa.types.is_floating(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _has_empty_struct(t) -> bool:
    """A struct with no fields anywhere in ``t``: Parquet cannot write one."""
    import pyarrow as pa
    if pa.types.is_struct(t):
        return t.num_fields == 0 or any(_has_empty_struct(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has_empty_struct(t.value_type)
    return False


def _type_depth(t) -> int:
    """The Parquet schema levels of a column of type ``t``: a struct is one group, a list two
    (the LIST group and its repeated group), a leaf one."""
    import pyarrow as pa
    if pa.types.is_struct(t):
        return 1 + max((_type_depth(t.field(i).type) for i in range(t.num_fields)), default=0)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return 2 + _type_depth(t.value_type)
    return 1


def _depth(value) -> int:
    """``_type_depth`` of one value (iteratively: the value may be deeper than the stack)."""
    best, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if type(v) is dict:
            stack.extend((x, d + 1) for x in v.values())
            best = max(best, d + 1)
        elif type(v) in (list, tuple):
            stack.extend((x, d + 2) for x in v)
            best = max(best, d + 3)
        else:
            best = max(best, d + 1)
    return best


def _first_unwritable(values: list, schema: dict | None = None) -> int | None:
    """The index of the first record Parquet cannot write on its own, if any."""
    import io

    import pyarrow as pa
    for i, v in enumerate(values):
        try:
            w = ParquetWriter(io.BytesIO(), "none", schema=schema)
            w.write([v])
            w.close()
        except EncodeError:
            return i
        except (pa.ArrowException, ValueError, TypeError):
            return i
    return None


def schema_files(columns: dict) -> dict[str, bytes]:
    """What a Parquet dataset root holds for its readers, by name: ``_common_metadata`` (the
    schema alone, the Parquet convention Spark and Hive read), and ``+schema.parquet``, a file
    with the schema and no rows, which sorts before every data file, so readers that take the
    schema from the first file (``pyarrow.dataset``, DuckDB without ``union_by_name``) see
    every column with its widest type."""
    import io

    import pyarrow.parquet as pq

    from .arrowtypes import arrow_schema, has_empty_struct

    pa = require_pyarrow()
    schema = arrow_schema(pa, {k: t for k, t in columns.items() if not has_empty_struct(t)})
    meta, empty = io.BytesIO(), io.BytesIO()
    pq.write_metadata(schema, meta)
    pq.write_table(schema.empty_table(), empty, compression="NONE")
    return {"_common_metadata": meta.getvalue(), "+schema.parquet": empty.getvalue()}


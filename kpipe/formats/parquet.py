"""parquet: written by pyarrow (the ``parquet`` extra), in row groups as they fill.

Columns are the union of the records' top-level fields in first-seen order. Each column's type
is what pyarrow infers from all its values in the object (ints, floats, strings, bytes, nested
objects as structs, lists as lists); a column whose values pyarrow cannot put in one type (say
numbers and strings) is written as strings, with non-string values as JSON text. A column that
is null everywhere is a nullable string column. A record that is not an object becomes a single
``value`` column.
"""
from __future__ import annotations

import orjson

from kpipe.api import FatalError

from .base import EncodeError, Writer, as_row, json_default

__all__ = ["ParquetWriter", "CODECS", "require_pyarrow"]

CODECS = {"none": "NONE", "snappy": "SNAPPY", "gzip": "GZIP", "zstd": "ZSTD"}
ROW_GROUP_ROWS = 128 * 1024


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
    return orjson.dumps(value, default=json_default).decode()


class ParquetWriter(Writer):
    def __init__(self, out, compression: str = "snappy", level: int | None = None,
                 row_group_rows: int = ROW_GROUP_ROWS):
        if compression not in CODECS:
            raise ValueError(f"parquet cannot use compression {compression!r}; use one of {', '.join(CODECS)}")
        self.out = out
        self.codec = CODECS[compression]
        self.level = level
        self.row_group_rows = row_group_rows
        self.writer = None

    def _table(self, values: list):
        pa = require_pyarrow()
        rows = [as_row(v) for v in values]
        columns: dict[str, None] = {}
        for row in rows:
            for k in row:
                columns.setdefault(k, None)
        arrays = []
        for c in columns:
            col = [row.get(c) for row in rows]
            try:
                arr = pa.array(col)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                arr = None
            if arr is None or pa.types.is_null(arr.type):
                try:
                    arr = pa.array([_text(v) for v in col], pa.string())
                except TypeError as exc:
                    bad = next(i for i, v in enumerate(col) if not _encodable(v))
                    raise EncodeError(f"cannot write as Parquet: {exc}", bad) from None
            arrays.append(arr)
        return pa.Table.from_arrays(arrays, names=list(columns))

    def write(self, values: list) -> None:
        import pyarrow.parquet as pq

        table = self._table(values)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.out, table.schema, compression=self.codec,
                                           compression_level=self.level if self.codec in ("GZIP", "ZSTD") else None)
        elif table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)
        self.writer.write_table(table, row_group_size=self.row_group_rows)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _encodable(value) -> bool:
    try:
        _text(value)
        return True
    except TypeError:
        return False

"""Decimals of mixed scales inferred into one column stay a decimal128 that every reader reads
exactly: a decimal256 (past 38 digits) is read by DuckDB as a double and not at all by Spark."""
from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pyarrow.dataset as ds

from kpipe.api import SinkContext
from kpipe.sinks.files.sink import FilesSink
from s3kit import make_batch
from test_dataset_schema import duckdb


def test_mixed_scales_stay_a_decimal128(tmp_path):
    s = FilesSink({"path": str(tmp_path), "format": "parquet", "fsync": False}, SinkContext("p", "g"))
    s.open()
    # One batch: across files whose scales differ, DuckDB 2.0 rounds to the first file's scale
    # (docs/sinks/files.md advises declaring decimals); pyarrow.dataset casts exactly.
    s.write([make_batch([{"id": 0, "d": Decimal("1E+2")}, {"id": 1, "d": Decimal("12.340")},
                         {"id": 2, "d": Decimal("0E-10")}], 0, topic="t")])
    table = ds.dataset(str(tmp_path), format="parquet").to_table()
    assert table.schema.field("d").type == pa.decimal128(38, 10)
    assert sorted(table.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 0, "d": Decimal(100)}, {"id": 1, "d": Decimal("12.34")}, {"id": 2, "d": Decimal(0)}]
    if duckdb is not None:
        got = duckdb.sql(f"select id, d from read_parquet('{tmp_path}/**/*.parquet', union_by_name = true) "
                         "order by id").fetchall()
        assert got == [(0, Decimal(100)), (1, Decimal("12.34")), (2, Decimal(0))]
        assert all(type(d) is Decimal for _, d in got)  # a decimal256 comes back as a float

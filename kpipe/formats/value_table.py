"""How edge values land in each file format (jsonl, csv, avro, parquet), on the files sink and on
the S3 sink, which shares the writers: the table in "How values land" (docs/sinks/files.md) and
the cases of tests/test_files_values_table.py, both from this data (see kpipe/value_table.py).

A row's values are the field ``v`` of one record each, written together in one batch into a new
dataset with no declared types (so they share one inferred column, as a stream of such records
would). An expectation is what an independent reader gets back for ``v``:

- jsonl: the line parsed with ``json.loads`` (numbers compared by exact decimal value and the
  sign of zero, see ``json_form``); ``MISSING``: the line has no ``v``;
- csv: the cell's text from ``csv.reader``, or ``None`` for a null (an empty unquoted cell, as
  pyarrow's CSV reader tells it from ``""``);
- avro: fastavro's value;
- parquet: ``Arrow(type, value)``: the column's Arrow type in the file and pyarrow's value.

``BAD`` is a bad record, reported once at its own offset, nothing written for it.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kpipe.value_table import BAD, MISSING, Cell, Row, ValueTable

__all__ = ["TABLE", "Arrow", "deep"]


@dataclass(frozen=True)
class Arrow:
    """A parquet expectation: the column's Arrow type (``str(pyarrow type)``; ``None``: too long
    to write out, not compared) and the value."""
    type: str
    value: Any


def deep(n: int, kind: str = "list"):
    """``n`` lists (or objects ``{"a": ...}``) around 1."""
    v = 1
    for _ in range(n):
        v = [v] if kind == "list" else {"a": v}
    return v


NAN, INF = float("nan"), float("inf")
PLUS2 = dt.timezone(dt.timedelta(hours=2))
WHEN = dt.datetime(2024, 1, 2, 5, 4, 5, tzinfo=PLUS2)
NAIVE = WHEN.replace(tzinfo=None)
UTC_WHEN = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
BIG = (2**63, -(2**63) - 1, 2**70)
EDGES = (2**63 - 1, -(2**63))
D40, D300 = deep(40), deep(300)
D60 = deep(60, "dict")
D40_TEXT, D60_TEXT = "[" * 40 + "1" + "]" * 40, '{"a":' * 60 + "1" + "}" * 60


def _texts(values) -> tuple:
    return tuple(str(v) for v in values)


ROWS = (
    Row("null; field missing from the record", [None, MISSING],
        jsonl=Cell((None, MISSING), "`null`; absent"),
        csv=Cell((None, None), "empty unquoted cell (a one-column file: an empty line)"),
        avro=Cell((None, None), "`null` (a field with only nulls is `[\"null\"]`)"),
        parquet=Cell((Arrow("null", None),) * 2, "`null` (Arrow's `null` type until a value gives it one)")),
    Row('empty string `""`', [""],
        jsonl=Cell("", '`""`'), csv=Cell("", '`""` (quoted, unlike null)'),
        avro=Cell("", '`""`'), parquet=Cell(Arrow("string", ""), '`""`')),
    Row('text that reads like something else: `"3"`, `"true"`, `"null"`, `"NaN"`', ["3", "true", "null", "NaN"],
        jsonl=Cell(("3", "true", "null", "NaN"), "JSON strings"),
        csv=Cell(("3", "true", "null", "NaN"), "the text, as is (a typed CSV reader may read `null`, `NaN` as null)"),
        avro=Cell(("3", "true", "null", "NaN"), "`string`"),
        parquet=Cell(tuple(Arrow("string", s) for s in ("3", "true", "null", "NaN")), "`string`")),
    Row("integers: `123`, `0`, `-1`", [123, 0, -1],
        jsonl=Cell((123, 0, -1), "as is"), csv=Cell(("123", "0", "-1"), "its digits"),
        avro=Cell((123, 0, -1), "`long`"),
        parquet=Cell(tuple(Arrow("int64", v) for v in (123, 0, -1)), "`int64`")),
    Row("integer past 64 bits: `2**63`, `-2**63-1`, `2**70`", list(BIG),
        jsonl=Cell(BIG, "exact JSON number"), csv=Cell(_texts(BIG), "exact digits"),
        avro=Cell(BAD, "bad record (Avro's `long` is 64-bit; a `double` would round it)"),
        parquet=Cell(tuple(Arrow("string", str(v)) for v in BIG),
                     "a `text` column, exact digits (a declared `bigint` or `double` column rejects them)")),
    Row("the 64-bit edges: `2**63-1`, `-2**63`", list(EDGES),
        jsonl=Cell(EDGES, "exact"), csv=Cell(_texts(EDGES), "exact digits"), avro=Cell(EDGES, "`long`, exact"),
        parquet=Cell(tuple(Arrow("int64", v) for v in EDGES), "`int64`, exact")),
    Row("integer beside floats: `1`, `2.5`", [1, 2.5],
        jsonl=Cell((1, 2.5), "as written"), csv=Cell(("1", "2.5"), "as written"),
        avro=Cell((1, 2.5), "as written (`long` and `double` branches)"),
        parquet=Cell((Arrow("double", 1.0), Arrow("double", 2.5)), "`double`")),
    Row("an integer a double cannot hold (`2**53+1`) beside `0.5`", [2**53 + 1, 0.5],
        jsonl=Cell((2**53 + 1, 0.5), "as written"), csv=Cell((str(2**53 + 1), "0.5"), "as written"),
        avro=Cell((2**53 + 1, 0.5), "as written"),
        parquet=Cell((BAD, Arrow("double", 0.5)),
                     "bad record; `double` (declare the column `text` or `numeric` to keep it)")),
    Row("`Infinity`, `-Infinity`, `NaN`", [INF, -INF, NAN],
        jsonl=Cell(BAD, "bad record (JSON has none)"),
        csv=Cell(("inf", "-inf", "nan"), "`inf`, `-inf`, `nan`"),
        avro=Cell((INF, -INF, NAN), "exact (`double`)"),
        parquet=Cell(tuple(Arrow("double", v) for v in (INF, -INF, NAN)), "exact (`double`)")),
    Row('NaN nested: `{"a": [NaN]}`', [{"a": [NAN]}],
        jsonl=Cell(BAD, "bad record, at any depth"),
        csv=Cell(BAD, "bad record (the cell is JSON text)"),
        avro=Cell({"a": [NAN]}, "exact"),
        parquet=Cell(Arrow("struct<a: list<element: double>>", {"a": [NAN]}),
                     "exact in a struct (a `text` or `json` column rejects it)")),
    Row("`-0.0`", [-0.0],
        jsonl=Cell(-0.0, "`-0.0`"), csv=Cell("-0.0", "`-0.0`"),
        avro=Cell(-0.0, "`-0.0`"), parquet=Cell(Arrow("double", -0.0), "`-0.0`")),
    Row("`true`, `false`", [True, False],
        jsonl=Cell((True, False), "`true`, `false`"), csv=Cell(("true", "false"), "`true`, `false`"),
        avro=Cell((True, False), "`boolean`"),
        parquet=Cell((Arrow("bool", True), Arrow("bool", False)), "`bool`")),
    Row("boolean beside a number: `true`, `2`", [True, 2],
        jsonl=Cell((True, 2), "as written"), csv=Cell(("true", "2"), "as written"),
        avro=Cell((True, 2), "as written (`boolean` and `long` branches)"),
        parquet=Cell((Arrow("string", "true"), Arrow("string", "2")), "a `text` column: `true`, `2`")),
    Row('NUL in text: `"a\\u0000b"`', ["a\x00b"],
        jsonl=Cell("a\x00b", "exact (`\\u0000`)"), csv=Cell("a\x00b", "exact"),
        avro=Cell("a\x00b", "exact"), parquet=Cell(Arrow("string", "a\x00b"), "exact")),
    Row('lone surrogate in text (`"\\ud800"`, from a transform)', ["\ud800", {"x": ["\udc00"]}],
        jsonl=BAD, csv=BAD, avro=BAD, parquet=BAD),
    Row('lone surrogate in a field name (`{"\\udc00": 1}`)', [{"\udc00": 1}],
        jsonl=BAD, csv=BAD, parquet=BAD,
        avro=BAD),
    Row("`{}`", [{}],
        jsonl=Cell({}, "`{}`"), csv=Cell("{}", "`{}`"),
        avro=Cell({}, "an empty record"),
        parquet=Cell(Arrow("string", "{}"), "a column that only had `{}`: `text` (`{}`)")),
    Row('`{}` beside `{"a": 1}`', [{}, {"a": 1}],
        jsonl=Cell(({}, {"a": 1}), "as written"), csv=Cell(("{}", '{"a":1}'), "JSON text"),
        avro=Cell(({"a": None}, {"a": 1}), 'one record type: `{"a": null}`, `{"a": 1}`'),
        parquet=Cell((Arrow("struct<a: int64>", {"a": None}), Arrow("struct<a: int64>", {"a": 1})),
                     "a struct, missing fields null")),
    Row("`[]`; `[]` beside `[1]`", [[], [1]],
        jsonl=Cell(([], [1]), "as written"), csv=Cell(("[]", "[1]"), "`[]`, `[1]`"),
        avro=Cell(([], [1]), "as written"),
        parquet=Cell((Arrow("list<element: int64>", []), Arrow("list<element: int64>", [1])),
                     "a list (only `[]` so far: a list of Arrow's `null`)")),
    Row("nesting 40 lists deep", [D40],
        jsonl=Cell(D40, "exact"), csv=Cell(D40_TEXT, "JSON text"), avro=Cell(D40, "exact"),
        parquet=Cell(Arrow(None, D40), "exact, a list of lists")),
    Row("nesting 60 objects deep", [D60],
        jsonl=Cell(D60, "exact"), csv=Cell(D60_TEXT, "JSON text"), avro=Cell(D60, "exact"),
        parquet=Cell(Arrow(None, D60), "exact, a struct of structs")),
    Row("nesting 300 lists deep", [D300],
        jsonl=Cell(D300, "exact (up to Python's recursion limit, ~1000 levels)"),
        csv=Cell("[" * 300 + "1" + "]" * 300, "JSON text, the same limit"),
        avro=Cell(BAD, "bad record past 124 list levels or 62 object levels (the remembered schema "
                       "must fit the dataset state's JSON, 255 levels)"),
        parquet=Cell(BAD, "bad record (deeper than 100 schema levels, which readers open; an object counts 1, "
                          "a list 2)")),
    Row("nesting 3000 lists deep", [deep(3000)],
        jsonl=Cell(BAD, "bad record (past Python's recursion limit)"), csv=BAD, parquet=BAD,
        avro=BAD),
    Row("`Decimal`: `12.340`, `-0.500` (one scale)", [Decimal("12.340"), Decimal("-0.500")],
        jsonl=Cell((Decimal("12.340"), Decimal("-0.500")), "exact JSON numbers"),
        csv=Cell(("12.340", "-0.500"), "exact: `12.340`, `-0.500`"),
        avro=Cell(BAD, "bad record unless a schema declares a decimal"),
        parquet=Cell((Arrow("decimal128(38, 3)", Decimal("12.340")), Arrow("decimal128(38, 3)", Decimal("-0.500"))),
                     "`decimal128(38, 3)`, exact")),
    Row("`Decimal`: `12.340`, `0E-10`, `1E+2`", [Decimal("12.340"), Decimal("0E-10"), Decimal("1E+2")],
        jsonl=Cell((Decimal("12.340"), Decimal("0E-10"), Decimal("100")), "exact JSON number (`12.340`)"),
        csv=Cell(("12.340", "0.0000000000", "100"), "exact, plain notation: `12.340`, `0.0000000000`, `100`"),
        avro=Cell(BAD, "bad record unless a schema (the deserializer's, `avro_schema`, `columns:`) "
                       "declares a decimal"),
        parquet=Cell(tuple(Arrow("decimal128(38, 10)", Decimal(d))
                           for d in ("12.3400000000", "0E-10", "100.0000000000")),
                     "exact at the largest scale seen, `decimal128(38, 10)` here (mixed scales stay within 38 "
                     "digits, which DuckDB and Spark read; see below the table for what does not fit)")),
    Row("`Decimal`: `Infinity`, `-Infinity`, `NaN`", [Decimal("Infinity"), Decimal("-Infinity"), Decimal("NaN")],
        jsonl=Cell(BAD, "bad record (JSON has none)"),
        csv=Cell(("Infinity", "-Infinity", "NaN"), "`Infinity`, `-Infinity`, `NaN`"),
        avro=BAD, parquet=BAD),
    Row("`Decimal`: `1E+5000`", [Decimal("1E+5000")],
        jsonl=Cell(Decimal("1E+5000"), "exact JSON number `1E+5000` (Python's `json` reads it as `inf` unless "
                                       "`parse_float=Decimal`)"),
        csv=Cell("1E+5000", "`1E+5000` (past 1000 zeros of padding, Python's notation)"),
        avro=BAD, parquet=BAD),
    Row("bytes: `b'\\x00\\xff'`", [b"\x00\xff"],
        jsonl=Cell("AP8=", "base64 string"), csv=Cell("AP8=", "base64: `AP8=`"),
        avro=Cell(b"\x00\xff", "`bytes`"), parquet=Cell(Arrow("binary", b"\x00\xff"), "`binary`")),
    Row("datetime with a zone (`+02:00`)", [WHEN],
        jsonl=Cell("2024-01-02T05:04:05+02:00", "RFC 3339, zone kept"),
        csv=Cell("2024-01-02T05:04:05+02:00", "ISO 8601, zone kept"),
        avro=Cell(BAD, "bad record unless a schema declares the logical type"),
        parquet=Cell(Arrow("timestamp[us, tz=UTC]", UTC_WHEN), "`timestamp[us, UTC]`: the same instant, in UTC")),
    Row("naive datetime", [NAIVE],
        jsonl=Cell("2024-01-02T05:04:05", "ISO 8601, no zone"), csv=Cell("2024-01-02T05:04:05", "ISO 8601, no zone"),
        avro=Cell(BAD, "bad record unless a schema declares the logical type"),
        parquet=Cell(Arrow("timestamp[us]", NAIVE), "`timestamp[us]`")),
    Row("datetime with a zone beside a naive one", [WHEN, NAIVE],
        jsonl=Cell(("2024-01-02T05:04:05+02:00", "2024-01-02T05:04:05"), "as written"),
        csv=Cell(("2024-01-02T05:04:05+02:00", "2024-01-02T05:04:05"), "as written"),
        avro=Cell(BAD, "bad record"),
        parquet=Cell((Arrow("string", '"2024-01-02T05:04:05+02:00"'), Arrow("string", '"2024-01-02T05:04:05"')),
                     'a `text` column of JSON text: `"2024-01-02T05:04:05+02:00"`, quotes included')),
    Row("date", [dt.date(2024, 1, 2)],
        jsonl=Cell("2024-01-02", "ISO 8601 string"), csv=Cell("2024-01-02", "`2024-01-02`"),
        avro=Cell(BAD, "bad record unless a schema declares the logical type"),
        parquet=Cell(Arrow("date32[day]", dt.date(2024, 1, 2)), "`date32`")),
    Row("time of day", [dt.time(10, 0, 1, 250000)],
        jsonl=Cell("10:00:01.250000", "ISO 8601 string"), csv=Cell("10:00:01.250000", "`10:00:01.250000`"),
        avro=Cell(BAD, "bad record unless a schema declares the logical type"),
        parquet=Cell(Arrow("time64[us]", dt.time(10, 0, 1, 250000)), "`time64[us]`")),
    Row("uuid", [UID],
        jsonl=Cell(str(UID), "canonical text"), csv=Cell(str(UID), "canonical text"),
        avro=Cell(BAD, "bad record unless a schema declares the logical type"),
        parquet=Cell(Arrow("string", str(UID)), "`string`, canonical text")),
    Row("duration (`timedelta(seconds=90)`, from a transform)", [dt.timedelta(seconds=90)],
        jsonl=Cell("PT90S", "ISO 8601: `PT90S`"), csv=Cell("PT90S", "`PT90S`"),
        avro=BAD, parquet=BAD),
    Row('map with integer keys (`{1: "a"}`, from a transform)', [{1: "a"}],
        jsonl=Cell({"1": "a"}, 'string keys: `{"1":"a"}`'), csv=Cell('{"1":"a"}', 'JSON text: `{"1":"a"}`'),
        avro=BAD, parquet=BAD),
    Row("set (`{3}`, from a transform)", [{3}],
        jsonl=Cell([3], "a JSON array"), csv=Cell("[3]", "JSON text: `[3]`"),
        avro=BAD, parquet=BAD),
)

TABLE = ValueTable(
    name="files", doc="docs/sinks/files.md",
    columns=("jsonl", "csv", "avro", "parquet"),
    dialects=("files", "s3"),
    dialect_names={"files": "files", "s3": "S3"},
    rows=ROWS,
)

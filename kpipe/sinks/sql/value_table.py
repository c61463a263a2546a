"""How edge values land in the column types kpipe creates, on PostgreSQL, MariaDB and SQLite:
the table in "How values land" (docs/sinks/postgres.md) and the cases of
tests/test_sql_values_table.py, both from this data (see kpipe/value_table.py).

An expectation is what a plain query through the database's own driver (psycopg, pymysql,
sqlite3) returns, made comparable: a bigint as an int, a double as a float (the sign of zero
counts), a boolean as a bool (MariaDB and SQLite give 0 and 1), text as the exact str, and a
json column's text parsed as JSON (numbers compared by exact decimal value and sign). ``None``
is SQL NULL; ``BAD`` is a bad record.
"""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from kpipe.value_table import BAD, MISSING, Cell, Row, ValueTable

__all__ = ["TABLE", "deep"]


def deep(n: int):
    """``n`` lists around 1: nesting past orjson's 254 levels (and MariaDB's 32)."""
    v = 1
    for _ in range(n):
        v = [v]
    return v


NAN, INF = float("nan"), float("inf")
WHEN = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
NOT_JSON = object()
DEEP = deep(300)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def ms(n: float) -> dt.datetime:
    """The instant ``n`` epoch milliseconds stand for."""
    return EPOCH + dt.timedelta(milliseconds=n)


ROWS = (
    Row("null, or no such field", [None, MISSING],
        timestamptz=Cell((None, None), "NULL"),
        bigint=Cell((None, None), "NULL"), double=Cell((None, None), "NULL"),
        boolean=Cell((None, None), "NULL"), text=Cell((None, None), "NULL"),
        json=Cell((None, None), "NULL (not the JSON text `null`)")),
    Row("`123`; `1`, `0`", [123, 1, 0],
        timestamptz=Cell((ms(123), ms(1), ms(0)), "epoch ms: `1970-01-01 00:00:00.123+00`; ..."),
        bigint=Cell((123, 1, 0), "`123`; `1`, `0`"), double=Cell((123.0, 1.0, 0.0), "`123.0`; `1.0`, `0.0`"),
        boolean=BAD, text=Cell(("123", "1", "0"), "`'123'`; `'1'`, `'0'`"),
        json=Cell((123, 1, 0), "`123`; `1`, `0`")),
    Row("integer outside 64 bits (`2**63`, `-2**63-1`, `2**70`)", [2**63, -(2**63) - 1, 2**70],
        timestamptz=Cell(BAD, "bad record (outside years 1 to 9999)"),
        bigint=BAD, double=Cell((float(2**63), float(-(2**63) - 1), float(2**70)), "nearest double"),
        boolean=BAD, text=Cell((str(2**63), str(-(2**63) - 1), str(2**70)), "its digits"),
        json=Cell((2**63, -(2**63) - 1, 2**70), "its digits, exact")),
    Row("`2.0`; `2.5`", [2.0, 2.5],
        timestamptz=Cell((ms(2), ms(2.5)), "epoch ms, to the microsecond"),
        bigint=Cell((2, BAD), "`2`; bad record"), double=Cell((2.0, 2.5), "`2.0`; `2.5`"),
        boolean=BAD, text=Cell(("2.0", "2.5"), "`'2.0'`; `'2.5'`"),
        json=Cell((2.0, 2.5), "`2.0`; `2.5`")),
    Row("`-0.0`", [-0.0],
        timestamptz=Cell(EPOCH, "the epoch"),
        bigint=Cell(0, "`0`"), double=Cell(-0.0, "`-0.0` (MariaDB, SQLite: `0.0`)", mariadb=0.0, sqlite=0.0),
        boolean=BAD, text=Cell("-0.0", "`'-0.0'`"),
        json=Cell(-0.0, "`-0.0` (PostgreSQL's JSONB: `0.0`)", postgres=0.0)),
    Row("`1e300`; `5e-324`", [1e300, 5e-324],
        timestamptz=Cell((BAD, EPOCH), "bad record; the epoch (less than a microsecond after it)"),
        bigint=BAD, double=Cell((1e300, 5e-324), "as is"),
        boolean=BAD, text=Cell(("1e+300", "5e-324"), "`'1e+300'`; `'5e-324'`"),
        json=Cell((1e300, 5e-324), "the same number (PostgreSQL's JSONB writes out its digits)")),
    Row("NaN, ±Infinity (from a transform or Avro), anywhere in the value", [NAN, INF, -INF, {"a": [NAN]}, {"s": {NAN}}],
        timestamptz=BAD,
        bigint=BAD, double=BAD, boolean=BAD,
        text=BAD, json=BAD),
    Row("`true`; `false`", [True, False],
        timestamptz=BAD,
        bigint=BAD, double=BAD, boolean=Cell((True, False), "`true`; `false`"),
        text=Cell(("true", "false"), "`'true'`; `'false'`"), json=Cell((True, False), "`true`; `false`")),
    Row('a string: `"3"`, `"true"`, `"plain"`', ["3", "true", "plain"],
        timestamptz=BAD,
        bigint=BAD, double=BAD, boolean=BAD,
        text=Cell(("3", "true", "plain"), "as is"),
        json=Cell(("3", "true", "plain"), 'a JSON string (`"3"`, not `3`)')),
    Row('ISO-8601 text: `"2024-01-02T03:04:05Z"`, `"2024-01-02T05:04:05+02:00"`',
        ["2024-01-02T03:04:05Z", "2024-01-02T05:04:05+02:00"],
        timestamptz=Cell((WHEN, WHEN), "that instant"),
        bigint=BAD, double=BAD, boolean=BAD, text=Cell(("2024-01-02T03:04:05Z", "2024-01-02T05:04:05+02:00"), "as is"),
        json=Cell(("2024-01-02T03:04:05Z", "2024-01-02T05:04:05+02:00"), "a JSON string")),
    Row('string with NUL (`"a\\u0000b"`)', ["a\x00b"],
        timestamptz=BAD,
        bigint=BAD, double=BAD, boolean=BAD,
        text=Cell("a\x00b", "PostgreSQL: bad record; others: as is", postgres=BAD),
        json=Cell("a\x00b", "PostgreSQL: bad record; others: as is", postgres=BAD)),
    Row('string with a lone surrogate (`"\\ud800"`, from a transform), anywhere in the value',
        ["\ud800", {"x": "\udc00"}],
        timestamptz=BAD,
        bigint=BAD, double=BAD, boolean=BAD,
        text=BAD, json=BAD),
    Row('`{}`, `[]`, `[100, 100]`, `{"a": [1, null]}`, `{"n": 2**70}`', [{}, [], [100, 100], {"a": [1, None]}, {"n": 2**70}],
        timestamptz=BAD,
        bigint=BAD, double=BAD, boolean=BAD,
        text=Cell(("{}", "[]", "[100,100]", '{"a":[1,null]}', '{"n":1180591620717411303424}'),
                  "its JSON text: `'{}'`, `'[]'`, `'[100,100]'`, ..."),
        json=Cell(({}, [], [100, 100], {"a": [1, None]}, {"n": 2**70}), "as is")),
    Row("nesting deeper than 254 levels", [DEEP],
        timestamptz=BAD,
        bigint=BAD, double=BAD, boolean=BAD,
        text=Cell("[" * 300 + "1" + "]" * 300, "its JSON text"),
        json=Cell(DEEP, "as is (MariaDB: bad record, its JSON check allows 32 levels)", mariadb=BAD)),
    Row("Decimal (Avro `decimal`): `12`; `1.50`", [Decimal("12"), Decimal("1.50")],
        timestamptz=BAD,
        bigint=Cell((12, BAD), "`12`; bad record"), double=Cell((12.0, 1.5), "nearest double"),
        boolean=BAD, text=Cell(("12", "1.50"), "its digits: `'12'`; `'1.50'`"),
        json=Cell((Decimal("12"), Decimal("1.50")), "a number, exact")),
    Row("bytes (Avro `bytes`, the bytes deserializer): `b'\\x00\\xff'`, inside an object", [b"\x00\xff", {"b": b"\x00\xff"}],
        timestamptz=BAD,
        bigint=BAD, double=BAD, boolean=BAD,
        text=Cell(("AP8=", '{"b":"AP8="}'), "base64: `'AP8='`, `'{\"b\":\"AP8=\"}'`"),
        json=Cell(("AP8=", {"b": "AP8="}), "a base64 string, as the jsonl writer writes it")),
    Row("datetime (Avro `timestamp-millis`); uuid", [WHEN, UID],
        timestamptz=Cell((WHEN, BAD), "as is; bad record"),
        bigint=BAD, double=BAD, boolean=BAD,
        text=Cell(("2024-01-02T03:04:05+00:00", str(UID)), "ISO 8601; the uuid's text"),
        json=Cell(("2024-01-02T03:04:05+00:00", str(UID)), "the same, as a JSON string")),
    Row("set; map with integer keys; duration (from a transform)",
        [{"s": {3}}, {1: "a"}, dt.timedelta(seconds=90)],
        timestamptz=BAD,
        bigint=BAD, double=BAD, boolean=BAD,
        text=Cell(('{"s":[3]}', '{"1":"a"}', "PT90S"), "a JSON array; string keys; ISO 8601 (`'PT90S'`)"),
        json=Cell(({"s": [3]}, {"1": "a"}, "PT90S"), "the same")),
    Row("an object of a type no JSON encoder writes", [NOT_JSON],
        timestamptz=BAD,
        bigint=BAD, double=BAD, boolean=BAD, text=BAD, json=BAD),
    Row("epoch ms outside years 1 to 9999 (`10**17`, `-10**17`)", [10**17, -(10**17)],
        bigint=Cell((10**17, -(10**17)), "its digits"), double=Cell((1e17, -1e17), "its value"), boolean=BAD,
        text=Cell((str(10**17), str(-(10**17))), "its digits"), json=Cell((10**17, -(10**17)), "its digits"),
        timestamptz=Cell(BAD, "bad record")),
)

TABLE = ValueTable(
    name="sql", doc="docs/sinks/postgres.md",
    columns=("bigint", "double", "boolean", "text", "json", "timestamptz"),
    dialects=("postgres", "mariadb", "sqlite"),
    dialect_names={"postgres": "PostgreSQL", "mariadb": "MariaDB", "sqlite": "SQLite"},
    rows=ROWS,
)

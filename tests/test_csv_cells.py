"""Issue 15, CSV cells that every reader agrees on (docs/sinks/files.md, "How values land"):
plain ISO 8601, uuid and base64 text instead of JSON strings in quotes, decimals as exact plain
digits, null as an empty unquoted cell and the empty string as ``""``. Read back with readers
that are not kpipe: csv, DuckDB, pyarrow.csv, PostgreSQL's COPY, and pandas where installed."""
from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pyarrow.csv as pa_csv
import pytest
import yaml
from fastavro import parse_schema, schemaless_writer

from conftest import write_spec
from kit import produce_values, run_kpipe, seal, unique
from sqlkit import PG_URL
from test_formats_hostile import through_sink

UTC = dt.timezone.utc
duckdb = pytest.importorskip("duckdb")


def write(tmp_path: Path, values: list) -> tuple[list[int], Path]:
    """``values`` through the files sink (csv); the offsets reported bad and the file written."""
    rejected, files = through_sink(tmp_path, "csv", values)
    assert len(files) == 1
    path = tmp_path / "out.csv"
    path.write_bytes(files[0])
    return rejected, path


def dict_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def duck(path: Path, **options) -> tuple[list[str], list[tuple]]:
    """DuckDB's ``read_csv`` with a quoted empty string read as a string, not as null."""
    opts = "".join(f", {k}={v}" for k, v in {"allow_quoted_nulls": "false", **options}.items())
    rel = duckdb.sql(f"SELECT * FROM read_csv('{path}'{opts})")
    return rel.columns, rel.fetchall()


def arrow(path: Path) -> list[dict]:
    """pyarrow's CSV reader, told that only an unquoted empty cell is null."""
    convert = pa_csv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False, null_values=[""],
                                    column_types=_all_strings(path))
    parse = pa_csv.ParseOptions(ignore_empty_lines=False, newlines_in_values=True)
    return pa_csv.read_csv(path, parse_options=parse, convert_options=convert).to_pylist()


def _all_strings(path: Path) -> dict:
    import pyarrow as pa
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    return {c: pa.string() for c in header}


# -- 2. plain text for datetimes, dates, times, uuids, bytes, durations ------------------------

WHEN = dt.datetime(2026, 11, 26, 10, 0, 1, tzinfo=UTC)
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
PLAIN = {  # value: the cell's text
    "ts": (WHEN, "2026-11-26T10:00:01+00:00"),
    "ts_ms": (dt.datetime(2026, 11, 26, 10, 0, 1, 250000, tzinfo=UTC), "2026-11-26T10:00:01.250000+00:00"),
    "ts_zone": (dt.datetime(2026, 11, 26, 11, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
                "2026-11-26T11:30:00+05:30"),
    "ts_lmt": (dt.datetime(1900, 1, 1, tzinfo=dt.timezone(dt.timedelta(minutes=19, seconds=32))),
               "1900-01-01T00:00:00+00:19:32"),  # Amsterdam's old mean time: the zone's seconds kept
    "ts_naive": (dt.datetime(2026, 11, 26, 10, 0, 1), "2026-11-26T10:00:01"),
    "day": (dt.date(2026, 11, 26), "2026-11-26"),
    "time": (dt.time(10, 0, 1, 500), "10:00:01.000500"),
    "time_zone": (dt.time(10, 0, 1, tzinfo=UTC), "10:00:01+00:00"),
    "id": (UID, "12345678-1234-5678-1234-567812345678"),
    "raw": (b"\x00\xff,\"", "AP8sIg=="),
    "raw_empty": (b"", ""),  # quoted: an empty value, not null
    "duration": (dt.timedelta(seconds=90), "PT90S"),
    "long_duration": (dt.timedelta(days=-1, seconds=5), "-PT86395S"),
    "decimal": (Decimal("12.340"), "12.340"),
    "set": ({3}, "[3]"),
    "empty": ("", ""),
    "comma": ("a,\"b\"\r\nc", "a,\"b\"\r\nc"),
}


def test_datetimes_uuids_and_bytes_are_plain_text_not_json_strings(tmp_path):
    record = {k: v for k, (v, _) in PLAIN.items()}
    _, path = write(tmp_path, [record, record])
    want = {k: text for k, (_, text) in PLAIN.items()}
    assert dict_rows(path) == [want, want]
    assert arrow(path) == [want, want]
    columns, rows = duck(path, all_varchar="true")
    assert [dict(zip(columns, r)) for r in rows] == [want, want]
    # what the text means, as DuckDB reads it with its own types
    columns, rows = duck(path, types="{'decimal': 'DECIMAL(10,3)', 'id': 'UUID'}")
    got = dict(zip(columns, rows[0]))
    assert got["ts"] == WHEN and got["ts_zone"] == PLAIN["ts_zone"][0] and got["ts_ms"] == PLAIN["ts_ms"][0]
    assert got["ts_naive"] == PLAIN["ts_naive"][0] and got["day"] == PLAIN["day"][0]
    assert got["time"] == PLAIN["time"][0] and got["id"] == UID and got["decimal"] == Decimal("12.340")
    assert base64.b64decode(got["raw"]) == PLAIN["raw"][0]


def test_nested_values_are_json_text_with_the_same_plain_strings_inside(tmp_path):
    nested = {"when": WHEN, "day": dt.date(2026, 11, 26), "id": UID, "raw": b"\x00\xff",
              "amount": Decimal("12.340"), "items": [{"sku": "a", "at": WHEN}], "none": None}
    _, path = write(tmp_path, [{"order": nested, "tags": ["x", ""], "empty": {}}])
    (row,) = dict_rows(path)
    assert json.loads(row["order"], parse_float=Decimal) == {
        "when": "2026-11-26T10:00:01+00:00", "day": "2026-11-26", "id": str(UID), "raw": "AP8=",
        "amount": Decimal("12.340"), "items": [{"sku": "a", "at": "2026-11-26T10:00:01+00:00"}], "none": None}
    assert json.loads(row["tags"]) == ["x", ""] and row["empty"] == "{}"
    columns, rows = duck(path, types="{'order': 'JSON'}")
    assert json.loads(dict(zip(columns, rows[0]))["order"])["items"][0]["at"] == "2026-11-26T10:00:01+00:00"


# -- 3. decimals: exact, in plain notation ------------------------------------------------------

DECIMALS = [  # value, the cell's text
    (Decimal("12.340"), "12.340"),
    (Decimal("-0.05"), "-0.05"),
    (Decimal("0E-10"), "0.0000000000"),  # a zero of an Avro decimal(20, 10): str() says 0E-10
    (Decimal("1E-7"), "0.0000001"),
    (Decimal("1.23456789E-20"), "0.0000000000000000000123456789"),
    (Decimal("1E+2"), "100"),  # not made by Avro (its scale is never negative): the same number
    (Decimal("-1.0E+3"), "-1000"),
    (Decimal("123456789012345678901234567890.123456789"), "123456789012345678901234567890.123456789"),
    (Decimal("1E+5000"), "1E+5000"),  # plain would take 5000 zeros: Python's notation, still exact
    (Decimal("NaN"), "NaN"),
    (Decimal("-Infinity"), "-Infinity"),
]


def test_decimals_are_exact_plain_text(tmp_path):
    values = [{"i": i, "d": d} for i, (d, _) in enumerate(DECIMALS)]
    rejected, path = write(tmp_path, values)
    assert rejected == []
    cells = [r["d"] for r in dict_rows(path)]
    assert cells == [text for _, text in DECIMALS]
    for (d, _), cell in zip(DECIMALS, cells):  # the same number, read back
        assert Decimal(cell) == d or (d.is_nan() and Decimal(cell).is_nan())
    # DuckDB reads the finite, representable ones into a DECIMAL column exactly
    exact = [i for i, (d, _) in enumerate(DECIMALS) if d.is_finite() and abs(d) < 10**17]
    got = duckdb.sql(f"SELECT i, d::DECIMAL(38,28) FROM read_csv('{path}', all_varchar=true) "
                     f"WHERE i::INT IN {tuple(exact)} ORDER BY i::INT").fetchall()
    assert [d for _, d in got] == [DECIMALS[i][0] for i in exact]


# -- 4. null is an empty unquoted cell, the empty string "" ------------------------------------


def test_null_and_the_empty_string_are_told_apart(tmp_path):
    values = [{"id": 1, "s": None}, {"id": 2, "s": ""}, {"id": 3, "s": "x"}, {"id": 4}, {"id": 5, "s": " "},
              {"id": 6, "s": "null"}, {"id": 7, "s": "NaN"}]
    _, path = write(tmp_path, values)
    assert path.read_bytes() == b'id,s\r\n1,\r\n2,""\r\n3,x\r\n4,\r\n5, \r\n6,null\r\n7,NaN\r\n'
    want = [None, "", "x", None, " ", "null", "NaN"]
    columns, rows = duck(path)
    assert [r[1] for r in rows] == want
    assert [r["s"] for r in arrow(path)] == want
    # Python's csv (3.11) reads both as "": a reader that needs null must look at the quotes
    assert [r["s"] for r in dict_rows(path)] == ["", "", "x", "", " ", "null", "NaN"]


def test_a_one_column_null_is_an_empty_line(tmp_path):
    # one column: null is the empty line (as DuckDB's and Spark's writers have it); csv.reader
    # returns [] for it, csv.DictReader skips it (documented)
    _, path = write(tmp_path, [{"s": None}, {"s": ""}, {"s": "x"}, {}])
    assert path.read_bytes() == b's\r\n\r\n""\r\nx\r\n\r\n'
    assert [r[0] for r in duck(path)[1]] == [None, "", "x", None]
    assert [r["s"] for r in arrow(path)] == [None, "", "x", None]
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == [["s"], [], [""], ["x"], []]


def test_postgres_copy_reads_null_and_the_empty_string_as_written(tmp_path):
    psycopg = pytest.importorskip("psycopg")
    _, path = write(tmp_path, [{"id": 1, "s": None, "t": "a,b"}, {"id": 2, "s": "", "t": None}])
    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql")) as conn:
        conn.execute("CREATE TEMP TABLE csv_cells (id int, s text, t text)")
        with conn.cursor().copy("COPY csv_cells FROM STDIN (FORMAT csv, HEADER true)") as copy:
            copy.write(path.read_bytes())
        assert conn.execute("SELECT id, s, t FROM csv_cells ORDER BY id").fetchall() == [
            (1, None, "a,b"), (2, "", None)]


def test_pandas_reads_null_and_the_empty_string_through_pyarrow(tmp_path):
    pytest.importorskip("pandas")
    _, path = write(tmp_path, [{"id": 1, "s": None}, {"id": 2, "s": ""}])
    convert = pa_csv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False, null_values=[""])
    frame = pa_csv.read_csv(path, convert_options=convert).to_pandas()
    assert frame["s"].isna().tolist() == [True, False] and frame["s"][1] == ""


# -- end to end: Avro logical types from Kafka into csv files ---------------------------------

AVRO_SCHEMA = {"type": "record", "name": "Payment", "fields": [
    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 10}},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "note", "type": ["null", "string"], "default": None},
]}


def payment(i: int) -> dict:
    return {"id": uuid.UUID(int=i), "amount": Decimal(i).scaleb(-3).quantize(Decimal("1E-10")),
            "at": WHEN + dt.timedelta(milliseconds=i), "day": dt.date(2026, 11, 26),
            "note": [None, "", "x, \"y\""][i % 3]}


def test_avro_decimals_and_timestamps_into_csv_end_to_end(brokers, topic, tmp_path):
    parsed = parse_schema(AVRO_SCHEMA)

    def encode(v: dict) -> bytes:
        buf = io.BytesIO()
        schemaless_writer(buf, parsed, v)
        return buf.getvalue()

    values = [payment(i) for i in range(24)]
    produce_values(brokers, topic, [(i % 4, str(i), encode(v)) for i, v in enumerate(values)])
    seal(brokers, topic, lambda p: encode(payment(100 + p)))  # the Tansu end-offset quirk (kit.seal)
    (tmp_path / "payment.avsc").write_text(json.dumps(AVRO_SCHEMA))
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=unique("csv-avro"), fmt="csv")
    doc = yaml.safe_load(spec.read_text())
    doc["deserializer"] = {"type": "avro", "schema": "payment.avsc"}
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]

    want = {str(v["id"]): v for v in values + [payment(100 + p) for p in range(4)]}
    rows = [r for f in sorted(out.rglob("*.csv")) for r in dict_rows(f)]
    assert sorted(r["id"] for r in rows) == sorted(want)
    for r in rows:
        v = want[r["id"]]
        assert r["amount"] == f"{v['amount']:f}" and "E" not in r["amount"]  # 0.0000000000, not 0E-10
        assert r["at"] == v["at"].isoformat() and r["day"] == "2026-11-26"
    rel = duckdb.sql(f"SELECT * FROM read_csv('{out}/*/*/*.csv', allow_quoted_nulls=false, "
                     "types={'amount': 'DECIMAL(20,10)', 'id': 'UUID'})")
    got = sorted((dict(zip(rel.columns, r)) for r in rel.fetchall()), key=lambda r: r["id"])
    assert got == sorted(want.values(), key=lambda v: v["id"])


# -- times: orjson 3.13 writes 10000..99999 microseconds with five digits ----------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_time_keeps_its_hundredths(tmp_path, fmt):
    t = dt.time(12, 0, 0, 50000)  # Avro time-millis 12:00:00.050; orjson wrote "12:00:00.50000"
    _, files = through_sink(tmp_path, fmt, [{"t": t, "nested": {"at": [t, dt.time(0, 0, 0, 10001)]}}])
    if fmt == "jsonl":
        row = json.loads(files[0])
        nested = row["nested"]
    else:
        row = next(csv.DictReader(io.StringIO(files[0].decode(), newline="")))
        nested = json.loads(row["nested"])
    assert dt.time.fromisoformat(row["t"]) == t
    assert [dt.time.fromisoformat(x) for x in nested["at"]] == [t, dt.time(0, 0, 0, 10001)]

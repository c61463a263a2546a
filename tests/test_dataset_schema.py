"""Issue 15, item 1: one schema per dataset. Every file the files sink writes under one path is
read back as one table by independent readers (pyarrow.dataset over the directory, DuckDB's
read_parquet over a glob), whatever the record stream, its batches and its partitions; declared
types (an Avro schema, a JSON Schema, the sink's ``columns:``) land exactly as declared."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import threading
import uuid
from decimal import Decimal

import fastavro
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kpipe.api import Batch, BadRecordError, FatalError, SinkContext
from kpipe.sinks.files.sink import FilesSink
from s3kit import make_batch

try:
    import duckdb
except ImportError:  # the test extra installs it; without it the DuckDB checks are skipped
    duckdb = None

CTX = SinkContext(pipeline="p", group="g")
EXAMPLES = int(os.environ.get("KPIPE_PROPERTY_EXAMPLES", "40"))


def files_sink(path, fmt="parquet", context=CTX, **config) -> FilesSink:
    s = FilesSink({"path": str(path), "format": fmt, "fsync": False, **config}, context)
    s.open()
    return s


def read_dataset(path) -> list[dict]:
    """What pyarrow.dataset reads from the whole directory, as the issue's reader does it."""
    return ds.dataset(str(path), format="parquet").to_table().to_pylist()


def read_duckdb(path) -> list[dict] | None:
    if duckdb is None:
        return None
    rel = duckdb.sql(f"select * from read_parquet('{path}/**/*.parquet', union_by_name=true)")
    return [dict(zip(rel.columns, row)) for row in rel.fetchall()]


def by_id(rows: list[dict]) -> dict:
    return {r["id"]: r for r in rows}


# -- the property: random streams, batches, partitions ---------------------------------------

# Each field keeps one family of values through a stream (numbers: ints, floats or both), so
# the outcome does not depend on which partition happens to write first.
FAMILIES = {
    "number": st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False, width=64),
    "int": st.integers(-(2**63), 2**63 - 1),
    "text": st.text(st.characters(blacklist_categories=("Cs",)), max_size=5),
    "bool": st.booleans(),
    "nested": st.fixed_dictionaries({}, optional={"x": st.integers(-5, 5) | st.none(),
                                                  "y": st.text(max_size=3) | st.none()}),
    "list": st.lists(st.integers(-5, 5) | st.none(), max_size=3),
}


@st.composite
def streams(draw):
    fields = draw(st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), st.sampled_from(sorted(FAMILIES)),
                                  max_size=5))
    n = draw(st.integers(1, 30))
    records = []
    for i in range(n):
        rec = {"id": i}
        for name, family in fields.items():
            present = draw(st.sampled_from(["value", "null", "missing"]))
            if present == "value":
                rec[name] = draw(FAMILIES[family])
            elif present == "null":
                rec[name] = None
        records.append(rec)
    partitions = draw(st.integers(1, 3))
    owner = [draw(st.integers(0, partitions - 1)) for _ in records]
    cuts = draw(st.lists(st.integers(1, 10), min_size=1, max_size=40))
    order = draw(st.permutations(range(partitions)))
    return records, owner, cuts, list(order)


def batches_of(records, owner, cuts, order) -> list[Batch]:
    """Each partition's records cut into batches of the drawn sizes, partitions interleaved."""
    per: dict[int, list] = {}
    for rec, p in zip(records, owner):
        per.setdefault(p, []).append(rec)
    queues = {}
    for p, recs in per.items():
        out, i, k = [], 0, 0
        while i < len(recs):
            size = cuts[k % len(cuts)]
            out.append(make_batch(recs[i:i + size], i, topic="t", partition=p))
            i, k = i + size, k + 1
        queues[p] = out
    result = []
    while any(queues.values()):
        for p in order:
            if queues.get(p):
                result.append(queues[p].pop(0))
    return result


def json_text_fields(batches: list[Batch]) -> set:
    """The object fields stored as JSON text: those whose first batch with an object in them
    had only ``{}`` there (Parquet has no struct without fields, so such a new column is text,
    kpipe.formats.dataset._settle, and stays text)."""
    settled: dict = {}
    for b in batches:
        for k in {k for v in b.values for k, x in v.items() if type(x) is dict} - settled.keys():
            settled[k] = all(x == {} for v in b.values if type(x := v.get(k)) is dict)
    return {k for k, text in settled.items() if text}


def expected(records: list[dict], text_fields: set = frozenset()) -> dict:
    """The model: every field any record has is a column; a record without it reads null; a
    number field with a float anywhere in the stream reads as floats; a struct field a record
    lacks reads null, unless the field is stored as JSON text (``text_fields``): then each
    object reads back as it was written."""
    columns: dict[str, None] = {}
    floats: set = set()
    subfields: dict[str, set] = {}
    for r in records:
        for k, v in r.items():
            columns.setdefault(k, None)
            if type(v) is float:
                floats.add(k)
            if type(v) is dict:
                subfields.setdefault(k, set()).update(v)
    out = {}
    for r in records:
        row = {}
        for k in columns:
            v = r.get(k)
            if k in floats and type(v) is int:
                v = float(v)
            if type(v) is dict and k not in text_fields:
                v = {s: v.get(s) for s in subfields[k]}
            row[k] = v
        out[r["id"]] = row
    return out


def same_rows(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for i, w in want.items():
        g = got[i]
        assert set(g) == set(w), (i, g, w)
        for k, v in w.items():
            gv = g[k]
            if type(v) is dict and type(gv) is str:  # DuckDB reads a struct back as its own type
                gv = json.loads(gv)
            assert gv == v and type(gv) is type(v), (i, k, gv, v)


PROPS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@PROPS
@given(streams())
# {} alone in a field's first batch makes it JSON text; a struct with a field comes later
@example(stream=([{"id": 0, "c": {}}, {"id": 1, "c": None}, {"id": 2, "c": {"x": 0}}], [0, 0, 0], [1], [0]))
def test_any_stream_reads_back_as_one_table(tmp_path_factory, stream):
    records, owner, cuts, order = stream
    path = tmp_path_factory.mktemp("lake")
    s = files_sink(path)
    batches = batches_of(records, owner, cuts, order)
    for b in batches:
        s.write([b])
    want = expected(records, json_text_fields(batches))
    same_rows(by_id(read_dataset(path)), want)
    rows = read_duckdb(path)
    if rows is not None:
        same_rows(by_id(rows), want)
    # every data file carries a subset of the recorded schema's columns, each with its type
    state = json.loads((path / ".kpipe" / "schema.json").read_text())
    common = pq.read_schema(path / "_common_metadata")
    assert common.names == list(state["columns"])
    for f in path.glob("t/*/*.parquet"):
        for field in pq.read_schema(f):
            assert field.name in state["columns"]
            assert narrower(field.type, common.field(field.name).type), (f, field)


def narrower(t, wide) -> bool:
    """A file's type ``t`` is the dataset's ``wide`` or what it was before a widening: no type
    yet (null), an integer before a double, a struct with fewer fields."""
    if t == wide or pa.types.is_null(t):
        return True
    if pa.types.is_integer(t):
        return pa.types.is_floating(wide)
    if pa.types.is_list(t) and pa.types.is_list(wide):
        return narrower(t.value_type, wide.value_type)
    if pa.types.is_struct(t) and pa.types.is_struct(wide):
        return all(wide.get_field_index(f.name) >= 0 and narrower(f.type, wide.field(f.name).type) for f in t)
    return False


def test_an_integer_column_widens_to_double_with_a_warning_recorded(tmp_path, caplog):
    s = files_sink(tmp_path)
    s.write([make_batch([{"id": 0, "v": 1}, {"id": 1, "v": None, "n": None}], 0, topic="t")])
    s.write([make_batch([{"id": 2, "v": 7.25, "n": None}], 0, topic="t", partition=1)])
    s.write([make_batch([{"id": 3, "v": 3, "n": "x"}], 2, topic="t")])
    assert "widened from bigint to double" in caplog.text
    rows = by_id(read_dataset(tmp_path))
    assert [rows[i]["v"] for i in range(4)] == [1.0, None, 7.25, 3.0]
    assert [rows[i]["n"] for i in range(4)] == [None, None, None, "x"]
    state = json.loads((tmp_path / ".kpipe" / "schema.json").read_text())
    assert state["columns"] == {"id": "bigint", "v": "double", "n": "text"}
    assert [(w["column"], w["from"], w["to"]) for w in state["widened"]] == [("v", "bigint", "double")]
    # a null-only column is not a string column: the first file holds it with no type at all
    first = pq.read_schema(next(iter(sorted(tmp_path.glob("t/0/*.parquet")))))
    assert pa.types.is_null(first.field("n").type)
    # _common_metadata holds the dataset's schema, for readers that want it explicitly
    assert pq.read_schema(tmp_path / "_common_metadata").field("v").type == pa.float64()
    table = ds.dataset(str(tmp_path), format="parquet",
                       schema=pq.read_schema(tmp_path / "_common_metadata")).to_table()
    assert table.num_rows == 4


def test_a_crash_between_the_schema_and_the_data_leaves_a_readable_dataset(tmp_path):
    s = files_sink(tmp_path)
    s.write([make_batch([{"id": 0, "v": 1}], 0, topic="t")])
    s.schemas.schema_for([{"id": 1, "v": 2.5, "new": True}])  # stored, then the process dies
    rows = read_dataset(tmp_path)
    assert rows == [{"id": 0, "v": 1.0, "new": None}]
    s2 = files_sink(tmp_path)  # a new process goes on from the wider schema
    s2.write([make_batch([{"id": 1, "v": 2}], 1, topic="t")])
    assert sorted(r["v"] for r in read_dataset(tmp_path)) == [1.0, 2.0]


def at_once(n: int, work) -> None:
    """``work(i)`` for i in 0..n-1, in n threads at once; the first failure is raised here."""
    errors = []

    def run(i):
        try:
            work(i)
        except BaseException as exc:  # raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_concurrent_writers_widen_without_losing_a_column(tmp_path):
    # Four instances (as four `kpipe run` processes would: each its own lock file handle and its
    # own cached copy) write their partitions at once, each bringing its own new fields.
    def work(p):
        s = files_sink(tmp_path)
        for k in range(6):
            s.write([make_batch([{"id": p * 100 + k, f"f{p}_{k}": k, "v": k if k % 2 else k + 0.5}], k,
                                topic="t", partition=p)])

    at_once(4, work)
    state = json.loads((tmp_path / ".kpipe" / "schema.json").read_text())
    assert set(state["columns"]) == {"id", "v"} | {f"f{p}_{k}" for p in range(4) for k in range(6)}
    rows = by_id(read_dataset(tmp_path))
    assert len(rows) == 24 and all(rows[p * 100 + k][f"f{p}_{k}"] == k for p in range(4) for k in range(6))
    assert pq.read_schema(tmp_path / "_common_metadata").names == list(state["columns"])


# -- declared types --------------------------------------------------------------------------

AVRO = {"type": "record", "name": "Order", "fields": [
    {"name": "id", "type": "long"},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}], "default": None},
    {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "note", "type": ["null", "string"], "default": None},
]}
UTC = dt.timezone.utc


def avro_values(n: int, start: int = 0) -> list[dict]:
    """Records as the avro deserializer hands them over (fastavro's logical types)."""
    return [{"id": i, "amount": Decimal(i) / 4 if i % 2 else Decimal(i), "at": dt.datetime(2026, 1, 1, i, tzinfo=UTC),
             "day": None if i == start else dt.date(2026, 1, 1 + i), "ref": uuid.UUID(int=i), "note": None}
            for i in range(start, start + n)]


def test_an_avro_schema_fixes_every_files_types(tmp_path):
    s = files_sink(tmp_path, context=SinkContext("p", "g", value_schema=lambda: AVRO))
    s.write([make_batch(avro_values(1), 0, topic="t")])
    s.write([make_batch(avro_values(3, 1), 1, topic="t")])
    want = pa.schema([("id", pa.int64()), ("amount", pa.decimal128(10, 2)), ("at", pa.timestamp("us", tz="UTC")),
                      ("day", pa.date32()), ("ref", pa.string()), ("note", pa.string())])
    files = sorted(tmp_path.glob("t/0/*.parquet"))
    assert len(files) == 2 and all(pq.read_schema(f).remove_metadata() == want for f in files)
    rows = by_id(read_dataset(tmp_path))
    assert rows[3] == {"id": 3, "amount": Decimal("0.75"), "at": dt.datetime(2026, 1, 1, 3, tzinfo=UTC),
                       "day": dt.date(2026, 1, 4), "ref": str(uuid.UUID(int=3)), "note": None}
    # a value that does not fit the declared decimal is a bad record, at its own index
    with pytest.raises(BadRecordError) as info:
        s.write([make_batch([*avro_values(1, 4), {**avro_values(1, 5)[0], "amount": Decimal("1.005")}], 4,
                            topic="t")])
    assert info.value.index == 1


def test_an_avro_file_keeps_the_declared_writer_schema(tmp_path):
    s = files_sink(tmp_path, "avro", context=SinkContext("p", "g", value_schema=lambda: AVRO))
    s.write([make_batch(avro_values(2), 0, topic="t")])
    with pytest.raises(BadRecordError) as info:  # before: a file with a schema inferred from it
        s.write([make_batch([{"id": 9, "amount": "not a decimal"}], 2, topic="t")])
    assert info.value.index == 0
    for f in tmp_path.glob("t/0/*.avro"):
        with open(f, "rb") as fo:
            assert fastavro.reader(fo).writer_schema["name"] == "Order"


JSON_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "integer"}, "price": {"type": "number"}, "at": {"type": "string", "format": "date-time"},
    "day": {"type": ["string", "null"], "format": "date"}, "tags": {"type": "array", "items": {"type": "string"}},
    "ok": {"type": "boolean"}, "extra": {"type": "object"},
}}


def test_a_json_schema_fixes_every_files_types(tmp_path):
    s = files_sink(tmp_path, context=SinkContext("p", "g", value_schema=lambda: JSON_SCHEMA))
    # the first file has only whole prices and no date: before, int64 and a string column
    s.write([make_batch([{"id": 0, "price": 3, "at": "2026-01-01T10:00:00Z", "day": None, "tags": [], "ok": True,
                          "extra": {"a": 1}}], 0, topic="t")])
    s.write([make_batch([{"id": 1, "price": 7.25, "at": "2026-01-01T11:00:00+01:00", "day": "2026-02-03",
                          "tags": ["x"], "ok": False, "extra": {"b": [1]}}], 0, topic="t", partition=1)])
    rows = by_id(read_dataset(tmp_path))
    assert rows[0]["price"] == 3.0 and rows[1]["price"] == 7.25
    assert rows[0]["at"] == rows[1]["at"] == dt.datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert rows[0]["day"] is None and rows[1]["day"] == dt.date(2026, 2, 3)
    assert rows[1]["tags"] == ["x"] and json.loads(rows[1]["extra"]) == {"b": [1]}
    schema = pq.read_schema(tmp_path / "_common_metadata")
    assert schema.field("price").type == pa.float64() and schema.field("day").type == pa.date32()
    with pytest.raises(BadRecordError):
        s.write([make_batch([{"id": 2, "at": "yesterday"}], 1, topic="t")])


def test_declared_columns_fix_the_types_of_the_rest(tmp_path):
    s = files_sink(tmp_path, columns={"n": "bigint", "amount": "numeric(12,2)", "note": {"type": "varchar(20)"}})
    s.write([make_batch([{"id": 0, "n": None, "amount": 1.5, "note": None}], 0, topic="t")])
    s.write([make_batch([{"id": 1, "n": 5, "amount": Decimal("2.25"), "note": "x", "other": 1.5}], 1, topic="t")])
    first = pq.read_schema(sorted(tmp_path.glob("t/0/*.parquet"))[0])
    assert first.field("n").type == pa.int64() and first.field("amount").type == pa.decimal128(12, 2)
    assert first.field("note").type == pa.string()
    rows = by_id(read_dataset(tmp_path))
    assert rows[0]["amount"] == Decimal("1.50") and rows[1] == {"id": 1, "n": 5, "amount": Decimal("2.25"),
                                                                 "note": "x", "other": 1.5}
    with pytest.raises(BadRecordError):
        s.write([make_batch([{"id": 2, "n": "five"}], 2, topic="t")])
    with pytest.raises(FatalError, match="unknown type"):
        files_sink(tmp_path / "x", columns={"n": "bignum"})


def test_a_declared_type_that_narrows_what_files_hold_stops_the_run(tmp_path):
    files_sink(tmp_path).write([make_batch([{"id": 0, "v": "text"}], 0, topic="t")])
    s = files_sink(tmp_path, columns={"v": "bigint"})
    with pytest.raises(FatalError, match="may only widen"):
        s.write([make_batch([{"id": 1, "v": 1}], 1, topic="t")])


def test_csv_headers_keep_the_datasets_order(tmp_path):
    s = files_sink(tmp_path, "csv")
    s.write([make_batch([{"b": 1, "a": 2}], 0, topic="t")])
    s.write([make_batch([{"c": 3, "a": 4}], 1, topic="t")])
    s.write([make_batch([{"a": 5}], 0, topic="t", partition=1)])
    headers = []
    for f in sorted(tmp_path.glob("t/*/*.csv")):
        with open(f, newline="") as fo:
            headers.append(next(csv.reader(fo)))
    assert headers == [["b", "a"], ["b", "a", "c"], ["b", "a", "c"]]


def test_the_columns_key_validates_in_a_spec(tmp_path):
    from kpipe.spec import SpecError, load_spec

    def problems(text: str) -> str:
        (tmp_path / "spec.yaml").write_text(text)
        try:
            load_spec(str(tmp_path / "spec.yaml"), env={})
        except SpecError as exc:
            return str(exc)
        return ""

    good = "name: o\nsource: {brokers: b, topic: t}\nsink: {type: files, path: out, format: parquet, " \
           "columns: {a: bigint, b: 'numeric(10,2)', c: {type: timestamptz}}}\n"
    assert problems(good) == ""
    assert "format" in problems(good.replace("format: parquet", "format: jsonl"))
    assert "bignum" in problems(good.replace("bigint", "bignum"))


def test_reader_files_sort_before_the_data(tmp_path):
    s = files_sink(tmp_path)
    s.write([make_batch([{"id": 0}], 0, topic="0")])  # a topic named "0" sorts early
    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(tmp_path).parts))
    assert names[0] == "+schema.parquet" and pq.read_table(tmp_path / "+schema.parquet").num_rows == 0
    assert io.BytesIO((tmp_path / "_common_metadata").read_bytes()).read(4) == b"PAR1"


# -- avro without declared types: one remembered writer schema, only widened ----------------


def test_avro_files_share_one_remembered_schema_that_only_widens(tmp_path):
    import avro.datafile
    import avro.io
    import avro.schema

    s = files_sink(tmp_path, "avro")
    s.write([make_batch([{"id": 0, "v": 1}, {"id": 1, "v": None}], 0, topic="t")])
    s.write([make_batch([{"id": 2, "v": 2.5, "w": {"x": 1}}], 0, topic="t", partition=1)])
    s.write([make_batch([{"id": 3, "v": 3, "a-b": "k"}], 2, topic="t")])
    state = json.loads((tmp_path / ".kpipe" / "schema.json").read_text())
    newest = state["avro"]
    assert [f["name"] for f in newest["fields"]] == ["id", "v", "w", "a_b"]
    assert newest["fields"][1]["type"] == ["null", "long", "double"]  # long beside double, exactly
    files = sorted(tmp_path.glob("t/*/*.avro"))
    want = {0: {"id": 0, "v": 1, "w": None, "a_b": None}, 1: {"id": 1, "v": None, "w": None, "a_b": None},
            2: {"id": 2, "v": 2.5, "w": {"x": 1}, "a_b": None}, 3: {"id": 3, "v": 3, "w": None, "a_b": "k"}}
    got = {}
    for f in files:
        with open(f, "rb") as fo:  # fastavro, resolving each file's schema to the newest
            for r in fastavro.reader(fo, reader_schema=newest):
                got[r["id"]] = r
    assert got == want and type(got[3]["v"]) is int
    # the Apache Avro library reads every file with the newest schema as its reader schema
    reader_schema = avro.schema.parse(json.dumps(newest))
    apache = {}
    for f in files:
        with avro.datafile.DataFileReader(open(f, "rb"), avro.io.DatumReader(readers_schema=reader_schema)) as r:
            for rec in r:
                apache[rec["id"]] = rec
    assert apache == want
    # each file was written with the schema the state held then: a prefix of the newest
    for f in files:
        with open(f, "rb") as fo:
            names = [x["name"] for x in fastavro.reader(fo).writer_schema["fields"]]
        assert names == [x["name"] for x in newest["fields"]][:len(names)]


def test_avro_times_and_a_record_that_contains_itself(tmp_path):
    node = {"type": "record", "name": "Node", "fields": [
        {"name": "v", "type": "long"}, {"name": "at", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "next", "type": ["null", "Node"], "default": None}]}
    s = files_sink(tmp_path, context=SinkContext("p", "g", value_schema=lambda: node))
    s.write([make_batch([{"v": 1, "at": dt.time(10, 0, 1), "next": {"v": 2, "at": dt.time(1), "next": None}}], 0,
                        topic="t")])
    (row,) = read_dataset(tmp_path)
    assert row["at"] == dt.time(10, 0, 1)
    assert json.loads(row["next"]) == {"v": 2, "at": "01:00:00", "next": None}

"""``parse: server`` (issue 16): PostgreSQL parses the JSON, kpipe only checks and sends it.

- The runner's check rejects exactly the values the json deserializer rejects, with its words.
- Arbitrary JSON objects land as the client path lands them (read back with psycopg), and a
  record the client path calls bad is bad here too, at the same offset.
- Through the runner: an invalid value in the middle of a batch is dead-lettered at stage
  ``deserialize``, a value that does not fit at stage ``sink``; all-bad and empty batches move
  the offsets; tombstones are skipped as on the client path; a restart goes on exactly once.
- Validation refuses ``parse: server`` where it cannot hold, at the spec's line and column.
"""
from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kit import edit_spec, event, produce_values, read_topic, run_kpipe, seal
from kpipe.api import BadRecordError
from kpipe.deserializers.basic import JsonDeserializer
from kpipe.deserializers.json_check import check_json
from kpipe.kafka_admin import create_topic
from kpipe.transforms.testing import FakeMessage
from sqlkit import dbs, fake_batch, open_sink, write_like_runner, write_sql_spec  # noqa: F401

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- the check ---------------------------------------------------------------------------------

TEXT = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(["\\", "\t", "\n", "\r", '"', "é", "\x00"])),
               max_size=6)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(TEXT, kids, max_size=3)),
                    max_leaves=8)
# bytes that break JSON in the ways the check must see: syntax, UTF-8, numbers past a double
NOISE = st.sampled_from([b"{", b"}", b"[", b'"', b",", b":", b"\\", b"e999", b"E+400", b"9" * 320, b"\xff",
                         b"\xc3", b"\xed\xa0\x80", b"\\ud800", b"\\u00e9", b"nul", b" ", b"\t", b"-", b".5"])


def decode_error(value: bytes):
    try:
        JsonDeserializer({}).deserialize([value])
    except BadRecordError as exc:
        return str(exc)
    return None


@PROPERTY
@given(doc=JSON, cuts=st.lists(st.tuples(st.integers(0, 400), NOISE, st.booleans()), max_size=3))
def test_the_check_rejects_what_the_deserializer_rejects_in_its_words(doc, cuts):
    value = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for at, noise, replace in cuts:
        at %= len(value) + 1
        value = value[:at] + noise + value[at + (len(noise) if replace else 0):]
    found = check_json([None, value])
    want = decode_error(value)
    assert [(i, str(e)) for i, e in found] == ([] if want is None else [(1, want)])


def test_stages_hand_a_parsing_sink_the_checked_bytes(tmp_path):
    from kpipe.runtime.stages import Stages
    from kpipe.spec import load_spec

    spec = write_sql_spec(tmp_path, "127.0.0.1:9", "orders", group="g",
                          sink={"type": "postgres", "url": "postgresql://u@h/d", "table": "t", "parse": "server"})
    raw = [b'{"a": 1}', b'{"a": tru}', None, b'{"a": "\xc3\xa9"}', b'{"a": 1e400}']
    msgs = [FakeMessage(v, offset=i) for i, v in enumerate(raw)]
    out = Stages(load_spec(str(spec), env={})).process("orders", 0, msgs, raw)
    assert out.values == [raw[0], raw[3]] and out.kept == [0, 3] and out.dropped == 1  # the tombstone
    assert [(i, stage, str(e)) for i, stage, e in out.rejected] == [
        (1, "deserialize", decode_error(raw[1])), (4, "deserialize", decode_error(raw[4]))]
    # kpipe test shows decoded values, whatever the sink does with them
    out = Stages(load_spec(str(spec), env={}), sink_parses=False).process("orders", 0, msgs[:1], raw[:1])
    assert out.values == [{"a": 1}]


# -- landing as the client path lands ----------------------------------------------------------

KINDS = {"bigint": st.integers(-(2**63), 2**63 - 1), "double": st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                                                         st.integers(-(2**53), 2**53)),
         "text": st.one_of(TEXT, st.booleans()), "boolean": st.booleans(), "json": JSON}


@st.composite
def shaped(draw):
    """Records whose fields mostly keep one kind (so most writes can be parsed on the server),
    some missing or null, now and then a value of any kind."""
    fields = draw(st.dictionaries(st.sampled_from(["id", "name", "amount", "ok", "doc", "n"]), st.sampled_from(list(KINDS)),
                                  min_size=1, max_size=5))
    records = []
    for _ in range(draw(st.integers(1, 6))):
        record = {}
        for name, kind in fields.items():
            roll = draw(st.integers(0, 11))
            if roll:
                record[name] = None if roll == 1 else draw(JSON) if roll == 2 else draw(KINDS[kind])
        records.append(record)
    return records


def parsed_on_the_server(records: list) -> bool:
    """The rules of kpipe/sinks/sql/server_parse.py, for a write of ``records`` into the columns
    the client path made from them: every value fits its column's server expression."""
    from kpipe.sinks.sql.columns import infer_columns

    if "\\u0000" in json.dumps(records) or re.search(r"-0(\.0*)?(e[-+]?\d+)?(?![\d.e])", json.dumps(records)):
        return False  # no NUL in jsonb; a -0 goes the client path (with a double column)
    types = {c.name: c.type for c in infer_columns(records, set())}
    fits = {"bigint": lambda v: type(v) is int, "double": lambda v: type(v) in (int, float),
            "text": lambda v: type(v) in (str, bool), "boolean": lambda v: type(v) is bool, "json": lambda v: True}
    return all(v is None or fits[types[k]](v) for r in records for k, v in r.items())
WHEN = st.sampled_from(["2026-01-02T03:04:05Z", "2026-01-02", "not a time", 1_700_000_000_000])
META = ["_topic", "_partition", "_offset", "_timestamp", "_key"]


def land(db, records: list, parse: str, columns, then: list | None = None) -> tuple:
    """Write ``records``, then ``then`` (default: ``records`` again), in two batches (the first
    creates the table) through a sink with ``parse``; returns (rejected offsets, rows by offset,
    column types, writes parsed on the server)."""
    table, group = db.table(f"sp{parse[0]}"), db.group(f"sp{parse[0]}")
    n = len(records)
    config = {"parse": parse, "metadata_columns": META, "columns": columns}
    rejected, parsed = [], 0
    for start, batch_records in ((0, records), (n, records if then is None else then)):
        values = [json.dumps(r).encode() if parse == "server" else json.loads(json.dumps(r)) for r in batch_records]
        batch = fake_batch(start, start + n, [(start + i, i, v) for i, v in enumerate(values)])
        sink = open_sink(db, table, group, **config)  # a restart between the two: plans from scratch
        try:
            rejected += [o for _, _, o in write_like_runner(sink, [batch], max_rejects=2 * n + 1)]
            parsed += getattr(sink, "parsed_writes", 0)
        finally:
            sink.close()
    assert db.offsets(group) == {("orders", 0): 2 * n}
    names = [c for c, in db.rows("SELECT column_name FROM information_schema.columns WHERE table_name = :t "
                                 "ORDER BY ordinal_position", t=table)] if db.count(table) or rejected else []
    types = db.rows("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = :t "
                    "ORDER BY ordinal_position", t=table)
    # as text: psycopg reads a jsonb null and SQL NULL alike, and -0.0 equal to 0.0
    texts = ", ".join(f"{db.q(c)}::text" for c in names)
    rows = {r[names.index("_offset")]: r for r in db.driver_rows(f"SELECT {texts} FROM {db.q(table)}")} if names else {}
    return sorted(rejected), rows, types, parsed


@PROPERTY
@given(records=st.one_of(shaped(), st.lists(st.dictionaries(TEXT, JSON, max_size=4), min_size=1, max_size=4)))
def test_arbitrary_objects_land_as_the_client_path_lands_them(dbs, records):
    assume(any(records))  # a first batch of only {} fails on both paths alike (no column to create)
    db = dbs("postgres")
    client = land(db, records, "client", "auto")
    server = land(db, records, "server", "auto")
    assert server[:3] == client[:3]
    if not client[0] and all(k in {"id", "name", "amount", "ok", "doc", "n"} for r in records for k in r):
        # the second write, into the table the first made: on the server exactly when the rules say
        assert server[3] == int(parsed_on_the_server(records)), records


@PROPERTY
@given(records=st.lists(st.fixed_dictionaries({}, optional={"id": JSON, "name": JSON, "ok": JSON, "doc": JSON,
                                                            "when": st.one_of(JSON, WHEN), "n": JSON}),
                        min_size=1, max_size=6))
def test_declared_columns_land_as_the_client_path_lands_them(dbs, records):
    db = dbs("postgres")
    columns = {"id": {"type": "bigint"}, "name": {"type": "varchar(5)"}, "ok": {"type": "boolean"},
               "doc": {"type": "json"}, "when": {"type": "timestamptz"}, "n": {"type": "double"},
               "deep": {"type": "integer", "from": "doc.a"}}
    client = land(db, records, "client", columns)
    server = land(db, records, "server", columns)
    assert server[:3] == client[:3]


def test_plain_records_are_parsed_on_the_server(dbs):
    db = dbs("postgres")
    records = [{"id": i, "name": f"n\t{i}\\", "ok": i % 2 == 0, "doc": {"a": [i, 1.5, None]},
                "amount": i / 7, "when": None} for i in range(50)]
    client = land(db, records, "client", "auto")
    server = land(db, records, "server", "auto")
    assert server[:3] == client[:3] and not server[0]
    assert server[3] == 1  # the second write; the first created the table through the client path


# -- through the runner ----------------------------------------------------------------------------


def test_bad_values_are_rejected_at_their_stage_and_offset_and_a_restart_goes_on(brokers, topic, tmp_path, dbs):
    db = dbs("postgres")
    table, group = db.table("spr"), db.group("spr")
    dlq = f"{topic}.dlq"
    create_topic(brokers, dlq, 1)
    records = [(p, str(i), event(i)) for i in range(400) for p in [i % 3]]  # partition 3: bad only
    records[101] = (2, "bad-json", b'{"id": 101, "name": ')           # invalid JSON, mid-batch
    records[202] = (1, "bad-fit", {"id": 202, "name": "x", "amount": "much"})  # a bigint column's string
    records[250] = (0, "tomb", None)                                       # a tombstone: skipped
    records += [(3, "all-bad", b"nope")] * 3
    produce_values(brokers, topic, records[:10])  # the first run creates the table from these
    seal(brokers, topic, lambda p: event(1000 + p))
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=150,
                          sink={"type": "postgres", "url": db.url, "table": table, "parse": "server",
                                "metadata_columns": ["_partition", "_offset"]})
    edit_spec(spec, errors={"deserialize": "dlq", "sink": "dlq", "dlq": {"topic": dlq}})
    for _ in range(2):  # the second run starts from the stored offsets, with the table there
        proc = run_kpipe("run", str(spec), "--until-caught-up")
        assert proc.returncode == 0, proc.stderr
        produce_values(brokers, topic, records[10:])
        records = records[:10]
        seal(brokers, topic, lambda p: event(2000 + p))
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    ids = sorted(r[0] for r in db.rows(f"SELECT id FROM {db.q(table)}"))
    assert ids == sorted([i for i in range(400) if i not in (101, 202, 250)] + [1000 + p for p in range(4)]
                         + [2000 + p for p in range(4)] * 2)
    assert len(db.rows(f"SELECT DISTINCT _partition, _offset FROM {db.q(table)}")) == len(ids)  # once each
    letters = {m.key(): {k: v.decode() for k, v in m.headers()} for m in read_topic(brokers, dlq, 5)}
    assert {k: h["kpipe.error.stage"] for k, h in letters.items()} == {
        b"bad-json": "deserialize", b"bad-fit": "sink", b"all-bad": "deserialize"}
    assert "invalid JSON" in letters[b"bad-json"]["kpipe.error.message"]
    ends = {p: o for (t, p), o in db.offsets(group).items()}
    assert ends[3] == 3 + 3 and sum(ends.values()) == 400 + 3 + 12  # the all-bad partition moved too


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, where, words", [
    ({"transforms": [{"drop": ["a"]}]}, "transforms", "transforms cannot run"),
    ({"deserializer": {"type": "string"}}, "deserializer.type", "must be json"),
    ({"key_deserializer": {"type": "string"}}, "key_deserializer", "key_deserializer cannot run"),
    ({"mode": "upsert", "key": ["id"]}, "sink.mode", "parse: server writes with mode insert only"),
])
def test_parse_server_is_refused_where_it_cannot_hold(tmp_path, extra, where, words):
    sink = {"type": "postgres", "url": "postgresql://u@127.0.0.1/d", "table": "t", "parse": "server"}
    top = {k: v for k, v in extra.items() if k not in ("mode", "key")}
    sink.update({k: v for k, v in extra.items() if k in ("mode", "key")})
    spec = write_sql_spec(tmp_path, "127.0.0.1:9", "orders", group="g", sink=sink)
    edit_spec(spec, **top)
    proc = run_kpipe("validate", str(spec), timeout=60)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if re.match(re.escape(str(spec)) + r":\d+:\d+: ", line)]
    assert any(f": {where}: " in line and words in line for line in lines), proc.stderr


def test_wide_records_find_new_fields_too(dbs):
    """Past server_parse._FEW_FIELDS columns the unknown-key test is another statement."""
    db = dbs("postgres")
    records = [{f"f{k:02d}": (i * k if k % 2 else f"s{i}") for k in range(40)} for i in range(20)]
    client = land(db, records, "client", "auto")
    server = land(db, records, "server", "auto")
    assert server[:3] == client[:3] and server[3] == 1
    later = [dict(r) for r in records]
    later[7]["late"] = 1  # a field with no column yet: that write goes the client path
    client = land(db, records, "client", "auto", later)
    server = land(db, records, "server", "auto", later)
    assert server[:3] == client[:3] and server[3] == 0


def test_a_kafka_timestamp_past_year_9999_is_reported_as_on_the_client_path(dbs):
    from kpipe.api import Batch

    db = dbs("postgres")
    found = []
    for parse in ("client", "server"):
        table, group = db.table("spt"), db.group("spt")
        sink = open_sink(db, table, group, parse=parse, metadata_columns=["_timestamp"])
        try:
            first = fake_batch(0, 1, [(0, None, {"id": 1} if parse == "client" else b'{"id": 1}')])
            sink.write([first])  # the table
            late = fake_batch(1, 3, [(1, None, b'{"id": 2}'), (2, None, b'{"id": 3}')])
            if parse == "client":
                late = Batch(late.topic, 0, 1, 3, [{"id": 2}, {"id": 3}], late._messages)
            late._messages[1]._timestamp = 253_402_300_800_000  # 10000-01-01
            found.append(write_like_runner(sink, [late]))
        finally:
            sink.close()
        assert sorted(db.rows(f"SELECT id FROM {db.q(table)}")) == [(1,), (2,)]
    assert found[0] == found[1] == [("orders", 0, 2)]


def test_parse_server_needs_postgresql(dbs):
    from kpipe.api import FatalError

    db = dbs("sqlite")
    with pytest.raises(FatalError, match="parse: server needs PostgreSQL"):
        open_sink(db, db.table("sps"), db.group("sps"), parse="server")

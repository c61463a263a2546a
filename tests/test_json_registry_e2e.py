"""``type: json`` with ``registry`` in real ``kpipe run``s on the broker (Tansu): values written by
Confluent's ``JSONSerializer`` land in PostgreSQL and Parquet with the column types the registry's
JSON Schema declares (read back with psycopg and pyarrow); ``validate: registry`` dead-letters
what does not match at stage validate; a registry outage is retried, then exit 3."""
from __future__ import annotations

import datetime as dt
import json

import pyarrow.dataset as pads
import pytest
import yaml
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import write_spec
from kit import produce_values, read_topic, run_kpipe, seal, unique
from kpipe.kafka_admin import create_topic
from schema_registry import schema_registry  # noqa: F401 (a fixture)
from sqlkit import PG_URL, dbs  # noqa: F401 (a fixture)

DRAFT7 = "http://json-schema.org/draft-07/schema#"
V1 = {"$schema": DRAFT7, "title": "Order", "type": "object",
      "properties": {"order_id": {"type": "integer"}, "amount": {"type": "number"},
                     "paid": {"type": "boolean"}, "created_at": {"type": "string", "format": "date-time"},
                     "customer": {"type": "string"}},
      "required": ["order_id", "amount"]}
# v2 adds a field (a nullable one, so v1 rows read as null in it)
V2 = dict(V1, properties={**V1["properties"], "channel": {"type": ["string", "null"]}})
N = 200
BAD_AMOUNT = 7  # this order's amount is a string: JSONSerializer (validate off) writes it, validate rejects it


def order(i: int) -> dict:
    value = {"order_id": i, "amount": "lots" if i == BAD_AMOUNT else i * 1.25, "paid": i % 2 == 0,
             "created_at": f"2026-12-04T10:{i % 60:02d}:00Z", "customer": f"c{i % 7}"}
    return value | ({"channel": f"ch{i % 3}"} if i >= N // 2 else {})


def produce(reg, brokers: str, topic: str) -> None:
    """v1 for the first half, v2 after (as after a producer's deploy), round-robin over the 4
    partitions, one value that is not wire format at all, then one v2 seal record a partition."""
    ctx = SerializationContext(topic, MessageField.VALUE)
    v1, v2 = (JSONSerializer(json.dumps(s), SchemaRegistryClient({"url": reg.url}), conf={"validate": False})
              for s in (V1, V2))
    raw = [(v1 if i < N // 2 else v2)(order(i), ctx) for i in range(N)]
    raw.append(json.dumps({"order_id": N}).encode())  # plain JSON: wrong magic byte
    produce_values(brokers, topic, ((i % 4, str(i), v) for i, v in enumerate(raw)))
    seal(brokers, topic, lambda p: v2(order(10_000 + p), ctx))


def expected_ids() -> list[int]:
    return sorted([i for i in range(N) if i != BAD_AMOUNT] + [10_000 + p for p in range(4)])


def run(tmp_path, brokers: str, topic: str, reg, sink: dict, dlq: str | None = None,
        extra: dict | None = None):
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=unique("jsr"))
    doc = yaml.safe_load(spec.read_text())
    doc["sink"] = sink
    doc["deserializer"] = {"type": "json", "registry": {"url": reg.url, "timeout": "5s"}, "validate": "registry"}
    if dlq:
        doc["errors"] = {"default": "dlq", "dlq": {"topic": dlq}}
    doc.update(extra or {})
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return run_kpipe("run", str(spec), "--until-caught-up", timeout=90), out


def test_into_postgres_with_the_registry_schemas_column_types(brokers, topic, tmp_path, schema_registry, dbs):
    psycopg = pytest.importorskip("psycopg")
    db = dbs("postgres")
    table = db.table("jsr")
    dlq = f"{topic}.dlq"
    create_topic(brokers, dlq, 1)
    produce(schema_registry, brokers, topic)
    proc, _ = run(tmp_path, brokers, topic, schema_registry,
                  {"type": "postgres", "url": PG_URL, "table": table, "evolve": "add_columns"}, dlq=dlq)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql")) as conn:
        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_name = %s", (table,)).fetchall())
        rows = conn.execute(f'SELECT order_id, amount, paid, created_at, customer, channel FROM "{table}" '
                            "ORDER BY order_id").fetchall()
    assert {k: types[k] for k in ("order_id", "amount", "paid", "created_at", "customer", "channel")} == {
        "order_id": "bigint", "amount": "double precision", "paid": "boolean",
        "created_at": "timestamp with time zone", "customer": "text", "channel": "text"}
    assert [r[0] for r in rows] == expected_ids()
    by_id = {r[0]: r for r in rows}
    for i in (0, N // 2 + 1):
        o = order(i)
        assert by_id[i] == (i, o["amount"], o["paid"], dt.datetime.fromisoformat(o["created_at"]),
                            o["customer"], o.get("channel"))
    letters = read_topic(brokers, dlq, 2)
    stages = sorted((dict(m.headers())["kpipe.error.stage"].decode(), dict(m.headers())["kpipe.error.message"].decode(),
                     m.value()) for m in letters)
    assert [s for s, _, _ in stages] == ["deserialize", "validate"], stages
    assert "magic byte 0x7b" in stages[0][1] and "$.amount" in stages[1][1], stages
    # the raw values, as consumed: the plain JSON, and the wire-format v1 order with its header
    assert stages[0][2] == json.dumps({"order_id": N}).encode()
    assert stages[1][2][:5] == b"\x00\x00\x00\x00\x01" and json.loads(stages[1][2][5:]) == order(BAD_AMOUNT)


def test_into_parquet_with_the_registry_schemas_column_types(brokers, topic, tmp_path, schema_registry):
    produce(schema_registry, brokers, topic)
    proc, out = run(tmp_path, brokers, topic, schema_registry,
                    {"type": "files", "path": str(tmp_path / "out"), "format": "parquet"},
                    extra={"errors": {"default": "skip"}})
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pads.dataset(str(out), format="parquet", exclude_invalid_files=True).to_table()
    types = {f.name: str(f.type) for f in table.schema}
    assert {k: types[k] for k in ("order_id", "amount", "paid", "created_at", "customer", "channel")} == {
        "order_id": "int64", "amount": "double", "paid": "bool", "created_at": "timestamp[us, tz=UTC]",
        "customer": "string", "channel": "string"}
    rows = sorted(table.select(["order_id", "amount", "channel"]).to_pylist(), key=lambda r: r["order_id"])
    assert [r["order_id"] for r in rows] == expected_ids()
    assert rows[0] == {"order_id": 0, "amount": 0.0, "channel": None}
    assert rows[N // 2 - 1] == {"order_id": N // 2, "amount": N // 2 * 1.25, "channel": f"ch{N // 2 % 3}"}


def test_a_registry_outage_is_retried_then_fails_closed(brokers, topic, tmp_path, schema_registry):
    produce(schema_registry, brokers, topic)
    schema_registry.stop()  # connections are refused from now on: a dependency down, not bad data
    proc, out = run(tmp_path, brokers, topic, schema_registry,
                    {"type": "files", "path": str(tmp_path / "out"), "format": "jsonl"},
                    extra={"errors": {"default": "skip"},
                           "retry": {"max_attempts": 3, "initial_backoff": "100ms", "max_backoff": "200ms",
                                     "max_elapsed": "0s"}})
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "decoding records: still failing after 3 attempts" in proc.stderr
    assert not list(out.rglob("*.jsonl"))


def test_the_pipelines_example_runs_as_its_comments_say(brokers, topic, schema_registry, dbs):
    """pipelines/orders-json-registry-to-postgres.yaml, as shipped, on this broker and registry."""
    import os

    from kit import ROOT

    psycopg = pytest.importorskip("psycopg")
    db = dbs("postgres")
    table = db.table("orders_json")
    db.groups.append("orders-json-registry-to-postgres")
    dlq = f"{topic}.dlq"
    create_topic(brokers, dlq, 1)
    schema = (ROOT / "schemas" / "order.schema.json").read_text()
    ser = JSONSerializer(schema, SchemaRegistryClient({"url": schema_registry.url}), conf={"validate": False})
    ctx = SerializationContext(topic, MessageField.VALUE)
    orders = [{"order_id": i, "customer": f"c{i:03d}", "country": "Germany" if i == 5 else "DE",
               "amount": i / 4, "created_at": f"2026-11-26T12:00:{i % 60:02d}Z"} for i in range(100)]
    produce_values(brokers, topic, ((i % 4, f"c{i}", ser(o, ctx)) for i, o in enumerate(orders)))
    seal(brokers, topic, lambda p: ser(orders[p], ctx))  # upserts of orders 0..3: no new rows
    env = {**os.environ, "KAFKA_BROKERS": brokers, "ORDERS_TOPIC": topic, "ORDERS_TABLE": f"public.{table}",
           "PGURL": PG_URL, "SCHEMA_REGISTRY_URL": schema_registry.url, "DLQ_TOPIC": dlq}
    proc = run_kpipe("run", "pipelines/orders-json-registry-to-postgres.yaml", "--until-caught-up", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql")) as conn:
        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_name = %s", (table,)).fetchall())
        ids = [r[0] for r in conn.execute(f'SELECT order_id FROM "{table}" ORDER BY order_id').fetchall()]
    assert {k: types[k] for k in ("order_id", "customer", "country", "amount", "created_at")} == {
        "order_id": "bigint", "customer": "text", "country": "text", "amount": "double precision",
        "created_at": "timestamp with time zone"}
    assert ids == [i for i in range(100) if i != 5]
    (letter,) = read_topic(brokers, dlq, 1)
    headers = {k: v.decode() for k, v in letter.headers()}
    assert headers["kpipe.error.stage"] == "validate" and "$.country" in headers["kpipe.error.message"]


def test_keys_through_key_deserializer_in_a_real_run(brokers, topic, tmp_path, schema_registry):
    """Keys written by JSONSerializer (subject TOPIC-key) decode through key_deserializer in a
    run; a key that is not wire format dead-letters its record at stage deserialize."""
    key_schema = {"$schema": DRAFT7, "type": "object", "properties": {"customer": {"type": "string"}},
                  "required": ["customer"]}
    keys = JSONSerializer(json.dumps(key_schema), SchemaRegistryClient({"url": schema_registry.url}))
    values = JSONSerializer(json.dumps(V1), SchemaRegistryClient({"url": schema_registry.url}))
    kctx, ctx = SerializationContext(topic, MessageField.KEY), SerializationContext(topic, MessageField.VALUE)
    n, bad = 40, 13
    items = [(i % 4, keys({"customer": f"c{i}"}, kctx), values({"order_id": i, "amount": i / 2}, ctx))
             for i in range(n)]
    items[bad] = (bad % 4, json.dumps({"customer": "plain"}).encode(), items[bad][2])  # no header: magic 0x7b
    produce_values(brokers, topic, items)
    seal(brokers, topic, lambda p: values({"order_id": 1000 + p, "amount": 0}, ctx))
    dlq = f"{topic}.dlq"
    create_topic(brokers, dlq, 1)
    key_deserializer = {"type": "json", "registry": {"url": schema_registry.url, "timeout": "5s"}}
    proc, out = run(tmp_path, brokers, topic, schema_registry, {"type": "files", "path": str(tmp_path / "out"),
                                                                "format": "jsonl"}, dlq=dlq,
                    extra={"key_deserializer": key_deserializer,
                           "transforms": [{"set": {"key_customer": "_meta.key == null ? null : _meta.key.customer"}}]})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["order_id"]: r for f in out.rglob("*.jsonl") for r in map(json.loads, f.read_bytes().splitlines())}
    assert sorted(rows) == [i for i in range(n) if i != bad] + [1000 + p for p in range(4)]
    assert all(rows[i]["key_customer"] == f"c{i}" for i in range(n) if i != bad)
    assert all(rows[1000 + p]["key_customer"] is None for p in range(4))
    (letter,) = read_topic(brokers, dlq, 1)
    headers = {k: v.decode() for k, v in letter.headers()}
    assert headers["kpipe.error.stage"] == "deserialize" and "magic byte 0x7b" in headers["kpipe.error.message"]
    assert letter.key() == json.dumps({"customer": "plain"}).encode() and json.loads(letter.value()[5:])["order_id"] == bad


def test_v1_and_v2_values_interleaved_keep_every_row_and_column(brokers, topic, tmp_path, schema_registry, dbs):
    """V2 adds 'channel' while V1 values keep arriving, alternating on each partition, the
    seals V1 (so schema(), the latest id decoded, has no channel at the end): PostgreSQL and
    parquet still keep every row, and channel typed as V2 declares it (NULL in V1 rows)."""
    psycopg = pytest.importorskip("psycopg")
    ctx = SerializationContext(topic, MessageField.VALUE)
    v1, v2 = (JSONSerializer(json.dumps(s), SchemaRegistryClient({"url": schema_registry.url})) for s in (V1, V2))
    values = [order(i) | ({"channel": f"ch{i}"} if (i // 4) % 2 else {}) for i in range(48)]  # i < N // 2: no channel
    values[BAD_AMOUNT]["amount"] = 1.0  # the serializers validate here
    produce_values(brokers, topic, ((i % 4, str(i), (v2 if (i // 4) % 2 else v1)(o, ctx)) for i, o in enumerate(values)))
    seals = [{"order_id": 10_000 + p, "amount": 0.5} for p in range(4)]
    seal(brokers, topic, lambda p: v1(seals[p], ctx))
    want = {o["order_id"]: o.get("channel") for o in values + seals}
    db = dbs("postgres")
    table = db.table("jsrev")
    for sink in ({"type": "postgres", "url": PG_URL, "table": table},
                 {"type": "files", "path": str(tmp_path / "out"), "format": "parquet"}):
        proc, _ = run(tmp_path, brokers, topic, schema_registry, sink)
        assert proc.returncode == 0, proc.stderr[-3000:]
    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql")) as conn:
        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_name = %s", (table,)).fetchall())
        pg = dict(conn.execute(f'SELECT order_id, channel FROM "{table}"').fetchall())
    parquet = pads.dataset(str(tmp_path / "out"), format="parquet", exclude_invalid_files=True).to_table()
    assert types["channel"] == "text" and str(parquet.schema.field("channel").type) == "string"
    assert pg == want
    assert {r["order_id"]: r["channel"] for r in parquet.select(["order_id", "channel"]).to_pylist()} == want

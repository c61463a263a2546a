"""``kpipe run`` with the protobuf deserializer on the real broker: values (and keys) written by
Confluent's ProtobufSerializer through the test registry, read back by other people's readers
(orjson for jsonl, pyarrow for parquet, psycopg for PostgreSQL) with the column types the
message descriptor declares."""
from __future__ import annotations

import datetime as dt
import os

import orjson
import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
import yaml
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import write_spec
from kit import ROOT, produce_values, run_kpipe, seal, unique
from schema_registry import schema_registry  # noqa: F401 (a fixture)
from sqlkit import PG_URL, dbs, write_sql_spec  # noqa: F401 (dbs: a fixture)
from test_deserializers_e2e import outage_fails_closed
from test_protobuf import Order, Order2, Refund, order, serializer

N = 200
UTC = dt.timezone.utc


def small(i: int, cls=Order, **extra):
    """``order(i)`` with ``big`` inside a signed 64-bit column (uint64 past 2^63 - 1 fits no
    bigint, and the declared type is bigint)."""
    msg, want = order(i, cls, **extra)
    msg.big = want["big"] = i
    return msg, want


def as_written(value: dict) -> dict:
    """``value`` as the jsonl format writes it (orjson: datetimes as text, bytes as base64)."""
    return orjson.loads(orjson.dumps(value, default=_default))


def _default(obj):
    import base64

    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode()
    raise TypeError(type(obj))


def produce_orders(reg, brokers: str, topic: str, n: int = N, evolve: bool = True) -> list:
    """Produce ``n`` orders, keyed by a Refund message; the producer moves to order.proto v2
    (a field added) half way when ``evolve``. Returns what each value decodes to, in order."""
    v1, v2, keys = serializer(reg, Order), serializer(reg, Order2), serializer(reg, Refund)
    ctx, kctx = SerializationContext(topic, MessageField.VALUE), SerializationContext(topic, MessageField.KEY)
    items, wants = [], []
    for i in range(n):
        new = evolve and i >= n // 2
        msg, want = small(i, Order2, channel=f"c{i % 3}") if new else small(i)
        items.append((i % 4, keys(Refund(order_id=i), kctx), (v2 if new else v1)(msg, ctx)))
        wants.append(want)
    produce_values(brokers, topic, items)
    seals = [small(10_000 + p) for p in range(4)]
    seal(brokers, topic, lambda p: v1(seals[p][0], ctx))
    return wants, [w for _, w in seals]


def deserializer(reg) -> dict:
    return {"type": "protobuf", "registry": {"url": reg.url, "timeout": "5s"}}


def test_registry_values_and_keys_into_jsonl(brokers, topic, tmp_path, schema_registry):
    wants, seals = produce_orders(schema_registry, brokers, topic)
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=unique("pb-jsonl"))
    doc = yaml.safe_load(spec.read_text())
    doc["deserializer"] = deserializer(schema_registry)
    doc["key_deserializer"] = deserializer(schema_registry)
    doc["transforms"] = [{"set": {"key_order": "_meta.key == null ? -1 : _meta.key.order_id"}}]
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    landed: dict = {}
    for f in sorted(out.rglob("*.jsonl")):
        for line in f.read_bytes().splitlines():
            row = orjson.loads(line)
            landed[row["order_id"]] = row
    assert len(landed) == N + 4
    for i, want in enumerate(wants):
        assert landed[want["order_id"]] == as_written(want) | {"key_order": i}
    for want in seals:
        assert landed[want["order_id"]] == as_written(want) | {"key_order": -1}
    assert landed[wants[0]["order_id"]]["created_at"] == "2026-11-26T12:00:00.123456+00:00"


def test_registry_values_into_parquet_with_declared_types(brokers, topic, tmp_path, schema_registry):
    wants, seals = produce_orders(schema_registry, brokers, topic, evolve=False)
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=unique("pb-parquet"), fmt="parquet", max_records=30)
    doc = yaml.safe_load(spec.read_text())
    doc["deserializer"] = deserializer(schema_registry)
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = ds.dataset(str(out), format="parquet").to_table()
    types = {f.name: f.type for f in table.schema}
    money = pa.struct([("currency", pa.string()), ("units", pa.int64()), ("nanos", pa.int32())])
    assert types["order_id"] == pa.int64() and types["big"] == pa.int64()
    assert types["status"] == pa.string() and types["customer"] == pa.string()
    assert types["created_at"] == pa.timestamp("us", tz="UTC")
    assert types["signature"] == pa.binary()
    assert types["discount"] == pa.float64()
    assert types["coupon"] == pa.string() and types["invoice_id"] == pa.string()
    assert types["tags"] == pa.list_(pa.string())
    assert types["lines"] == pa.list_(pa.struct([("sku", pa.string()), ("quantity", pa.int64()),
                                                 ("price", money)]))
    rows = {r["order_id"]: r for r in table.to_pylist()}
    assert len(rows) == N + 4
    for want in wants + seals:
        got = rows[want["order_id"]]
        assert {k: got[k] for k in ("customer", "status", "created_at", "coupon", "signature", "discount",
                                    "big", "tags", "lines")} == \
            {k: want[k] for k in ("customer", "status", "created_at", "coupon", "signature", "discount",
                                  "big", "tags", "lines")}
        assert got.get("card_token") == want.get("card_token") and got.get("invoice_id") == want.get("invoice_id")


def run_sql_spec(tmp_path, brokers: str, topic: str, reg, group: str, sink: dict) -> None:
    """``kpipe run --until-caught-up`` of a sqlkit spec into ``sink``, values via ``reg``; exit 0."""
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, sink=sink)
    doc = yaml.safe_load(spec.read_text())
    doc["deserializer"] = deserializer(reg)
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]


def read_postgres(table: str, columns: str) -> tuple[dict, list]:
    """(column name -> data_type, the rows of ``columns``), read with psycopg itself, not
    through the sink's SQLAlchemy."""
    with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=10) as conn:
        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_name = %s", (table,)).fetchall())
        return types, conn.execute(f'SELECT {columns} FROM "{table}"').fetchall()


def test_registry_values_into_postgres_with_declared_types(brokers, topic, tmp_path, schema_registry, dbs):
    wants, seals = produce_orders(schema_registry, brokers, topic, n=80, evolve=False)
    db = dbs("postgres")
    table = db.table("pb")
    run_sql_spec(tmp_path, brokers, topic, schema_registry, db.group("pb"),
                 {"type": "postgres", "url": db.url, "table": table})
    types, found = read_postgres(table, "order_id, customer, status, created_at, coupon, signature, discount, big, "
                                        "card_token")
    rows = {r[0]: r[1:] for r in found}
    assert types["order_id"] == "bigint" and types["big"] == "bigint"
    assert types["customer"] == "text" and types["status"] == "text" and types["coupon"] == "text"
    assert types["created_at"] == "timestamp with time zone"
    assert types["signature"] == "bytea" and types["discount"] == "double precision"
    assert len(rows) == 84
    for want in wants + seals:
        assert rows[want["order_id"]] == (want["customer"], want["status"], want["created_at"], want["coupon"],
                                          want["signature"], want["discount"], want["big"], want.get("card_token"))


def test_a_registry_outage_is_retried_then_fails_closed(brokers, topic, tmp_path, schema_registry):
    ser, ctx = serializer(schema_registry, Order), SerializationContext(topic, MessageField.VALUE)
    outage_fails_closed(brokers, topic, tmp_path, schema_registry, "protobuf", lambda i: ser(small(i)[0], ctx))


def test_the_pipelines_example_lands_the_types_its_comment_names(brokers, tmp_path):
    from kpipe.kafka_admin import create_topic
    from protokit import classes, compile_texts
    from test_pipelines import postgres_cleanup

    example = classes(compile_texts({"order.proto": (ROOT / "schemas" / "order.proto").read_text()}))
    Example = example["kpipe.example.Order"]
    topic, table = unique("orders-pb"), unique("orders_pb").replace("-", "_")
    create_topic(brokers, topic, 4)
    msgs = []
    for i in range(40):
        m = Example(order_id=i % 20, customer=f"c{i}", country="DE", amount=i / 4, status=2)
        m.created_at.FromDatetime(dt.datetime(2026, 11, 26, 12, 0, i))
        m.lines.add(sku=f"s{i}", quantity=i)
        msgs.append(m)
    produce_values(brokers, topic, ((i % 4, f"k{i % 20}", m.SerializeToString()) for i, m in enumerate(msgs)))
    seal(brokers, topic, lambda p: Example(order_id=100 + p).SerializeToString())
    env = {**os.environ, "KAFKA_BROKERS": brokers, "ORDERS_TOPIC": topic, "ORDERS_TABLE": f"public.{table}",
           "PGURL": PG_URL}
    with postgres_cleanup("orders-protobuf-to-postgres", topic, table):
        proc = run_kpipe("run", "pipelines/orders-protobuf-to-postgres.yaml", "--until-caught-up", env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=10) as conn:
            types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                      "WHERE table_name = %s", (table,)).fetchall())
            rows = dict(conn.execute(f"SELECT order_id, customer FROM {table}").fetchall())
    assert {k: types[k] for k in ("order_id", "customer", "country", "amount", "created_at", "status", "lines")} == {
        "order_id": "bigint", "customer": "text", "country": "text", "amount": "double precision",
        "created_at": "timestamp with time zone", "status": "text", "lines": "jsonb"}
    assert rows == {**{i: f"c{i + 20}" for i in range(20)}, **{100 + p: "" for p in range(4)}}  # upsert: last wins


def test_registry_values_into_delta_with_declared_types(brokers, topic, tmp_path, schema_registry):
    from deltalake import DeltaTable

    wants, seals = produce_orders(schema_registry, brokers, topic, n=60, evolve=False)
    spec = write_spec(tmp_path, brokers, topic, tmp_path / "unused", name=unique("pb-delta"))
    doc = yaml.safe_load(spec.read_text())
    doc["deserializer"] = deserializer(schema_registry)
    doc["sink"] = {"type": "delta", "uri": str(tmp_path / "table")}
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = DeltaTable(str(tmp_path / "table")).to_pyarrow_table()  # delta-rs reads it back
    types = {f.name: f.type for f in table.schema}
    assert types["order_id"] == pa.int64() and types["status"] == pa.string()
    assert types["created_at"] == pa.timestamp("us", tz="UTC") and types["signature"] == pa.binary()
    assert types["discount"] == pa.float64() and types["tags"] == pa.list_(pa.string())
    rows = {r["order_id"]: r for r in table.to_pylist()}
    assert len(rows) == 64
    for want in wants + seals:
        got = rows[want["order_id"]]
        assert (got["created_at"], got["status"], got["signature"], got["coupon"]) == \
            (want["created_at"], want["status"], want["signature"], want["coupon"])


def test_v1_and_v2_values_interleaved_into_postgres_and_parquet(brokers, topic, tmp_path, schema_registry, dbs):
    """order.proto v2 adds 'channel' while v1 values keep arriving, one after the other on each
    partition: schema() follows the latest value, and yet both sinks keep every row and the
    column (NULL for v1 rows), typed as v2 declares it."""
    v1, v2 = serializer(schema_registry, Order), serializer(schema_registry, Order2)
    ctx = SerializationContext(topic, MessageField.VALUE)
    n, wants = 60, {}
    items = []
    for i in range(n):
        msg, want = small(i, Order2, channel=f"c{i}") if (i // 4) % 2 else small(i)
        items.append((i % 4, str(i), (v2 if (i // 4) % 2 else v1)(msg, ctx)))
        wants[want["order_id"]] = want
    produce_values(brokers, topic, items)
    seals = [small(10_000 + p) for p in range(4)]  # v1 last: the declared schema has no channel
    seal(brokers, topic, lambda p: v1(seals[p][0], ctx))
    wants.update({w["order_id"]: w for _, w in seals})
    db = dbs("postgres")
    table = db.table("pbev")
    for sink in ({"type": "postgres", "url": db.url, "table": table},
                 {"type": "files", "path": str(tmp_path / "out"), "format": "parquet"}):
        run_sql_spec(tmp_path, brokers, topic, schema_registry, db.group("pbev"), sink)
    types, found = read_postgres(table, "order_id, channel")
    pg = dict(found)
    assert types["channel"] == "text" and types["order_id"] == "bigint"
    parquet = ds.dataset(str(tmp_path / "out"), format="parquet", exclude_invalid_files=True).to_table()
    assert parquet.schema.field("channel").type == pa.string()
    pq_rows = {r["order_id"]: r["channel"] for r in parquet.select(["order_id", "channel"]).to_pylist()}
    expected = {k: w.get("channel") for k, w in wants.items()}
    assert pg == expected and pq_rows == expected

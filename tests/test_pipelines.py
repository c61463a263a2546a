"""The ready-to-run specs in pipelines/ stay valid and do what their comments say."""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from kit import ROOT, read_topic, run_kpipe
from kpipe.demo import sample_orders
from kpipe.kafka_admin import create_topic, produce

PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml")) + sorted((ROOT / "examples").glob("*.yaml"))
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def test_there_is_a_quickstart():
    assert ROOT / "pipelines" / "quickstart.yaml" in PIPELINES


@pytest.mark.parametrize("spec", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_and_example_validates_and_passes_its_tests(spec: Path):
    proc = run_kpipe("validate", str(spec))
    assert proc.returncode == 0, proc.stderr
    if "\ntests:" in spec.read_text():
        proc = run_kpipe("test", str(spec))
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_orders_to_postgres_keeps_one_row_per_order(brokers):
    topic, table = f"orders-{uuid.uuid4().hex[:8]}", f"orders_{uuid.uuid4().hex[:8]}"
    create_topic(brokers, topic, 4)
    # every order id twice: the second copy (a later offset) must win
    events = list(sample_orders(400))
    produce(brokers, topic, iter(events))
    produce(brokers, topic, ((k, v[:-1] + b',"version":2}') for k, v in events))
    env = {**os.environ, "KAFKA_BROKERS": brokers, "ORDERS_TOPIC": topic, "ORDERS_TABLE": f"public.{table}",
           "PGURL": PG}
    with postgres_cleanup("orders-to-postgres", topic, table) as engine:
        proc = run_kpipe("run", "pipelines/orders-to-postgres.yaml", "--until-caught-up", env=env)
        assert proc.returncode == 0, proc.stderr
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT count(*), count(DISTINCT order_id), min(version), "
                                        f"max(version) FROM {table}").one()
        assert tuple(rows) == (400, 400, 2, 2)


@contextmanager
def postgres_cleanup(group: str, topic: str, table: str):
    """An engine on the test database; afterwards the pipeline's table and its offsets rows go."""
    engine = sa.create_engine(PG)
    try:
        yield engine
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            conn.exec_driver_sql(f"DELETE FROM kpipe_offsets WHERE group_id = '{group}' AND topic = '{topic}'")
        engine.dispose()


def test_orders_with_dlq_sends_bad_orders_to_the_dlq(brokers, tmp_path):
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    create_topic(brokers, topic, 4)
    create_topic(brokers, f"{topic}.dlq", 1)
    events = list(sample_orders(200))
    events[50] = (b"c050", b"not json")                                   # deserialize
    events[60] = (b"c060", events[60][1].replace(b'"country":', b'"land":'))  # validate: no country
    produce(brokers, topic, iter(events))
    out = tmp_path / "out"
    env = {**os.environ, "KAFKA_BROKERS": brokers, "ORDERS_TOPIC": topic, "DLQ_TOPIC": f"{topic}.dlq",
           "OUT": str(out)}
    proc = run_kpipe("run", "pipelines/orders-with-dlq.yaml", "--until-caught-up", env=env)
    assert proc.returncode == 0, proc.stderr
    landed = [json.loads(line) for f in out.rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(o["order_id"] for o in landed) == [i for i in range(200) if i not in (50, 60)]
    assert all(len(o["customer"]) == 64 for o in landed)  # hashed
    letters = read_topic(brokers, f"{topic}.dlq", 2)
    stages = sorted(dict(m.headers())["kpipe.error.stage"].decode() for m in letters)
    assert stages == ["deserialize", "validate"]
    assert run_kpipe("test", "pipelines/orders-with-dlq.yaml").returncode == 0


def test_orders_avro_to_postgres_creates_its_table_from_the_schema(brokers):
    import datetime as dt

    from schema_registry import SchemaRegistry

    topic, table = f"orders-avro-{uuid.uuid4().hex[:8]}", f"orders_avro_{uuid.uuid4().hex[:8]}"
    create_topic(brokers, topic, 4)
    schema = json.loads((ROOT / "schemas" / "order.avsc").read_text())
    with SchemaRegistry() as registry:
        enc = registry.encoder(f"{topic}-value", schema)
        produce(brokers, topic, ((f"c{i}".encode(), enc({
            "order_id": i, "customer": f"c{i}", "country": "DE", "amount": i / 4,
            "created_at": dt.datetime(2026, 11, 26, 12, 0, i % 60, tzinfo=dt.timezone.utc)})) for i in range(300)))
        env = {**os.environ, "KAFKA_BROKERS": brokers, "ORDERS_TOPIC": topic, "ORDERS_TABLE": f"public.{table}",
               "PGURL": PG, "SCHEMA_REGISTRY_URL": registry.url}
        with postgres_cleanup("orders-avro-to-postgres", topic, table) as engine:
            proc = run_kpipe("run", "pipelines/orders-avro-to-postgres.yaml", "--until-caught-up", env=env)
            assert proc.returncode == 0, proc.stderr
            cols = {c["name"]: str(c["type"]).lower() for c in sa.inspect(engine).get_columns(table)}
            assert "timestamp" in cols["created_at"] and "double" in cols["amount"], cols
            with engine.connect() as conn:
                n, keys = conn.exec_driver_sql(f"SELECT count(*), count(DISTINCT _key) FROM {table}").one()
            assert (n, keys) == (300, 300)


def test_orders_to_s3_lands_every_order_once_under_its_country(brokers, tmp_path):
    import gzip

    import boto3

    from kpipe.sinks.s3.testing import MotoServer

    topic, bucket = f"orders-{uuid.uuid4().hex[:8]}", f"lake-{uuid.uuid4().hex[:8]}"
    create_topic(brokers, topic, 4)
    events = list(sample_orders(500))
    produce(brokers, topic, iter(events))
    with MotoServer() as server:
        s3 = boto3.client("s3", endpoint_url=server.url)
        s3.create_bucket(Bucket=bucket)
        env = {**os.environ, "KAFKA_BROKERS": brokers, "ORDERS_TOPIC": topic, "BUCKET": bucket,
               "S3_ENDPOINT": server.url}
        proc = run_kpipe("run", "pipelines/orders-to-s3.yaml", "--until-caught-up", env=env)
        assert proc.returncode == 0, proc.stderr
        landed = {}
        for obj in s3.list_objects_v2(Bucket=bucket, Prefix="raw/orders/dt=")["Contents"]:
            country = obj["Key"].split("/country=")[1].split("/")[0]
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            for line in body.splitlines():
                order = json.loads(line)
                assert order["country"] == country
                landed[order["order_id"]] = landed.get(order["order_id"], 0) + 1
    assert landed == {i: 1 for i in range(500)}

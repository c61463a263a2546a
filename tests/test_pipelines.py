"""The ready-to-run specs in pipelines/ stay valid and do what their comments say."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from kit import ROOT, run_kpipe
from kpipe.demo import sample_orders
from kpipe.kafka_admin import create_topic, produce

PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def test_there_is_a_quickstart():
    assert ROOT / "pipelines" / "quickstart.yaml" in PIPELINES


@pytest.mark.parametrize("spec", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_validates(spec: Path):
    proc = run_kpipe("validate", str(spec))
    assert proc.returncode == 0, proc.stderr


def test_orders_to_postgres_keeps_one_row_per_order(brokers):
    topic, table = f"orders-{uuid.uuid4().hex[:8]}", f"orders_{uuid.uuid4().hex[:8]}"
    create_topic(brokers, topic, 4)
    # every order id twice: the second copy (a later offset) must win
    events = list(sample_orders(400))
    produce(brokers, topic, iter(events))
    produce(brokers, topic, ((k, v[:-1] + b',"version":2}') for k, v in events))
    env = {**os.environ, "KAFKA_BROKERS": brokers, "ORDERS_TOPIC": topic, "ORDERS_TABLE": f"public.{table}",
           "PGURL": PG}
    engine = sa.create_engine(PG)
    try:
        proc = run_kpipe("run", "pipelines/orders-to-postgres.yaml", "--until-caught-up", env=env)
        assert proc.returncode == 0, proc.stderr
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT count(*), count(DISTINCT order_id), min(version), "
                                        f"max(version) FROM {table}").one()
        assert tuple(rows) == (400, 400, 2, 2)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            conn.exec_driver_sql("DELETE FROM kpipe_offsets WHERE group_id = 'orders-to-postgres' "
                                 f"AND topic = '{topic}'")
        engine.dispose()

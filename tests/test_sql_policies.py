"""The SQL sinks under the error policies: a record the database rejects goes to the DLQ and
the rest land; tombstones delete their key's row in upsert mode, in offset order."""
from __future__ import annotations

import pytest

from kit import edit_spec, event, produce_values, read_topic, run_kpipe, seal
from kpipe.kafka_admin import create_topic
from sqlkit import dbs, write_sql_spec  # noqa: F401


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_a_rejected_row_goes_to_the_dlq_and_the_rest_land(brokers, topic, tmp_path, dbs, kind):
    db = dbs(kind)
    table, group = db.table("dlq"), db.group("dlq")
    db.execute(f"CREATE TABLE {db.q(table)} (id bigint NOT NULL, name text, amount bigint CHECK (amount >= 0))")
    dlq = f"{topic}.dlq"
    create_topic(brokers, dlq, 1)
    records = []
    for i in range(2000):
        v = event(i)
        if i == 1234:
            v["amount"] = -1  # violates the CHECK: a data error, narrowed to this record by the sink
        records.append((i % 4, str(i), v))
    where = produce_values(brokers, topic, records)
    seal(brokers, topic, lambda p: event(2000 + p))
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=300,
                          sink={"type": db.sink_type, "url": db.url, "table": table,
                                "columns": {"id": {"type": "bigint"}, "name": {"type": "text"},
                                            "amount": {"type": "bigint"}}})
    edit_spec(spec, errors={"sink": "dlq", "dlq": {"topic": dlq}})
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    ids = [r[0] for r in db.rows(f"SELECT id FROM {db.q(table)}")]
    assert sorted(ids) == [i for i in range(2004) if i != 1234]
    assert db.offsets(group) == {(topic, p): 501 for p in range(4)}
    (letter,) = read_topic(brokers, dlq, 1)
    headers = {k: v.decode() for k, v in letter.headers()}
    assert headers["kpipe.error.stage"] == "sink"
    assert (headers["kpipe.error.partition"], headers["kpipe.error.offset"]) == tuple(map(str, where[1234][:2]))
    assert letter.key() == b"1234"


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_tombstones_delete_their_key_in_offset_order(brokers, topic, tmp_path, dbs, kind):
    db = dbs(kind)
    table, group = db.table("tomb"), db.group("tomb")
    # All to partition 0, so offsets order every operation: k1 is deleted then written again,
    # k2 written then deleted, k3 only written, k4 deleted before it ever existed.
    ops = [("k1", {"k": "k1", "v": 1}), ("k2", {"k": "k2", "v": 2}), ("k1", None), ("k3", {"k": "k3", "v": 3}),
           ("k2", None), ("k1", {"k": "k1", "v": 11}), ("k4", None)]
    produce_values(brokers, topic, [(0, k, v) for k, v in ops * 1])
    seal(brokers, topic, lambda p: {"k": f"seal{p}", "v": 0})
    spec = write_sql_spec(tmp_path, brokers, topic, group=group,
                          sink={"type": db.sink_type, "url": db.url, "table": table, "mode": "upsert",
                                "key": ["k"]})
    edit_spec(spec, tombstones="delete", key_deserializer={"type": "string"})
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    rows = dict(db.rows(f"SELECT k, v FROM {db.q(table)}"))
    assert rows == {"k1": 11, "k3": 3, "seal0": 0, "seal1": 0, "seal2": 0, "seal3": 0}

    # A later run deletes across batches too.
    produce_values(brokers, topic, [(0, "k3", None)])
    seal(brokers, topic, lambda p: {"k": f"seal{p}", "v": 1})
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr
    assert dict(db.rows(f"SELECT k, v FROM {db.q(table)}")) == {"k1": 11, "seal0": 1, "seal1": 1, "seal2": 1,
                                                                "seal3": 1}


def test_tombstone_deletes_need_upsert_mode(brokers, topic, tmp_path, dbs):
    db = dbs("sqlite")
    spec = write_sql_spec(tmp_path, brokers, topic, group=db.group("t"),
                          sink={"type": db.sink_type, "url": db.url, "table": db.table("t")})
    edit_spec(spec, tombstones="delete")
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 2 and "tombstones: delete needs mode: upsert" in proc.stderr

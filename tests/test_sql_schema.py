"""A new table follows the deserializer's schema: here the JSON Schema of deserializer.validate,
so column types do not depend on what the first batch happened to hold."""
from __future__ import annotations

import json

import pytest

from kit import edit_spec, produce_values, run_kpipe, seal
from sqlkit import dbs, write_sql_spec  # noqa: F401

SCHEMA = {
    "type": "object",
    "required": ["order_id"],
    "properties": {
        "order_id": {"type": "integer"},
        "amount": {"type": "number"},                       # the data holds only whole numbers
        "created_at": {"type": "string", "format": "date-time"},
        "tags": {"type": "array"},
        "note": {"type": ["string", "null"]},               # never present in the data
    },
}


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_table_columns_come_from_the_json_schema(brokers, topic, tmp_path, dbs, kind):
    db = dbs(kind)
    table, group = db.table("schema"), db.group("schema")
    (tmp_path / "order.schema.json").write_text(json.dumps(SCHEMA))
    orders = [{"order_id": i, "amount": i * 10, "created_at": "2026-11-26T10:00:00Z", "tags": ["a"]}
              for i in range(40)]
    produce_values(brokers, topic, [(i % 4, str(i), o) for i, o in enumerate(orders)])
    seal(brokers, topic, lambda p: {"order_id": 100 + p, "amount": 1.5, "created_at": "2026-11-26T11:00:00Z"})
    spec = write_sql_spec(tmp_path, brokers, topic, group=group,
                          sink={"type": db.sink_type, "url": db.url, "table": table})
    edit_spec(spec, deserializer={"type": "json", "validate": "order.schema.json"})
    proc = run_kpipe("run", str(spec), "--until-caught-up")
    assert proc.returncode == 0, proc.stderr

    cols = db.columns(table)
    assert list(cols)[:5] == ["order_id", "amount", "created_at", "tags", "note"]
    types = {name: str(c["type"]).lower() for name, c in cols.items()}
    assert "int" in types["order_id"]
    assert any(t in types["amount"] for t in ("double", "float", "real")), types  # not bigint
    assert "timestamp" in types["created_at"] or "datetime" in types["created_at"], types
    assert db.count(table) == 44

"""Issue 15, item 1 end to end: ``kpipe run`` with the Schema Registry's Avro schema, which
evolves mid-stream (a field with a default is added), into the files sink as parquet in many
small files: every file carries the registry's types, and pyarrow.dataset reads the directory as
one table with the new column (before, it took the columns of whichever file came first)."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

from conftest import write_spec
from kit import produce_values, run_kpipe, seal, unique
from schema_registry import schema_registry  # noqa: F401 (a fixture)
from test_deserializers_e2e import ORDER_SCHEMA, order

N = 200


def test_a_registry_schema_that_evolves_lands_as_one_parquet_table(brokers, topic, tmp_path, schema_registry):
    v1 = schema_registry.encoder(f"{topic}-value", ORDER_SCHEMA)
    v2_schema = dict(ORDER_SCHEMA, fields=ORDER_SCHEMA["fields"] + [
        {"name": "channel", "type": ["null", "string"], "default": None}])
    v2 = schema_registry.encoder(f"{topic}-value", v2_schema)
    values = [order(i) if i < N // 2 else order(i) | {"channel": f"c{i % 3}"} for i in range(N)]
    produce_values(brokers, topic, ((i % 4, str(i), v1(v) if i < N // 2 else v2(v)) for i, v in enumerate(values)))
    seals = [order(10_000 + p) | {"channel": "seal"} for p in range(4)]
    seal(brokers, topic, lambda p: v2(seals[p]))
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=unique("dataset"), fmt="parquet", max_records=20)
    doc = yaml.safe_load(spec.read_text())
    doc["deserializer"] = {"type": "avro", "registry": {"url": schema_registry.url, "timeout": "5s"}}
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]

    table = ds.dataset(str(out), format="parquet").to_table()
    want = pa.schema([("order_id", pa.int64()), ("customer", pa.string()), ("country", pa.string()),
                      ("amount", pa.float64()), ("created_at", pa.timestamp("us", tz="UTC")),
                      ("channel", pa.string())])
    assert table.schema.remove_metadata() == want
    rows = {r["order_id"]: r for r in table.to_pylist()}
    assert len(rows) == N + 4
    for v in values + seals:
        assert rows[v["order_id"]] == {**v, "channel": v.get("channel"),
                                       "created_at": v["created_at"].astimezone(dt.timezone.utc)}
    files = sorted(out.glob(f"{topic}/*/*.parquet"))
    assert len(files) > 8
    for f in files:  # the registry's types in every file, the channel column once it exists
        schema = pq.read_schema(f).remove_metadata()
        assert schema in (want, pa.schema(list(want)[:5]))

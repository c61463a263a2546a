"""One end-to-end run per deserializer: produce to the real broker, ``kpipe run --until-caught-up``
into the files sink (jsonl), read the files back and compare with what was produced."""
from __future__ import annotations

import base64
import datetime as dt
import json

import orjson
import yaml
from fastavro import parse_schema

from conftest import write_spec
from kit import ROOT, produce_values, run_kpipe, seal, unique
from schema_registry import encode_wire, schema_registry  # noqa: F401 (a fixture)

ORDER_AVSC = ROOT / "schemas" / "order.avsc"
ORDER_SCHEMA = json.loads(ORDER_AVSC.read_text())
N = 400


def order(i: int) -> dict:
    return {"order_id": i, "customer": f"customer-{i % 37}", "country": ["DE", "FR", "US"][i % 3],
            "amount": round(i * 1.25, 2),
            "created_at": dt.datetime(2026, 11, 26, 12, i % 60, 0, 250000, tzinfo=dt.timezone.utc)}


def as_written(value: dict) -> dict:
    """``value`` as the jsonl format writes it (orjson: datetimes as RFC 3339 text)."""
    return orjson.loads(orjson.dumps(value))


def run_pipeline(tmp_path, brokers, topic, deserializer: dict, values: list, seal_value) -> list:
    """Produce ``values`` (bytes) round-robin with keys, seal, run, return the jsonl lines by
    partition then offset (partition p, offset o holds value 4 * o + p)."""
    produce_values(brokers, topic, ((i % 4, str(i), v) for i, v in enumerate(values)))
    seal(brokers, topic, seal_value)  # the Tansu end-offset quirk: a single-record batch last
    out = tmp_path / "out"
    name = unique("deser")
    spec = write_spec(tmp_path, brokers, topic, out, name=name)
    doc = yaml.safe_load(spec.read_text())
    doc["deserializer"] = deserializer
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_partition: dict = {}
    for f in sorted(out.rglob("*.jsonl")):
        first = int(f.name.split("+")[2])
        rows = [orjson.loads(line) for line in f.read_bytes().splitlines()]
        by_partition.setdefault(int(f.parent.name), {}).update(
            {first + k: row for k, row in enumerate(rows)})
    landed = []
    for p in range(4):
        offsets = by_partition.get(p, {})
        assert sorted(offsets) == list(range(len(offsets))), f"partition {p} has gaps"
        landed.append([offsets[o] for o in range(len(offsets))])
    return landed


def expect(values: list, seals: list) -> list:
    """What each partition should hold: its share of ``values``, then its seal record."""
    return [[v for i, v in enumerate(values) if i % 4 == p] + [seals[p]] for p in range(4)]


def test_json_end_to_end(brokers, topic, tmp_path):
    values = [order(i) | {"created_at": f"2026-11-26T12:00:{i % 60:02d}Z"} for i in range(N)]
    seals = [{"seal": p} for p in range(4)]
    landed = run_pipeline(tmp_path, brokers, topic, {"type": "json"},
                          [orjson.dumps(v) for v in values], lambda p: seals[p])
    assert landed == expect(values, seals)


def test_string_end_to_end(brokers, topic, tmp_path):
    values = [f"line {i}: café \"quoted\" \t tab" for i in range(N)]
    seals = [f"seal {p}" for p in range(4)]
    landed = run_pipeline(tmp_path, brokers, topic, {"type": "string"},
                          [v.encode() for v in values], lambda p: seals[p].encode())
    assert landed == expect(values, seals)


def test_bytes_end_to_end(brokers, topic, tmp_path):
    values = [bytes([i % 256, 0, 255]) + i.to_bytes(4, "big") for i in range(N)]
    seals = [b"\xff" * (p + 1) for p in range(4)]
    landed = run_pipeline(tmp_path, brokers, topic, {"type": "bytes"}, values, lambda p: seals[p])
    # jsonl writes bytes as base64 text
    assert landed == expect([base64.b64encode(v).decode() for v in values],
                            [base64.b64encode(s).decode() for s in seals])


def test_avro_file_end_to_end(brokers, topic, tmp_path):
    parsed = parse_schema(ORDER_SCHEMA)
    values = [order(i) for i in range(N)]
    seals = [order(10_000 + p) for p in range(4)]
    landed = run_pipeline(tmp_path, brokers, topic, {"type": "avro", "schema": str(ORDER_AVSC)},
                          [encode_wire(0, parsed, v)[5:] for v in values],
                          lambda p: encode_wire(0, parsed, seals[p])[5:])
    assert landed == expect([as_written(v) for v in values], [as_written(s) for s in seals])
    assert landed[0][1]["created_at"] == "2026-11-26T12:04:00.250000+00:00"


def test_avro_registry_end_to_end(brokers, topic, tmp_path, schema_registry):
    v1 = schema_registry.encoder(f"{topic}-value", ORDER_SCHEMA)
    v2_schema = dict(ORDER_SCHEMA, fields=ORDER_SCHEMA["fields"] + [
        {"name": "channel", "type": ["null", "string"], "default": None}])
    v2 = schema_registry.encoder(f"{topic}-value", v2_schema)
    # the producer moves to v2 half way through
    values = [order(i) if i < N // 2 else order(i) | {"channel": f"c{i % 3}"} for i in range(N)]
    raw = [v1(v) if i < N // 2 else v2(v) for i, v in enumerate(values)]
    seals = [order(10_000 + p) for p in range(4)]
    landed = run_pipeline(tmp_path, brokers, topic,
                          {"type": "avro", "registry": {"url": schema_registry.url, "timeout": "5s"}},
                          raw, lambda p: v1(seals[p]))
    assert landed == expect([as_written(v) for v in values], [as_written(s) for s in seals])
    assert schema_registry.fetches(1) == 1 and schema_registry.fetches(2) == 1



def test_a_registry_outage_is_retried_then_fails_closed(brokers, topic, tmp_path, schema_registry):
    enc = schema_registry.encoder(f"{topic}-value", ORDER_SCHEMA)
    outage_fails_closed(brokers, topic, tmp_path, schema_registry, "avro", lambda i: enc(order(i)))


def outage_fails_closed(brokers, topic, tmp_path, registry, kind: str, encode) -> None:
    """Produce 40 values (``encode(i)``) and the seals, stop ``registry``, run deserializer
    ``kind`` on it: retried, then exit 3, nothing skipped as bad records and nothing written."""
    produce_values(brokers, topic, ((i % 4, str(i), encode(i)) for i in range(40)))
    seal(brokers, topic, lambda p: encode(100 + p))
    registry.stop()  # connections are refused from now on: a dependency down, not bad data
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=unique("sr-down"))
    doc = yaml.safe_load(spec.read_text())
    doc["deserializer"] = {"type": kind, "registry": {"url": registry.url, "timeout": "2s"}}
    doc["errors"] = {"default": "skip"}  # even so: an outage must never be skipped as bad records
    doc["retry"] = {"max_attempts": 3, "initial_backoff": "100ms", "max_backoff": "200ms", "max_elapsed": "0s"}
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "decoding records: still failing after 3 attempts" in proc.stderr
    assert "skipped" not in proc.stderr.split("consumed")[-1]
    assert not list(out.rglob("*.jsonl"))

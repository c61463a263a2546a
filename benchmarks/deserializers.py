#!/usr/bin/env python
"""Micro-benchmark of decoding and validating one batch of values, in µs per record.

No broker: every case decodes the same in-memory list of N raw values (default 10,000 values
of ~100 bytes, the orders ``bench.py`` produces), with the garbage collector set as the runner
sets it (``gc.freeze()``, ``gc.set_threshold(100_000, 50, 1000)``). Rounds interleave the cases
so that noise from other processes spreads over all of them; the table shows the best round and
the median round.

    .venv/bin/python benchmarks/deserializers.py                 # everything, 10,000 records, 30 rounds
    .venv/bin/python benchmarks/deserializers.py --only json     # json | avro | protobuf | validate
    .venv/bin/python benchmarks/deserializers.py --records 100000 --rounds 10 --json

Cases:
  json      stdlib json.loads, orjson.loads, msgspec.json.Decoder.decode, each once per value;
            kpipe's JsonDeserializer (msgspec, with its tombstone check); kpipe json with a Schema
            Registry (Confluent's 5-byte header, schema cached); plus, for reference only, one decode of all values joined into one
            JSON array (unsafe for kpipe: values that are not one JSON document each can merge)
  avro      schemaless_reader with a BytesIO per value; kpipe's AvroDeserializer (one buffer per
            batch) with a local .avsc and with a Schema Registry (schema cached); fastavro's
            container-file reader over the same data as one block (the floor for fastavro)
  protobuf  the same orders as Protobuf (schemas/order.proto): kpipe's ProtobufDeserializer with a
            .proto (plain messages) and with a Schema Registry (Confluent's ProtobufSerializer's
            wire format, schema cached); for reference, the parse alone (FromString, upb) and
            FromString + json_format.MessageToDict per value, what a naive decoder does
  validate  kpipe's Validator.check on valid values and with 1 % invalid ones, with jsonschema-rs
            answering first (when installed) and with jsonschema only; validate: registry (each value
            against its schema id's schema, read from its header); and jsonschema's iter_errors
            per value, what a naive validator does
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import io
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import orjson  # noqa: E402

from kpipe.deserializers.avro import AvroDeserializer  # noqa: E402
from kpipe.deserializers.basic import JsonDeserializer, json_plugin  # noqa: E402
from kpipe.validation import Validator  # noqa: E402

ORDER_AVSC = ROOT / "schemas" / "order.avsc"
ORDER_JSON_SCHEMA = ROOT / "schemas" / "order.schema.json"


def make_value(i: int) -> bytes:
    """The JSON value ``bench.py`` produces (~100 bytes)."""
    return (b'{"order_id":%d,"customer":"c%03d","country":"%s","amount":%d.%02d,'
            b'"created_at":"2026-11-%02dT%02d:%02d:00Z"}'
            % (i, i % 200, (b"DE", b"FR", b"NL", b"PL", b"SE", b"US")[i % 6], i % 500, i % 100,
               1 + i % 28, i % 24, i % 60))


def json_registry(raw: list):
    """(the values in Confluent's JSON Schema wire format, a json deserializer with a registry
    that has decoded them once, so its schema is cached, and the registry to stop)."""
    from schema_registry import SchemaRegistry

    reg = SchemaRegistry().__enter__()
    sid = reg.register("orders-value", ORDER_JSON_SCHEMA.read_text(), schema_type="JSON")
    wire = [b"\x00" + sid.to_bytes(4, "big") + v for v in raw]
    deserializer = json_plugin.create({"registry": {"url": reg.url}})
    deserializer.deserialize(wire)
    return wire, deserializer, reg


def json_cases(n: int) -> dict:
    import msgspec

    raw = [make_value(i) for i in range(n)]
    loads, dec = json.loads, msgspec.json.Decoder()
    kpipe_json = JsonDeserializer({})
    wire, kpipe_registry, reg = json_registry(raw)
    reg.stop()  # cached: decoding asks it nothing more
    check = [orjson.loads(v) for v in raw]
    oloads, mdecode = orjson.loads, dec.decode
    cases = {
        "json: stdlib json.loads": lambda: [loads(v) for v in raw],
        "json: orjson.loads": lambda: [oloads(v) for v in raw],
        "json: msgspec Decoder.decode": lambda: [mdecode(v) for v in raw],
        "json: kpipe json (msgspec, None check)": lambda: kpipe_json.deserialize(raw),
        "json: kpipe json, registry (cached)": lambda: kpipe_registry.deserialize(wire),
        "json: msgspec, all values as one array (reference)": lambda: dec.decode(b"[" + b",".join(raw) + b"]"),
        "json: orjson, all values as one array (reference)": lambda: orjson.loads(b"[" + b",".join(raw) + b"]"),
    }
    for name, fn in cases.items():
        assert fn() == check, name
    return {"bytes": sum(map(len, raw)) / n, "cases": cases}


def avro_cases(n: int) -> dict:
    from fastavro import parse_schema, reader, schemaless_reader, writer
    from schema_registry import SchemaRegistry, encode_wire

    schema = json.loads(ORDER_AVSC.read_text())
    parsed = parse_schema(schema)
    utc = dt.timezone.utc
    values = [{"order_id": i, "customer": f"c{i % 200:03d}", "country": ("DE", "FR", "NL")[i % 3],
               "amount": i % 500 + (i % 100) / 100,
               "created_at": dt.datetime(2026, 11, 1 + i % 28, i % 24, i % 60, tzinfo=utc)} for i in range(n)]
    plain = [encode_wire(0, parsed, v)[5:] for v in values]
    reg = SchemaRegistry().__enter__()
    wire = [reg.encoder("orders-value", schema)(v) for v in values]
    from_file = AvroDeserializer({"schema": str(ORDER_AVSC)})
    from_registry = AvroDeserializer({"registry": {"url": reg.url}})
    from_registry.deserialize(wire[:1])  # fetch and cache the schema before timing
    container = io.BytesIO()
    writer(container, parsed, values, codec="null", sync_interval=1 << 30)
    container = container.getvalue()
    BytesIO = io.BytesIO
    cases = {
        "avro: schemaless_reader, a BytesIO per value": lambda: [schemaless_reader(BytesIO(v), parsed, None) for v in plain],
        "avro: kpipe avro, schema: file": lambda: from_file.deserialize(plain),
        "avro: kpipe avro, registry (cached)": lambda: from_registry.deserialize(wire),
        "avro: fastavro container reader, one block (reference)": lambda: list(reader(BytesIO(container))),
    }
    for name, fn in cases.items():
        assert fn() == values, name
    reg.stop()
    return {"bytes": sum(map(len, plain)) / n, "cases": cases}


def protobuf_cases(n: int) -> dict:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from google.protobuf import json_format

    from kpipe.deserializers.protobuf import ProtobufDeserializer
    from protokit import classes, compile_texts
    from schema_registry import SchemaRegistry

    proto = ROOT / "schemas" / "order.proto"
    Order = classes(compile_texts({"order.proto": proto.read_text()}))["kpipe.example.Order"]
    utc = dt.timezone.utc
    values = [{"order_id": i, "customer": f"c{i % 200:03d}", "country": ("DE", "FR", "NL")[i % 3],
               "amount": i % 500 + (i % 100) / 100,
               "created_at": dt.datetime(2026, 11, 1 + i % 28, i % 24, i % 60, tzinfo=utc),
               "status": "STATUS_PLACED", "lines": []} for i in range(n)]
    msgs = []
    for v in values:
        m = Order(order_id=v["order_id"], customer=v["customer"], country=v["country"], amount=v["amount"], status=1)
        m.created_at.FromDatetime(v["created_at"])
        msgs.append(m)
    plain = [m.SerializeToString() for m in msgs]
    reg = SchemaRegistry().__enter__()
    ser = ProtobufSerializer(Order, SchemaRegistryClient({"url": reg.url}), {"use.deprecated.format": False})
    ctx = SerializationContext("orders", MessageField.VALUE)
    wire = [ser(m, ctx) for m in msgs]
    from_proto = ProtobufDeserializer({"proto": str(proto), "message": "kpipe.example.Order"})
    from_registry = ProtobufDeserializer({"registry": {"url": reg.url}})
    from_registry.deserialize(wire[:1])  # fetch and cache the schema before timing
    reg.stop()
    parse, to_dict = Order.FromString, json_format.MessageToDict
    cases = {
        "protobuf: kpipe protobuf, proto: file": lambda: from_proto.deserialize(plain),
        "protobuf: kpipe protobuf, registry (cached)": lambda: from_registry.deserialize(wire),
        "protobuf: FromString alone (reference)": lambda: [parse(v) for v in plain],
        "protobuf: FromString + MessageToDict (naive)": lambda: [
            to_dict(parse(v), preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            for v in plain],
    }
    for name in ("protobuf: kpipe protobuf, proto: file", "protobuf: kpipe protobuf, registry (cached)"):
        assert cases[name]() == values, name
    return {"bytes": sum(map(len, plain)) / n, "cases": cases}


def validate_cases(n: int) -> dict:
    values = [orjson.loads(make_value(i)) for i in range(n)]
    some_bad = [dict(v, country="Germany") if i % 100 == 50 else v for i, v in enumerate(values)]
    fast = Validator(str(ORDER_JSON_SCHEMA))
    slow = Validator(str(ORDER_JSON_SCHEMA), accelerate=False)
    naive = slow._validator
    for v in (fast, slow):
        assert v.check(values) == [] and len(v.check(some_bad)) == n // 100
    wire, from_registry, reg = json_registry([make_value(i) for i in range(n)])
    by_id = from_registry.validator()
    assert by_id.check(values, wire) == [] and len(by_id.check(some_bad, wire)) == n // 100
    reg.stop()  # compiled: checking asks it nothing more
    tag = "jsonschema-rs first" if fast.accelerated else "jsonschema-rs NOT INSTALLED"
    cases = {
        f"validate: Validator.check ({tag}), all valid": lambda: fast.check(values),
        f"validate: Validator.check ({tag}), 1 % invalid": lambda: fast.check(some_bad),
        f"validate: registry ({tag}), all valid": lambda: by_id.check(values, wire),
        "validate: Validator.check (jsonschema only), all valid": lambda: slow.check(values),
        "validate: Validator.check (jsonschema only), 1 % invalid": lambda: slow.check(some_bad),
        "validate: jsonschema iter_errors per value (naive)": lambda: [list(naive.iter_errors(x)) for x in values],
    }
    return {"bytes": 0, "cases": cases}


GROUPS = {"json": json_cases, "avro": avro_cases, "protobuf": protobuf_cases, "validate": validate_cases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000, help="values per batch (default 10,000)")
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds per case (default 30)")
    ap.add_argument("--only", choices=sorted(GROUPS), action="append", help="only these groups")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()

    groups = {g: GROUPS[g](args.records) for g in (args.only or GROUPS)}
    cases = {name: fn for g in groups.values() for name, fn in g["cases"].items()}
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)  # as the runner sets it
    times: dict = {name: [] for name in cases}
    for fn in cases.values():  # warm up
        fn()
    for _ in range(args.rounds):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) / args.records * 1e6)
    report = {
        "records": args.records, "rounds": args.rounds, "python": sys.version.split()[0],
        "value_bytes": {g: round(v["bytes"], 1) for g, v in groups.items() if v["bytes"]},
        "us_per_record": {name: {"best": round(min(ts), 3), "median": round(statistics.median(ts), 3)}
                          for name, ts in times.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.records:,} records per batch, {args.rounds} rounds, Python {report['python']}; "
          f"value bytes: {report['value_bytes']}")
    print("| case | best µs/record | median µs/record |\n|---|---:|---:|")
    for name, r in report["us_per_record"].items():
        print(f"| {name} | {r['best']:.2f} | {r['median']:.2f} |")


if __name__ == "__main__":
    main()

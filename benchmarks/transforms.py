#!/usr/bin/env python
"""Cost of each built-in transform: microseconds per record on a run of 10,000 records.

Each record is a ~130-byte JSON object, decoded with orjson first (not measured)::

    {"order_id":17,"customer":{"id":"c017","tier":"gold"},"country":"PL","amount":117.17,
     "qty":3,"created_at":"2026-11-18T17:17:00Z","ts":1795000017000}

A transform is created once through the registry, as the runner does, then ``apply`` runs on
the whole list; the figure is the best of ``--repeat`` runs divided by the record count.

    .venv/bin/python benchmarks/transforms.py                   # every built-in
    .venv/bin/python benchmarks/transforms.py --languages       # + CEL vs JMESPath vs cel-python
    .venv/bin/python benchmarks/transforms.py --output transforms.json   # JSON under results/
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import orjson  # noqa: E402

from kpipe.api import Metadata  # noqa: E402
from kpipe.plugins import registry  # noqa: E402
from kpipe.transforms.testing import FakeMessage  # noqa: E402

CASES = [
    ("select", ["order_id", "amount", "country"]),
    ("select", ["order_id", "customer.tier"]),
    ("drop", ["qty"]),
    ("rename", {"amount": "total_amount"}),
    ("set", {"total": "amount * double(qty)"}),
    ("set", {"topic": "_meta.topic", "offset": "_meta.offset"}),
    ("cast", {"order_id": "string", "qty": "float"}),
    ("flatten", {}),
    ("filter", 'amount > 100.0 && country == "DE"'),
    ("filter", "_meta.offset % 2 == 0"),
    ("parse_timestamp", {"field": "created_at", "to": "epoch_ms"}),
    ("parse_timestamp", {"field": "ts", "format": "epoch_ms", "to": "iso8601"}),
    ("parse_timestamp", {"field": "created_at", "format": "%Y-%m-%dT%H:%M:%SZ", "to": "epoch_ms"}),
    ("mask", ["customer.id"]),
    ("hash", {"fields": ["customer.id"], "salt": "pepper"}),
    ("python", "__main__:tag"),
    ("python", "__main__:tag_with_offset"),
    ("python", {"function": "__main__:tag_all", "batch": True}),
]


def tag(value):
    return {**value, "tagged": True}


def tag_with_offset(value, meta):
    return {**value, "offset": meta.offset}


def tag_all(values, meta):
    return [{**v, "tagged": True} for v in values]


def make_values(n: int) -> list:
    raw = [(b'{"order_id":%d,"customer":{"id":"c%03d","tier":"%s"},"country":"%s","amount":%d.%02d,'
            b'"qty":%d,"created_at":"2026-11-%02dT%02d:%02d:00Z","ts":%d}'
            % (i, i % 200, (b"gold", b"silver")[i % 2], (b"DE", b"FR", b"NL", b"PL", b"SE", b"US")[i % 6],
               i % 500, i % 100, 1 + i % 9, 1 + i % 28, i % 24, i % 60, 1_795_000_000_000 + i * 1000))
           for i in range(n)]
    return [orjson.loads(r) for r in raw], sum(map(len, raw)) / n


def make_meta(n: int) -> Metadata:
    return Metadata("orders", 0, [FakeMessage(None, b"k", None, 1_795_000_000_000 + i, i, "orders", 0)
                                  for i in range(n)])


def best_us(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def bench_transforms(values, meta, repeat) -> list[dict]:
    n, rows = len(values), []
    rows.append({"transform": "(baseline) copy each dict", "config": "",
                 "us": best_us(lambda: [dict(v) for v in values], n, repeat)})
    for name, config in CASES:
        transform = registry().get("transform", name).create(config)
        out = transform.apply(values, meta)
        assert len(out) == n
        rows.append({"transform": name, "config": json.dumps(config),
                     "us": best_us(lambda: transform.apply(values, meta), n, repeat)})
    return rows


def bench_languages(values, repeat) -> list[dict]:
    """The same filter and arithmetic in each candidate language, evaluated per record."""
    import cel

    n, rows = len(values), []
    lang = [("python lambda (baseline, not offered)",
             lambda: [v["amount"] > 100.0 and v["country"] == "DE" for v in values],
             lambda: [v["amount"] * v["qty"] for v in values])]
    f, s = cel.compile('amount > 100.0 && country == "DE"'), cel.compile("amount * double(qty)")
    lang.append(("CEL, common-expression-language, named fields only (kpipe)",
                 lambda: [f.execute({"amount": v["amount"], "country": v["country"]}) for v in values],
                 lambda: [s.execute({"amount": v["amount"], "qty": v["qty"]}) for v in values]))
    lang.append(("CEL, common-expression-language, whole record as context",
                 lambda: [f.execute(v) for v in values], lambda: [s.execute(v) for v in values]))
    try:
        import jmespath
        jf = jmespath.compile("amount > `100` && country == 'DE'")
        js = jmespath.compile("sum([amount, qty])")  # no multiplication in JMESPath: the nearest thing
        lang.append((f"JMESPath {jmespath.__version__} (no arithmetic: sum() stands in)",
                     lambda: [jf.search(v) for v in values], lambda: [js.search(v) for v in values]))
    except ImportError:
        pass
    try:
        import celpy
        env = celpy.Environment()
        cf = env.program(env.compile('amount > 100.0 && country == "DE"'))
        cs = env.program(env.compile("amount * double(qty)"))
        few = values[:1000]  # 100x slower: 1,000 records are plenty
        lang.append(("cel-python 0.5 (pure Python)",
                     lambda: [cf.evaluate(celpy.json_to_cel(v)) for v in few] and None,
                     lambda: [cs.evaluate(celpy.json_to_cel(v)) for v in few] and None))
    except ImportError:
        pass
    for label, filt, arith in lang:
        count = 1000 if label.startswith("cel-python") else n
        rows.append({"language": label, "filter_us": best_us(filt, count, repeat),
                     "arithmetic_us": best_us(arith, count, repeat)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--languages", action="store_true", help="also compare expression languages")
    parser.add_argument("--output", help="write a JSON report to benchmarks/results/FILE")
    args = parser.parse_args()
    values, size = make_values(args.records)
    meta = make_meta(args.records)
    report = {"records": args.records, "avg_json_bytes": round(size, 1), "python": platform.python_version(),
              "transforms": bench_transforms(values, meta, args.repeat)}
    print(f"{args.records} records of ~{size:.0f} JSON bytes, best of {args.repeat}; us/record")
    for row in report["transforms"]:
        print(f"{row['us']:8.2f}  {row['transform']:16s} {row['config']}")
    if args.languages:
        report["languages"] = bench_languages(values, args.repeat)
        print("\nexpression languages, us/record: filter 'amount > 100 && country == \"DE\"', "
              "arithmetic 'amount * qty'")
        for row in report["languages"]:
            print(f"{row['filter_us']:8.2f} {row['arithmetic_us']:8.2f}  {row['language']}")
    if args.output:
        (HERE / "results" / args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

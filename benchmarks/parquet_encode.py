#!/usr/bin/env python
"""Micro-benchmark of encoding one batch of records as Parquet, in records/s and µs per record.

No broker, no disk: each case encodes the same in-memory list of N orders-shaped records (ids,
text, a float amount, an ISO timestamp, a boolean, a sometimes-null note and a list of item
structs) into a BytesIO with snappy, as the files and S3 sinks do per batch. Cases:

  untyped   ParquetWriter without a dataset schema (pyarrow infers each file's types); the only
            case a ``--baseline`` checkout from before the dataset schema (3328ec8) has
  widen     ``dataset.widen`` of the dataset's schema over the batch: what ``SchemaBook`` runs
            on every batch to see that the schema still holds it
  typed     ParquetWriter with the dataset schema (every column at its declared Arrow type)
  batch     widen + typed: a batch's whole cost in the sinks now

    .venv/bin/python benchmarks/parquet_encode.py                       # 100,000 records, 7 rounds
    git worktree add --detach /tmp/before 3328ec8
    .venv/bin/python benchmarks/parquet_encode.py --baseline /tmp/before   # + that checkout's untyped
    .venv/bin/python benchmarks/parquet_encode.py --profile typed         # pyinstrument of one case

Each implementation runs in its own interpreter (``--baseline`` puts DIR first on sys.path);
rounds interleave the cases, and the table shows the best and the median round.
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def orders(n: int) -> list:
    out = []
    for i in range(n):
        out.append({
            "order_id": i, "customer": f"customer-{i % 5000}", "country": ("DE", "FR", "US", "JP")[i % 4],
            "amount": round(i * 0.37 % 1000, 2), "created_at": f"2026-11-26T10:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
            "paid": i % 3 == 0, "note": None if i % 5 else f"note {i}",
            "items": [{"sku": f"sku-{(i + k) % 300}", "qty": 1 + k, "price": 9.99 + k} for k in range(1 + i % 3)],
        })
    return out


def cases(values: list) -> dict:
    """Each case gets a fresh list of the same records: the sinks' per-batch sharing between
    widen and the writer (``kpipe.formats.batchcols``) must not carry over from another case."""
    from kpipe.formats.parquet import ParquetWriter

    def encode(batch, schema=None):
        kw = {} if schema is None else {"schema": schema}
        w = ParquetWriter(io.BytesIO(), "snappy", **kw)
        w.write(batch)
        w.close()

    out = {"untyped": lambda: encode(list(values))}
    try:
        from kpipe.formats.dataset import widen
    except ImportError:
        return out  # a checkout from before the dataset schema
    schema = widen({}, list(values))[0]

    def batch():
        fresh = list(values)
        widen(schema, fresh)
        encode(fresh, schema)

    out["widen"] = lambda: widen(schema, list(values))
    out["typed"] = lambda: encode(list(values), schema)
    out["batch"] = batch
    return out


def worker(args) -> None:
    if args.baseline:
        sys.path.insert(0, args.baseline)
    else:
        sys.path.insert(0, str(ROOT))
    values = orders(args.records)
    run = cases(values)
    gc.freeze()
    times: dict = {name: [] for name in run}
    for _ in range(args.rounds):
        for name, fn in run.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    json.dump({name: sorted(ts) for name, ts in times.items()}, sys.stdout)


def profile(args) -> None:
    sys.path.insert(0, args.baseline or str(ROOT))
    from pyinstrument import Profiler
    fn = cases(orders(args.records))[args.profile]
    fn()
    p = Profiler(interval=0.0005)
    with p:
        for _ in range(3):
            fn()
    print(p.output_text(unicode=True, color=False, show_all=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--baseline", help="a checkout (git worktree) of another commit, measured as well")
    ap.add_argument("--profile", help="print a pyinstrument profile of one case instead")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.profile:
        return profile(args)
    rows = []
    for label, base in [("now", None)] + ([("baseline", args.baseline)] if args.baseline else []):
        cmd = [sys.executable, __file__, "--worker", "--records", str(args.records), "--rounds", str(args.rounds)]
        if base:
            cmd += ["--baseline", os.path.abspath(base)]
        got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, cwd="/").stdout)
        for name, ts in got.items():
            best, median = ts[0], statistics.median(ts)
            rows.append({"impl": label, "case": name, "best_s": best, "median_s": median,
                         "records_per_s": args.records / best, "us_per_record": best / args.records * 1e6})
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        return
    print(f"{args.records:,} records, best and median of {args.rounds} rounds")
    print(f"{'impl':<9} {'case':<8} {'records/s':>11} {'µs/record':>10} {'best s':>8} {'median s':>9}")
    for r in rows:
        print(f"{r['impl']:<9} {r['case']:<8} {r['records_per_s']:>11,.0f} {r['us_per_record']:>10.2f} "
              f"{r['best_s']:>8.3f} {r['median_s']:>9.3f}")


if __name__ == "__main__":
    main()

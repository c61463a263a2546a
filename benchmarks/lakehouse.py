"""Records/s into the table formats beside the parquet files sink, in one run (issue 18).

Each variant is a real sink (the plugin's own factory) given the same batches of decoded
records, as the runner hands them over: 4 partitions, ``--batch`` records each, written one
partition per call, as a run with one partition's batch due at a time writes. Kafka is left out:
what is compared is the sink's cost per record. Variants run interleaved, ``--repeat`` times,
and the median is reported.

    .venv/bin/python benchmarks/lakehouse.py                    # files-parquet, delta, iceberg; 50k batches
    .venv/bin/python benchmarks/lakehouse.py --variants delta --batch 10000 --repeat 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kpipe.api import SinkContext  # noqa: E402
from s3kit import make_batch  # noqa: E402

PARTITIONS = 4


def record(i: int) -> dict:
    return {"id": i, "name": f"event-{i}", "amount": i % 997, "price": (i % 10_000) / 100,
            "country": ("DE", "FR", "NL")[i % 3], "at": 1_795_000_000_000 + i}


def sink_for(variant: str, where: Path):
    """A fresh, opened sink of ``variant`` writing below ``where``."""
    ctx = SinkContext(pipeline="bench", group="bench")
    if variant == "files-parquet":
        from kpipe.sinks.files.sink import FilesSink
        s = FilesSink({"path": str(where / "files"), "format": "parquet", "fsync": True}, ctx)
    elif variant == "delta":
        from kpipe.sinks.delta.sink import DeltaSink
        s = DeltaSink({"uri": str(where / "delta")}, ctx)
    elif variant == "iceberg":  # pyiceberg's SQL catalog on SQLite, the embedded default
        from kpipe.sinks.iceberg.sink import IcebergSink
        s = IcebergSink({"catalog": {"type": "sql", "uri": f"sqlite:///{where}/catalog.db",
                                     "warehouse": f"file://{where}/warehouse"}, "table": "bench.events"}, ctx)
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    s.open()
    return s


def one_run(variant: str, batch: int, rounds: int) -> float:
    """Records/s of ``rounds`` writes per partition of ``batch`` records each."""
    batches = [[make_batch([record(r * batch * PARTITIONS + p * batch + i) for i in range(batch)], r * batch,
                           partition=p) for p in range(PARTITIONS)] for r in range(rounds)]
    with tempfile.TemporaryDirectory(prefix=f"kpipe-bench-{variant}-") as tmp:
        s = sink_for(variant, Path(tmp))
        started = time.perf_counter()
        for per_round in batches:
            for b in per_round:
                s.write([b])
        took = time.perf_counter() - started
        s.close()
    return batch * PARTITIONS * rounds / took


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="files-parquet,delta,iceberg")
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3, help="writes per partition in a run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    runs: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeat):
        for v in variants:
            runs[v].append(one_run(v, args.batch, args.rounds))
    base = statistics.median(runs[variants[0]])
    report = {v: {"records_per_s": round(statistics.median(r)), "runs": [round(x) for x in r],
                  "vs_" + variants[0]: round(statistics.median(r) / base, 2)} for v, r in runs.items()}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"batches of {args.batch:,} records, {PARTITIONS} partitions x {args.rounds} writes, median of {args.repeat}")
        for v, r in report.items():
            print(f"{v:16s} {r['records_per_s']:>10,} records/s   x{r['vs_' + variants[0]]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

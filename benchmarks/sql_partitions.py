"""The SQL sink's cost per message against the number of partitions in a write (issue 16).

A steady trickle over many partitions hands the sink writes of many small batches; a backlog
drain (bench.py) hands it few large ones. This drives ``SqlSink.write`` directly with
P partitions x R records of bench.py's ~100 B records per write, on PostgreSQL, and reports
the client CPU (``time.process_time``, records decoded before the clock starts) and wall time
per message, after a first write that creates the table and the offsets rows.

    .venv/bin/python benchmarks/sql_partitions.py                       # 4x2500, 512x20, 512x4
    .venv/bin/python benchmarks/sql_partitions.py --baseline /tmp/base  # also another checkout's kpipe
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_value(i: int) -> bytes:  # bench.py's record, without importing bench.py (it sets sys.path)
    return (b'{"order_id":%d,"customer":"c%03d","country":"%s","amount":%d.%02d,'
            b'"created_at":"2026-11-%02dT%02d:%02d:00Z"}'
            % (i, i % 200, (b"DE", b"FR", b"NL", b"PL", b"SE", b"US")[i % 6], i % 500, i % 100,
               1 + i % 28, i % 24, i % 60))


def drop(url: str, table: str, group: str) -> None:
    """Drop a run's table and its group's offsets rows."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(sa.text("DELETE FROM kpipe_offsets WHERE group_id = :g"), {"g": group})
    engine.dispose()


def measure(url: str, mode: str, partitions: int, records: int, writes: int) -> tuple[float, float]:
    """(client CPU µs/msg, wall µs/msg) of ``writes`` writes after the first."""
    import orjson

    from kpipe.api import Batch, SinkContext
    from kpipe.sinks.sql.sink import SqlSink

    table, group = f"kpipe_bench_parts_{uuid.uuid4().hex[:8]}", f"bench-parts-{uuid.uuid4().hex[:8]}"
    config = {"url": url, "table": table, "mode": mode, **({"key": ["order_id"]} if mode == "upsert" else {})}
    sink = SqlSink(config, SinkContext(pipeline="bench-parts", group=group))
    sink.open()
    next_offset = [0] * partitions

    def write() -> tuple[float, float]:
        batches = []
        for p in range(partitions):
            start = next_offset[p]
            values = [orjson.loads(make_value(p * 10**9 + start + k)) for k in range(records)]
            batches.append(Batch("bench", p, start, start + records, values, []))
            next_offset[p] += records
        cpu, wall = time.process_time(), time.perf_counter()
        sink.write(batches)
        return time.process_time() - cpu, time.perf_counter() - wall

    try:
        write()
        cpu = wall = 0.0
        for _ in range(writes):
            c, w = write()
            cpu, wall = cpu + c, wall + w
    finally:
        sink.close()
        drop(url, table, group)
    n = partitions * records * writes
    return cpu / n * 1e6, wall / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="4x2500,512x20,512x4",
                    help="comma-separated PARTITIONSxRECORDS per write (default 4x2500,512x20,512x4)")
    ap.add_argument("--writes", type=int, default=10, help="measured writes per shape (default 10)")
    ap.add_argument("--mode", choices=["insert", "upsert"], default="insert")
    ap.add_argument("--pg-url", default=os.environ.get("KPIPE_BENCH_PG_URL",
                                                       "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--baseline", help="also measure the kpipe package in DIR (a git worktree)")
    ap.add_argument("--child", nargs=2, metavar=("P", "R"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        cpu, wall = measure(args.pg_url, args.mode, int(args.child[0]), int(args.child[1]), args.writes)
        print(f"{cpu:.3f} {wall:.3f}")
        return 0
    checkouts = [("this checkout", ROOT)] + ([("baseline", Path(args.baseline).resolve())] if args.baseline else [])
    print(f"| partitions x records per write | kpipe | client CPU µs/msg | wall µs/msg |\n|---|---|---:|---:|")
    for shape in args.shapes.split(","):
        p, r = shape.split("x")
        for name, where in checkouts:  # a fresh interpreter each, with that checkout's kpipe first
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where)] + [os.environ.get("PYTHONPATH", "")])}
            out = subprocess.run([sys.executable, __file__, "--child", p, r, "--writes", str(args.writes),
                                  "--mode", args.mode, "--pg-url", args.pg_url],
                                 env=env, check=True, capture_output=True, text=True).stdout.split()
            print(f"| {p} x {r} | {name} | {float(out[0]):.2f} | {float(out[1]):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Peak RSS of kpipe against a bare consumer, over backlog sizes x value sizes x sinks (issue 16).

    .venv/bin/python benchmarks/memory.py                                   # the issue's grid
    .venv/bin/python benchmarks/memory.py --values 100000 --backlogs 200,600 --sinks files --repeat 2
    .venv/bin/python benchmarks/memory.py --values 100000 --backlogs 600 --trace   # RSS over time

For every value size and backlog (MB of values), a fresh bundled broker (Tansu, in memory) gets
the backlog over 4 partitions, then each measurement runs in a fresh interpreter and reports its
own peak RSS (VmHWM) and its RSS once imported (VmRSS before consuming):

  raw       a bare ``Consumer`` with kpipe's librdkafka settings (the prefetch bounds derived
            from ``batch.max_buffered_bytes``), taking at most ``--raw-chunk-bytes`` of values a
            ``consume`` call (so it holds about one call's values), touching every ``m.value()``;
  raw10k    the same taking ``consume(10000)`` whatever the value size (bench.py's raw);
  files     ``Runner(..., until_caught_up=True)`` into the files sink (jsonl, fsync);
  postgres  the same into the postgres sink (insert, COPY).

The table shows every run's peak, ``/``-separated (``--repeat``, default 2). ``--trace`` samples
the pipelines' RSS, kpipe's estimate of what it holds, and librdkafka's fetch queue every 0.2 s
(printed to stderr; fetchq_size is per partition). Values are bench.py's: ``text`` shape (one
long string) unless ``--shape items``. Allocator experiments go through ``--env``:
``--env MALLOC_ARENA_MAX=2``, ``--env MALLOC_MMAP_THRESHOLD_=131072``, or ``--env MEM_TRIM=0.1``
(``malloc_trim(0)`` every 0.1 s from a thread of the measured process).

Peak RSS is VmHWM, never ru_maxrss: Linux carries the parent's peak into a child's ru_maxrss
across fork and exec, so after producing a 600 MB backlog every child would read >= 600 MiB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench
from bench import DEFAULT_PG_URL, SESSION_TIMEOUT_MS, make_value
from confluent_kafka import Producer

from kpipe.broker import EmbeddedBroker
from kpipe.kafka_admin import create_topic

PARTITIONS = 4

# One measurement, in a fresh interpreter: argv = kind, bootstrap, topic, n, options (JSON).
CHILD = textwrap.dedent('''
    import json, os, sys, threading, time, uuid

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024

    kind, bootstrap, topic, n, opts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
    from confluent_kafka import Consumer
    from kpipe.runtime import Runner
    from kpipe.runtime.consumer import consumer_config, kafka_consumer
    from kpipe.spec import load_spec
    if kind.startswith("postgres"):
        import kpipe.sinks.sql.sink  # noqa: F401  (imported before the baseline RSS, as files' is)
    else:
        import kpipe.sinks.files  # noqa: F401
    spec = load_spec(opts["spec"], env={})
    fetchq = [0]

    def stats(js):
        d = json.loads(js)
        # The partitions' fetch queues forward to the consumer's one: each reports its size.
        fetchq[0] = max([p.get("fetchq_size", 0) for t in d.get("topics", {}).values()
                         for p in t.get("partitions", {}).values()] or [0])

    trace, runner = [], None

    def sample():
        t0 = time.monotonic()
        while True:
            held = None
            if runner is not None and runner.writer is not None:
                try:
                    held = runner._held()
                except Exception:
                    pass
            trace.append((round(time.monotonic() - t0, 1), status("VmRSS:") >> 20,
                          None if held is None else held >> 20, fetchq[0] >> 20))
            time.sleep(0.2)

    if os.environ.get("MEM_TRIM"):  # experiment: glibc's malloc_trim every MEM_TRIM seconds
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        def trim():
            while True:
                libc.malloc_trim(0)
                time.sleep(float(os.environ["MEM_TRIM"]))
        threading.Thread(target=trim, daemon=True).start()
    conf = {**consumer_config(spec), "statistics.interval.ms": 200, "stats_cb": stats}
    base = status("VmRSS:")
    if opts["trace"]:
        threading.Thread(target=sample, daemon=True).start()
    seen = 0
    if kind.startswith("raw"):
        c = Consumer(conf)  # a bare consumer: none of kpipe's process settings
        c.subscribe([topic])
        count = 10_000 if kind == "raw10k" else max(1, opts["raw_chunk_bytes"] // opts["value_bytes"])
        deadline = time.monotonic() + 300
        while seen < n and time.monotonic() < deadline:
            for m in c.consume(min(count, 10_000), 1.0):
                if m.error() is None:
                    m.value()
                    seen += 1
        c.close()
    else:
        runner = Runner(spec, until_caught_up=True, consumer_factory=lambda c: kafka_consumer({**c, **conf}))
        result = runner.run()
        if result.exit_code:
            sys.exit(f"exit {result.exit_code}: {result.reason}")
        seen = result.written
    print(json.dumps({"seen": seen, "base_mib": base >> 20, "peak_mib": status("VmHWM:") >> 20,
                      "trace": trace}))
''')


def produce(bootstrap: str, topic: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 100, "batch.size": 1_000_000,
                  "queue.buffering.max.kbytes": 1_048_576, "acks": 1})
    for i in range(n):
        while True:
            try:
                p.produce(topic, make_value(i), partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(120):
        raise RuntimeError("messages left unproduced")


def spec_file(tmp: Path, kind: str, bootstrap: str, topic: str, args) -> Path:
    if kind == "postgres":
        sink = {"type": "postgres", "url": args.pg_url, "table": f"kpipe_mem_{uuid.uuid4().hex[:8]}",
                "mode": "insert", "columns": "auto"}
    else:
        sink = {"type": "files", "path": str(tmp / f"out-{uuid.uuid4().hex[:8]}"), "format": "jsonl", "fsync": True}
    doc = {"name": f"mem-{kind}", "source": {
        "brokers": bootstrap, "topic": topic, "group": f"mem-{kind}-{uuid.uuid4().hex[:8]}", "start": "earliest",
        "options": {"session.timeout.ms": SESSION_TIMEOUT_MS, **args.option}},
        "deserializer": {"type": "json"}, "sink": sink,
        "batch": {"max_records": 10000, "max_bytes": "16MiB", "max_age": "5s",
                  **({"max_buffered_bytes": args.max_buffered_bytes} if args.max_buffered_bytes else {})}}
    path = tmp / f"spec-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(doc))
    return path


def drop_table(spec: Path, pg_url: str) -> None:
    doc = json.loads(spec.read_text())
    if doc["sink"]["type"] != "postgres":
        return
    with bench._pg_connect(pg_url) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{doc["sink"]["table"]}"')
        conn.execute("DELETE FROM kpipe_offsets WHERE group_id = %s", (doc["source"]["group"],))


def measure(kind: str, bootstrap: str, topic: str, n: int, value_bytes: int, tmp: Path, args) -> dict:
    spec = spec_file(tmp, "postgres" if kind == "postgres" else "files", bootstrap, topic, args)
    opts = {"spec": str(spec), "trace": args.trace, "value_bytes": value_bytes,
            "raw_chunk_bytes": args.raw_chunk_bytes}
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, kind, bootstrap, topic, str(n), json.dumps(opts)],
                              capture_output=True, text=True, timeout=900, env=args.env)
    finally:
        drop_table(spec, args.pg_url)
    if proc.returncode:
        raise RuntimeError(f"{kind} failed: {proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    if row["seen"] != n:
        raise RuntimeError(f"{kind}: {row['seen']} of {n} messages")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", default="100,100000", help="value sizes in bytes (comma-separated)")
    ap.add_argument("--backlogs", default="100,200,600", help="backlog sizes in MB of values (comma-separated)")
    ap.add_argument("--sinks", default="raw,files,postgres", help="any of raw, raw10k, files, postgres")
    ap.add_argument("--shape", default="text", choices=("text", "items"), help="bench.py's --value-shape")
    ap.add_argument("--repeat", type=int, default=2, help="runs per cell; the highest peak is reported")
    ap.add_argument("--raw-chunk-bytes", type=int, default=8 << 20,
                    help="raw: values per consume call, in bytes (kpipe's default: an eighth of 64 MiB)")
    ap.add_argument("--max-buffered-bytes", help="the pipelines' batch.max_buffered_bytes (default: kpipe's)")
    ap.add_argument("-X", dest="option", action="append", default=[], help="librdkafka KEY=VALUE for every consumer")
    ap.add_argument("--pg-url", default=DEFAULT_PG_URL)
    ap.add_argument("--trace", action="store_true", help="print RSS / held / fetch queue (MiB) over time")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE in the measured processes' environment")
    ap.add_argument("--output", help="JSON results under benchmarks/results/")
    args = ap.parse_args()
    args.option = dict(kv.split("=", 1) for kv in args.option)
    args.env = {**os.environ, **dict(kv.split("=", 1) for kv in args.env)}
    sinks = args.sinks.split(",")
    bench.VALUE_SHAPE = args.shape
    rows = []
    with tempfile.TemporaryDirectory(prefix="kpipe-mem-") as tmp:
        for value_bytes in map(int, args.values.split(",")):
            bench.VALUE_BYTES = value_bytes if value_bytes > 120 else 0
            real = len(make_value(123_456))
            for backlog in map(int, args.backlogs.split(",")):
                n = backlog * 1_000_000 // real
                broker = EmbeddedBroker().start()
                try:
                    topic = f"mem-{uuid.uuid4().hex[:8]}"
                    create_topic(broker.bootstrap, topic, PARTITIONS)
                    produce(broker.bootstrap, topic, n)
                    for kind in sinks:
                        runs = []
                        for _ in range(args.repeat):
                            row = measure(kind, broker.bootstrap, topic, n, real, Path(tmp), args)
                            runs.append(row)
                            if args.trace:
                                print(f"{kind} {n} x {real} B: t s, RSS, held, fetchq (MiB):",
                                      row["trace"], file=sys.stderr)
                        out = {"value_bytes": real, "backlog_mb": backlog, "messages": n, "what": kind,
                               "peak_mib": max(r["peak_mib"] for r in runs),
                               "peaks_mib": [r["peak_mib"] for r in runs],
                               "imported_mib": min(r["base_mib"] for r in runs)}
                        rows.append(out)
                        print(json.dumps(out), file=sys.stderr, flush=True)
                finally:
                    broker.stop()
    print(table(rows, sinks))
    if args.output:
        (HERE / "results" / args.output).write_text(json.dumps({
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": sys.argv[1:],
            "shape": args.shape, "rows": rows}, indent=1))
    return 0


def table(rows: list, sinks: list) -> str:
    lines = ["| values | backlog | " + " | ".join(f"{s} peak MiB" for s in sinks) + " |",
             "|---|---:|" + "---:|" * len(sinks)]
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["value_bytes"], r["backlog_mb"], r["messages"]), {})[r["what"]] = r
    for (vb, mb, n), by in cells.items():
        lines.append(f"| {n:,} x {vb:,} B | {mb} MB | " + " | ".join(
            "/".join(map(str, by[s]["peaks_mib"])) if s in by else "-" for s in sinks) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""End-to-end latency under a fixed produce rate: how long after a message is produced it is
readable in the sink, for kpipe with several ``batch.max_age`` settings, beside a bare consumer
in the same run.

Each variant gets its own topic and group. The consumer side starts first (``kpipe run SPEC`` as
a separate process, as an operator runs it; or the raw consumer in a child interpreter), the
script waits for it to join, then produces at a fixed rate for ``--seconds``, each value carrying
its send time (``sent_us``, wall clock, µs). Landing time:
- raw: the wall clock when ``consume()`` returned the message;
- postgres: ``clock_timestamp()`` of the row's insert (a column default of a pre-created table;
  the COPY's transaction commits right after, with the offsets);
- files: the mtime of the published file that holds the record (files appear whole, by rename).
The first ``--warmup`` seconds of messages are left out. Reported: p50, p90, p99, max, in ms.

    .venv/bin/python benchmarks/latency.py                                  # postgres, 20k msg/s
    .venv/bin/python benchmarks/latency.py --sink files --max-age 200ms,1s,default
    .venv/bin/python benchmarks/latency.py --rate 5000 --seconds 30 --json
    .venv/bin/python benchmarks/latency.py -X fetch.wait.max.ms=50           # both sides
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer  # noqa: E402

from kpipe.kafka_admin import create_topic  # noqa: E402

SESSION_TIMEOUT_MS = 6000
PG_URL = os.environ.get("KPIPE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def say(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def percentiles(lat_ms: list[float]) -> dict:
    lat = sorted(lat_ms)
    if not lat:
        return {"n": 0}

    def q(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1)
    return {"n": len(lat), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": round(lat[-1], 1)}


def value(i: int) -> bytes:
    return (b'{"order_id":%d,"customer":"c%03d","country":"DE","amount":%d.%02d,"sent_us":%d}'
            % (i, i % 200, i % 500, i % 100, int(time.time() * 1e6)))


def produce_at_rate(bootstrap: str, topic: str, partitions: int, rate: int, seconds: float) -> int:
    """Produce ``rate`` msg/s for ``seconds``, in 10 ms steps; returns how many were sent."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1, "enable.idempotence": False})
    step = 0.01
    per_step = max(1, round(rate * step))
    t0 = time.perf_counter()
    i = 0
    while True:
        due = t0 + (i // per_step) * step
        now = time.perf_counter()
        if now - t0 >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        for _ in range(per_step):
            p.produce(topic, value(i), partition=i % partitions)
            i += 1
        p.poll(0)
    if p.flush(60):
        raise RuntimeError("undelivered messages")
    return i


# --- the consumer sides -----------------------------------------------------------------------


def raw_child(bootstrap: str, topic: str, options: dict, n_expected_file: str, out: str) -> int:
    """A bare consumer: records each message's latency until told how many to expect and all came."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-raw-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": SESSION_TIMEOUT_MS, **options})
    c.subscribe([topic])
    sent, landed = [], []
    expected = None
    deadline = None
    while True:
        msgs = c.consume(10000, 0.1)
        now = time.time()
        for m in msgs:
            if m.error() is None:
                v = m.value()
                k = v.rindex(b'"sent_us":') + 10
                sent.append(int(v[k:v.index(b"}", k)]))
                landed.append(now)
        if expected is None and os.path.exists(n_expected_file):
            expected = int(Path(n_expected_file).read_text())
            deadline = time.time() + 60
        if expected is not None and (len(sent) >= expected or time.time() > deadline):
            break
    c.close()
    Path(out).write_text(json.dumps({"sent_us": sent, "landed": landed}))
    return 0


def pg_prepare(table: str) -> None:
    import psycopg
    with psycopg.connect(_libpq(PG_URL), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (order_id bigint, customer text, country text, amount numeric,"
                     f" sent_us bigint, landed timestamptz DEFAULT clock_timestamp())")


def pg_landed(table: str, drop: bool) -> tuple[list[int], list[float]]:
    import psycopg
    with psycopg.connect(_libpq(PG_URL), autocommit=True) as conn:
        rows = conn.execute(f"SELECT sent_us, extract(epoch FROM landed)::float8 FROM {table}").fetchall()
        if drop:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute("DELETE FROM kpipe_offsets WHERE topic LIKE 'lat-%'")
    return [r[0] for r in rows], [r[1] for r in rows]


def pg_count(table: str) -> int:
    import psycopg
    with psycopg.connect(_libpq(PG_URL), autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def files_landed(out: Path) -> tuple[list[int], list[float]]:
    sent, landed = [], []
    for f in out.rglob("*.jsonl"):
        mtime = f.stat().st_mtime
        for line in f.read_bytes().splitlines():
            sent.append(json.loads(line)["sent_us"])
            landed.append(mtime)
    return sent, landed


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def write_spec(tmp: Path, bootstrap: str, topic: str, sink: str, max_age: str, table: str, out: Path,
               options: dict) -> Path:
    if sink == "postgres":
        sink_doc = {"type": "postgres", "url": PG_URL, "table": table, "mode": "insert", "columns": "auto"}
    else:
        sink_doc = {"type": "files", "path": str(out), "format": "jsonl", "fsync": True}
    doc = {"name": f"lat-{sink}", "source": {"brokers": bootstrap, "topic": topic,
                                             "group": f"lat-{uuid.uuid4().hex[:8]}", "start": "earliest",
                                             "options": {"session.timeout.ms": SESSION_TIMEOUT_MS, **options}},
           "deserializer": {"type": "json"}, "sink": sink_doc}
    if max_age != "default":
        doc["batch"] = {"max_age": max_age}
    path = tmp / f"spec-{sink}-{max_age}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_variant(name: str, args, bootstrap: str, tmp: Path) -> dict:
    topic = f"lat-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, args.partitions)
    table = f"lat_{uuid.uuid4().hex[:8]}"
    out = tmp / f"out-{topic}"
    expected_file, raw_out = tmp / f"{topic}.n", tmp / f"{topic}.raw.json"
    if name == "raw":
        proc = subprocess.Popen([sys.executable, __file__, "--child-raw", str(expected_file), str(raw_out),
                                 "--topic", topic, "--brokers", bootstrap,
                                 *[f"-X{k}={v}" for k, v in args.options.items()]])
    else:
        max_age = name.split("=", 1)[1]
        if args.sink == "postgres":
            pg_prepare(table)
        spec = write_spec(tmp, bootstrap, topic, args.sink, max_age, table, out, args.options)
        proc = subprocess.Popen([sys.executable, "-m", "kpipe", "run", str(spec)],
                                stderr=subprocess.DEVNULL if not args.verbose else None)
    time.sleep(args.join_wait)  # the group join (about half of session.timeout.ms) happens here
    t_start = time.time()
    n = produce_at_rate(bootstrap, topic, args.partitions, args.rate, args.seconds)
    expected_file.write_text(str(n))
    if name == "raw":
        proc.wait(timeout=120)
        data = json.loads(raw_out.read_text())
        sent, landed = data["sent_us"], data["landed"]
    else:
        deadline = time.time() + 120
        while time.time() < deadline:
            got = pg_count(table) if args.sink == "postgres" else len(files_landed(out)[0])
            if got >= n:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        sent, landed = pg_landed(table, drop=True) if args.sink == "postgres" else files_landed(out)
    warm = (t_start + args.warmup) * 1e6
    lat = [(l_ - s / 1e6) * 1000 for s, l_ in zip(sent, landed) if s >= warm]
    row = {"variant": name, "sink": "-" if name == "raw" else args.sink, "produced": n, "landed": len(sent),
           **percentiles(lat)}
    say(f"  {name:<22} {row}")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sink", choices=["postgres", "files"], default="postgres")
    ap.add_argument("--rate", type=int, default=20_000, help="messages per second produced (default 20000)")
    ap.add_argument("--seconds", type=float, default=15, help="how long to produce (default 15)")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of messages left out at the start")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--max-age", default="200ms,default",
                    help="comma-separated batch.max_age settings, 'default' = the spec default")
    ap.add_argument("--no-raw", action="store_true")
    ap.add_argument("--join-wait", type=float, default=8.0, help="seconds to wait for the consumer to join")
    ap.add_argument("--brokers", help="bootstrap servers (default: start the bundled Tansu)")
    ap.add_argument("-X", dest="option", action="append", default=[], metavar="KEY=VALUE",
                    help="librdkafka setting for the raw consumer and the pipelines' source.options")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--child-raw", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.options = {}
    for kv in args.option:
        key, sep, val = kv.partition("=")
        if not sep:
            ap.error(f"-X wants KEY=VALUE, got {kv!r}")
        args.options[key] = int(val) if val.lstrip("-").isdigit() else val
    if args.child_raw:
        return raw_child(args.brokers, args.topic, args.options, *args.child_raw)

    broker = None
    if args.brokers:
        bootstrap = args.brokers
    else:
        from kpipe.broker import EmbeddedBroker
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="kpipe-latency-") as t:
            variants = ([] if args.no_raw else ["raw"]) + [f"max_age={a.strip()}" for a in args.max_age.split(",")]
            say(f"{args.rate:,} msg/s for {args.seconds:g} s over {args.partitions} partitions into {args.sink}")
            for name in variants:
                rows.append(run_variant(name, args, bootstrap, Path(t)))
    finally:
        if broker is not None:
            broker.stop()
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'variant':<22} {'landed':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for r in rows:
            print(f"{r['variant']:<22} {r['landed']:>8} {r.get('p50', '-'):>8} {r.get('p90', '-'):>8} "
                  f"{r.get('p99', '-'):>8} {r.get('max', '-'):>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

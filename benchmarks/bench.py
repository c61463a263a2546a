#!/usr/bin/env python
"""Throughput of the kpipe files pipeline against a plain confluent_kafka consumer.

One run: start the bundled Tansu broker (or use ``--brokers``), create a topic, produce N JSON
messages of ~100 bytes (not measured), then measure, each with a fresh consumer group:

  raw      a bare ``Consumer.consume(10000)`` loop touching ``m.value()`` of every message;
  json     ``Runner(spec, until_caught_up=True).run()`` with the files sink (jsonl, fsync);
  string   the same with the ``string`` deserializer;
  bytes    the same with the ``bytes`` deserializer (values written as base64 JSON strings).

Clocks start when the first non-empty chunk comes back from ``consume`` (so the group join,
~3 s under Tansu with session.timeout.ms=6000, is excluded and reported apart) and stop when
the last message has been handled: for the pipeline, when the loop returns, i.e. after the last
file is fsynced and its offsets committed; ``consumer.close()`` is reported apart. CPU is
``time.process_time()`` of this process (all threads, librdkafka's included); the broker's CPU
is read from /proc when it is the embedded one.

    .venv/bin/python benchmarks/bench_files.py                  # 1,000,000 messages
    .venv/bin/python benchmarks/bench_files.py --messages 200000 --profile
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import confluent_kafka  # noqa: E402
import yaml  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402

import kpipe.runtime.runner as runner_mod  # noqa: E402
from kpipe.kafka_admin import create_topic  # noqa: E402
from kpipe.runtime import Runner  # noqa: E402
from kpipe.sinks.files.sink import parse_name  # noqa: E402
from kpipe.spec import load_spec  # noqa: E402

RESULTS = HERE / "results"
SESSION_TIMEOUT_MS = 6000
CHUNK = 10_000
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- helpers ---------------------------------------------------------------------------------

def say(*a):
    print(*a, file=sys.stderr, flush=True)


class BrokerCPU:
    """CPU seconds used so far by the embedded broker process (Linux /proc), else None."""

    def __init__(self, pid: int | None):
        self.pid = pid

    def __call__(self) -> float | None:
        if self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        except (OSError, IndexError, ValueError):
            return None


def make_value(i: int) -> bytes:
    # ~100 bytes of realistic-looking JSON, a little varied so nothing is trivially repetitive.
    return (b'{"order_id":%d,"customer":"c%03d","country":"%s","amount":%d.%02d,'
            b'"created_at":"2026-11-%02dT%02d:%02d:00Z"}'
            % (i, i % 200, (b"DE", b"FR", b"NL", b"PL", b"SE", b"US")[i % 6], i % 500, i % 100,
               1 + i % 28, i % 24, i % 60))


def produce_all(bootstrap: str, topic: str, n: int, partitions: int, compression: str) -> float:
    failures = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(err)

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 100, "batch.size": 1_000_000,
                  "batch.num.messages": 100_000, "queue.buffering.max.messages": 2_000_000,
                  "queue.buffering.max.kbytes": 1_048_576, "compression.type": compression,
                  "enable.idempotence": False, "acks": 1})
    t0 = time.perf_counter()
    produce = p.produce
    for i in range(n):
        while True:
            try:
                produce(topic, make_value(i), partition=i % partitions, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        if i % 50_000 == 0:
            p.poll(0)
    remaining = p.flush(120)
    elapsed = time.perf_counter() - t0
    del p
    gc.collect()
    if failures or remaining:
        raise RuntimeError(f"{len(failures)} deliveries failed, {remaining} undelivered: {failures[:3]}")
    return elapsed


def result_row(what: str, n: int, join: float, wall: float, cpu: float, close: float,
               broker_cpu: float | None, **extra) -> dict:
    row = {"what": what, "key": extra.pop("key"), "messages": n, "join_s": round(join, 3), "wall_s": round(wall, 3),
           "msg_per_s": round(n / wall) if wall > 0 else None,
           "cpu_s": round(cpu, 3), "cpu_us_per_msg": round(cpu / n * 1e6, 3),
           "close_s": round(close, 3)}
    if broker_cpu is not None:
        row["broker_cpu_us_per_msg"] = round(broker_cpu / n * 1e6, 3)
    row.update(extra)
    return row


# -- a. raw consumer -------------------------------------------------------------------------

def bench_raw(bootstrap: str, topic: str, n: int, broker_cpu: BrokerCPU, options: dict) -> dict:
    # The same librdkafka settings the pipeline's consumer gets (kpipe's defaults included),
    # so the baseline differs from the pipeline only in what kpipe adds.
    from kpipe.runtime.runner import KAFKA_DEFAULTS

    c = Consumer({**KAFKA_DEFAULTS, "bootstrap.servers": bootstrap,
                  "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "enable.auto.offset.store": False, "client.id": "bench-raw",
                  "session.timeout.ms": SESSION_TIMEOUT_MS, **options})
    t_sub = time.perf_counter()
    c.subscribe([topic])
    seen = 0
    nbytes = 0
    t0 = cpu0 = b0 = None
    consume = c.consume
    while seen < n:
        msgs = consume(CHUNK, 1.0)
        if not msgs:
            if t0 is None and time.perf_counter() - t_sub > 60:
                raise RuntimeError("raw consumer got nothing in 60 s")
            continue
        if t0 is None:
            t0, cpu0, b0 = time.perf_counter(), time.process_time(), broker_cpu()
        for m in msgs:
            if m.error() is not None:
                continue
            v = m.value()
            nbytes += len(v)
            seen += 1
    t1, cpu1, b1 = time.perf_counter(), time.process_time(), broker_cpu()
    c.close()
    t2 = time.perf_counter()
    return result_row("raw consume (confluent_kafka)", n, t0 - t_sub, t1 - t0, cpu1 - cpu0, t2 - t1,
                      None if b0 is None else b1 - b0, key="raw", bytes=nbytes)


# -- b. the kpipe pipeline -------------------------------------------------------------------

class TimedRunner(Runner):
    """Records when the first chunk arrived and when the loop ended; behaviour unchanged."""

    t_sub = t_first = cpu_first = b_first = t_loop_end = cpu_loop_end = b_loop_end = None
    broker_cpu = staticmethod(lambda: None)

    def _ingest(self, msgs, now, ready):
        if self.t_first is None:
            self.t_first, self.cpu_first, self.b_first = time.perf_counter(), time.process_time(), self.broker_cpu()
        return super()._ingest(msgs, now, ready)

    def _loop(self):
        self.t_sub = time.perf_counter()  # subscribe() was just called; it does not block
        try:
            super()._loop()
        finally:
            self.t_loop_end, self.cpu_loop_end, self.b_loop_end = (
                time.perf_counter(), time.process_time(), self.broker_cpu())


def write_spec(tmp: Path, bootstrap: str, topic: str, out: Path, deserializer: str,
               options: dict) -> Path:
    doc = {
        "name": f"bench-{deserializer}",
        "source": {"brokers": bootstrap, "topic": topic,
                   "group": f"bench-{deserializer}-{uuid.uuid4().hex[:8]}", "start": "earliest",
                   "options": {"session.timeout.ms": SESSION_TIMEOUT_MS, **options}},
        "deserializer": {"type": deserializer},
        "sink": {"type": "files", "path": str(out), "format": "jsonl", "fsync": True},
        "batch": {"max_records": 10000, "max_bytes": "16MiB", "max_age": "5s"},
    }
    path = tmp / f"spec-{deserializer}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def count_output(out: Path) -> tuple[int, int]:
    records = files = 0
    for f in out.rglob("*.jsonl"):
        if parse_name(f.name) is None:
            continue
        files += 1
        with open(f, "rb") as fh:
            records += fh.read().count(b"\n")
    return records, files


def bench_pipeline(bootstrap: str, topic: str, n: int, deserializer: str, tmp: Path,
                   broker_cpu: BrokerCPU, options: dict, profile: str | None = None) -> dict:
    out = tmp / f"out-{deserializer}{'-profile' if profile else ''}"
    spec = load_spec(str(write_spec(tmp, bootstrap, topic, out, deserializer, options)), env={})
    r = TimedRunner(spec, until_caught_up=True)
    r.broker_cpu = broker_cpu
    profiler = None
    if profile:
        from pyinstrument import Profiler
        profiler = Profiler(interval=0.001)
        profiler.start()
    result = r.run()
    t_end = time.perf_counter()
    if profiler is not None:
        profiler.stop()
    if result.exit_code:
        raise RuntimeError(f"pipeline {deserializer} failed: {result.reason}")
    if r.t_first is None:
        raise RuntimeError(f"pipeline {deserializer} consumed nothing")
    records, files = count_output(out)
    ok = records == n and result.written == n
    if not ok:
        say(f"!! {deserializer}: {records} records in files, {result.written} written, {n} expected")
    row = result_row(f"kpipe files (jsonl, fsync) {deserializer}", n, r.t_first - r.t_sub,
                     r.t_loop_end - r.t_first, r.cpu_loop_end - r.cpu_first, t_end - r.t_loop_end,
                     None if r.b_first is None else r.b_loop_end - r.b_first,
                     key=deserializer, deserializer=deserializer, files=files, records_in_files=records, verified=ok)
    if profiler is not None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        html = RESULTS / f"{profile}.html"
        txt = RESULTS / f"{profile}.txt"
        html.write_text(profiler.output_html())
        txt.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
        row["profile"] = [str(html.relative_to(ROOT)), str(txt.relative_to(ROOT))]
    shutil.rmtree(out, ignore_errors=True)
    return row


# -- main ------------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    raw = next((r for r in rows if r["key"] == "raw"), None)
    lines = ["| what | msg/s | CPU µs/msg | ratio to raw: msg/s | ratio to raw: CPU/msg |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        if raw:
            rate = f"{r['msg_per_s'] / raw['msg_per_s']:.2f}"
            cpu = f"{r['cpu_us_per_msg'] / raw['cpu_us_per_msg']:.2f}"
        else:
            rate = cpu = "-"
        spread = ""
        if len(r.get("runs_msg_per_s", [])) > 1:
            spread = f" ({min(r['runs_msg_per_s']):,}–{max(r['runs_msg_per_s']):,})"
        lines.append(f"| {r['what']} | {r['msg_per_s']:,}{spread} | {r['cpu_us_per_msg']:.2f} | {rate} | {cpu} |")
    return "\n".join(lines)


def measure(kind: str, bootstrap: str, topic: str, n: int, tmp: Path, broker_cpu: BrokerCPU,
            options: dict, profile: str | None = None) -> dict:
    if kind == "raw":
        return bench_raw(bootstrap, topic, n, broker_cpu, options)
    return bench_pipeline(bootstrap, topic, n, kind, tmp, broker_cpu, options, profile=profile)


def measure_isolated(kind: str, args, bootstrap: str, topic: str, tmp: Path, broker_pid,
                     profile: str | None = None) -> dict:
    """Run one measurement in a fresh interpreter, so no heap or GC state carries over."""
    cmd = [sys.executable, __file__, "--child", kind, "--brokers", bootstrap, "--topic", topic,
           "--messages", str(args.messages), "--tmp", str(tmp)]
    for kv in args.consumer_option:
        cmd += ["-X", kv]
    if broker_pid:
        cmd += ["--broker-pid", str(broker_pid)]
    if profile:
        cmd += ["--child-profile", profile]
    if args.verbose:
        cmd.append("-v")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=300)
    if proc.returncode:
        raise RuntimeError(f"measurement {kind} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_row(runs: list[dict]) -> dict:
    """The run with the median msg/s, annotated with every run's msg/s and CPU/msg."""
    ordered = sorted(runs, key=lambda r: r["msg_per_s"])
    row = dict(ordered[len(ordered) // 2])
    if len(runs) > 1:
        row["runs_msg_per_s"] = [r["msg_per_s"] for r in runs]
        row["runs_cpu_us_per_msg"] = [r["cpu_us_per_msg"] for r in runs]
        row["verified"] = all(r.get("verified", True) for r in runs)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--brokers", help="bootstrap servers of an external broker (default: start Tansu)")
    ap.add_argument("--deserializers", default="json,string,bytes",
                    help="comma-separated pipeline variants to run (default: json,string,bytes)")
    ap.add_argument("--no-raw", action="store_true", help="skip the raw consumer baseline")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure each variant this many times and report the median run (default 1)")
    ap.add_argument("--consumer-option", "-X", action="append", default=[], metavar="KEY=VALUE",
                    help="librdkafka consumer setting for the raw consumer AND the pipeline spec "
                         "(source.options), e.g. -X fetch.queue.backoff.ms=10; repeatable")
    ap.add_argument("--compression", default="none", help="producer compression.type (default none)")
    ap.add_argument("--profile", action="store_true",
                    help="also run the json pipeline once more under pyinstrument; reports go to "
                         "benchmarks/results/profile-json[-OPTIONS].{html,txt}")
    ap.add_argument("--no-isolate", action="store_true",
                    help="run every measurement in this process instead of a fresh interpreter each")
    ap.add_argument("--output", default="latest.json",
                    help="file name under benchmarks/results/ for the JSON report (default latest.json)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--tmp", help="directory for specs and output files (default: a new temp dir)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show kpipe's INFO logs")
    # Internal: one measurement in a child interpreter, against a topic the parent produced.
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    ap.add_argument("--broker-pid", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-profile", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    options = {}
    for kv in args.consumer_option:
        key, sep, value = kv.partition("=")
        if not sep:
            ap.error(f"--consumer-option wants KEY=VALUE, got {kv!r}")
        options[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if args.child:
        row = measure(args.child, args.brokers, args.topic, args.messages, Path(args.tmp),
                      BrokerCPU(args.broker_pid), options, profile=args.child_profile)
        print(json.dumps(row))
        return 0

    broker = None
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="kpipe-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if args.brokers:
            bootstrap, broker_pid = args.brokers, None
        else:
            from kpipe.broker import EmbeddedBroker
            broker = EmbeddedBroker().start()
            bootstrap, broker_pid = broker.bootstrap, broker.proc.pid
            say(f"started Tansu on {bootstrap}")
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, args.partitions)
        say(f"producing {args.messages:,} messages (~{len(make_value(args.messages // 2))} B) "
            f"to {topic} ({args.partitions} partitions)...")
        prod_s = produce_all(bootstrap, topic, args.messages, args.partitions, args.compression)
        say(f"  produced in {prod_s:.1f} s ({args.messages / prod_s:,.0f} msg/s)")

        def run_one(kind, profile=None):
            if args.no_isolate:
                return measure(kind, bootstrap, topic, args.messages, tmp, BrokerCPU(broker_pid),
                               options, profile=profile)
            return measure_isolated(kind, args, bootstrap, topic, tmp, broker_pid, profile=profile)

        kinds = ([] if args.no_raw else ["raw"]) + [d.strip() for d in args.deserializers.split(",") if d.strip()]
        runs: dict[str, list] = {k: [] for k in kinds}
        for i in range(args.repeat):  # interleaved, so slow drift hits every variant alike
            for kind in kinds:
                say(f"{kind} ({i + 1}/{args.repeat})...")
                runs[kind].append(run_one(kind))
                r = runs[kind][-1]
                say(f"  {r['msg_per_s']:,} msg/s, {r['cpu_us_per_msg']} CPU µs/msg, join {r['join_s']} s")
        rows = [median_row(runs[k]) for k in kinds]

        profile_row = None
        if args.profile:
            tag = "-".join(f"{k}={v}" for k, v in options.items()).replace("/", "_")
            say("json pipeline under pyinstrument...")
            profile_row = run_one("json", profile="profile-json" + (f"-{tag}" if tag else ""))
            profile_row["what"] += " (under pyinstrument)"
            say(f"  {profile_row['msg_per_s']:,} msg/s; {profile_row['profile']}")

        report = {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "messages": args.messages, "partitions": args.partitions,
            "value_bytes": len(make_value(args.messages // 2)),
            "broker": args.brokers or "embedded Tansu (in-memory)",
            "compression": args.compression,
            "consumer_options": {"session.timeout.ms": SESSION_TIMEOUT_MS, **options},
            "isolated": not args.no_isolate, "repeat": args.repeat,
            "produce_s": round(prod_s, 2),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(),
                        "confluent_kafka": confluent_kafka.__version__,
                        "librdkafka": confluent_kafka.libversion()[0]},
            "results": rows,
        }
        if profile_row:
            report["profile_run"] = profile_row
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / args.output).write_text(json.dumps(report, indent=2) + "\n")
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(table(rows))
            print(f"\ngroup join (excluded): " + ", ".join(f"{r['key']} {r['join_s']:.1f}s" for r in rows))
            if any("broker_cpu_us_per_msg" in r for r in rows):
                print("broker CPU µs/msg (not included above): "
                      + ", ".join(f"{r['key']} {r.get('broker_cpu_us_per_msg', '-')}" for r in rows))
            print(f"results: {RESULTS / args.output}")
        return 0 if all(r.get("verified", True) for r in rows) else 1
    finally:
        if broker is not None:
            broker.stop()
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

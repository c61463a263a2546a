#!/usr/bin/env python
"""Throughput of kpipe pipelines (files, PostgreSQL or S3 sink) against a plain confluent_kafka consumer.

One run: start the bundled Tansu broker (or use ``--brokers``), create a topic, produce N JSON
messages of ~100 bytes (not measured), then measure, each with a fresh consumer group:

  raw              a bare ``Consumer.consume(10000)`` loop touching ``m.value()`` of every message;
  json             ``Runner(spec, until_caught_up=True).run()`` with the files sink (jsonl, fsync);
  string           the same with the ``string`` deserializer;
  bytes            the same with the ``bytes`` deserializer (values written as base64 JSON strings);
  postgres-insert  the json deserializer into the ``postgres`` sink, ``mode: insert`` (COPY);
  postgres-upsert  the same with ``mode: upsert``, ``key: [order_id]`` (COPY to a temp table, then
                   INSERT ... ON CONFLICT);
  s3-jsonl-gzip    the json deserializer into the ``s3`` sink, gzip jsonl, against moto's S3 server
                   on loopback (started by this script, or ``--s3-endpoint``); s3-jsonl and
                   s3-parquet the same uncompressed and as Parquet (snappy).

Clocks start when the first non-empty chunk comes back from ``consume`` (so the group join,
~3 s under Tansu with session.timeout.ms=6000, is excluded and reported apart) and stop when
the last message has been handled: for the pipeline, when the loop returns, i.e. after the last
file is fsynced (or the last transaction committed, or the last object and state PUT answered)
and its offsets committed;
``consumer.close()`` is reported apart. CPU is ``time.process_time()`` of this process (all
threads, librdkafka's included); the broker's CPU is read from /proc when it is the embedded one,
and the PostgreSQL server's (every ``postgres`` process on this host) when it is local, and the
moto S3 server's when this script started it.

    .venv/bin/python benchmarks/bench.py                          # files sink, 1,000,000 messages
    .venv/bin/python benchmarks/bench.py --sink postgres          # postgres-insert, postgres-upsert
    .venv/bin/python benchmarks/bench.py --sink s3                # s3-jsonl-gzip, s3-jsonl, s3-parquet
    .venv/bin/python benchmarks/bench.py --variants s3-jsonl-gzip -S compression_level=6
    .venv/bin/python benchmarks/bench.py --messages 200000 --profile
    .venv/bin/python benchmarks/bench.py --variants postgres-insert --baseline ../kpipe-old --repeat 3

``--baseline DIR`` runs every pipeline variant a second time with the kpipe package found in
DIR (a checkout or ``git worktree`` of another commit, put first on PYTHONPATH), interleaved
with the current code's runs on the same topic: an A/B in one invocation.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This checkout's kpipe, unless a --baseline run put another one on PYTHONPATH.
if "KPIPE_BENCH_BASELINE" in os.environ:
    sys.path.append(str(ROOT))
else:
    sys.path.insert(0, str(ROOT))

import confluent_kafka  # noqa: E402
import yaml  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402

import kpipe.runtime.runner as runner_mod  # noqa: E402
from kpipe.kafka_admin import create_topic  # noqa: E402
from kpipe.runtime import Runner  # noqa: E402
from kpipe.paths import parse_object_name as parse_name  # noqa: E402
from kpipe.spec import load_spec  # noqa: E402

RESULTS = HERE / "results"
BATCH = {"max_records": 10000, "max_bytes": "16MiB", "max_age": "5s"}  # every pipeline's; --max-records, ...
SESSION_TIMEOUT_MS = 6000
CHUNK = 10_000
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- helpers ---------------------------------------------------------------------------------

def say(*a):
    print(*a, file=sys.stderr, flush=True)


def proc_cpu(path: str) -> tuple[str, float] | None:
    """(comm, utime + stime in seconds) from a /proc stat file, or None when it cannot be read
    (the process or thread is gone, or this is not Linux)."""
    try:
        with open(path) as f:
            head, tail = f.read().rsplit(")", 1)
        fields = tail.split()
        return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


class BrokerCPU:
    """CPU seconds used so far by the embedded broker process (Linux /proc), else None."""

    def __init__(self, pid: int | None):
        self.pid = pid

    def __call__(self) -> float | None:
        if self.pid is None:
            return None
        found = proc_cpu(f"/proc/{self.pid}/stat")
        return None if found is None else found[1]


class PostgresCPU:
    """CPU seconds used so far by every local ``postgres`` process, by pid (Linux /proc).

    Backends, walwriter, checkpointer, background writer alike; other clients' sessions too,
    so a busy shared server inflates it. A process that exits inside the window loses its
    share (the pipeline's own pooled connections live until the sink closes, after the window).
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled and os.path.isdir("/proc")

    def __call__(self) -> dict | None:
        if not self.enabled:
            return None
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            found = proc_cpu(f"/proc/{pid}/stat")
            if found is not None and found[0] == "postgres":
                out[int(pid)] = found[1]
        return out or None

    @staticmethod
    def delta(before: dict | None, after: dict | None) -> float | None:
        if before is None or after is None:
            return None
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


VALUE_BYTES = 0  # --value-bytes: 0 = the ~100 B record below
VALUE_SHAPE = "items"  # --value-shape


def make_value(i: int) -> bytes:
    """~100 bytes of realistic-looking JSON, a little varied so nothing is trivially repetitive.

    With ``--value-bytes`` the same order padded to that size: by an ``items`` list of small
    objects (shape ``items``: the decoded value costs about 10 times its bytes, as nested records
    do), or by one long ``note`` string (shape ``text``: about its bytes)."""
    if VALUE_BYTES > 120 and VALUE_SHAPE == "wide":  # many top-level fields: a column each
        return _wide_value(i)
    if VALUE_BYTES > 120 and VALUE_SHAPE == "text":
        head = _small_value(i)
        note = (b"%08d " % i) * ((VALUE_BYTES - len(head) - 10) // 9)
        return head[:-1] + b',"note":"' + note + b'"}'
    if VALUE_BYTES > 120:
        head = _small_value(i)
        item = b'{"sku":"s%06d","qty":%d,"price":%d.%02d}'
        items = []
        size = len(head) + 12
        k = 0
        while size < VALUE_BYTES:
            items.append(item % (i + k, k % 9 + 1, k % 300, k % 100))
            size += len(items[-1]) + 1
            k += 1
        return head[:-1] + b',"items":[' + b",".join(items) + b"]}"
    return _small_value(i)


def _wide_value(i: int) -> bytes:
    """The order record widened to about ``VALUE_BYTES`` with fields ``f000``, ``f001``, ... of
    about 12 bytes each, cycling integer, float, string and boolean (shape ``wide``)."""
    head = _small_value(i)
    fields, size, k = [], len(head), 0
    while size < VALUE_BYTES:
        kind = k % 4
        value = (b"%d" % (i + k) if kind == 0 else b"%d.%02d" % (k, i % 100) if kind == 1
                 else b'"s%d"' % (i % 1000) if kind == 2 else (b"true" if (i + k) % 2 else b"false"))
        fields.append(b'"f%03d":%s' % (k, value))
        size += len(fields[-1]) + 1
        k += 1
    return head[:-1] + b"," + b",".join(fields) + b"}"


def _small_value(i: int) -> bytes:
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


def peak_rss_mib() -> float:
    """This process's peak resident set so far: VmHWM, which starts afresh at exec. Not
    ru_maxrss: Linux carries the parent's peak into it across fork and exec, so every child of
    an orchestrator that had produced a 600 MB backlog reported >= 600 MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def thread_cpu() -> dict | None:
    """CPU seconds used so far by this process's threads, by kind (Linux /proc/self/task):
    ``loop`` (the main thread: the consume loop, or raw's loop), ``librdkafka`` (its ``rdk:*``
    threads) and ``python`` (every other thread: kpipe's sink writer, its housekeeping). Ticks of
    1/_TICK s, so 10 ms at 100 Hz: ±0.01 µs/msg over 1M messages. A thread that ended in between
    loses its share."""
    out = {"loop": 0.0, "librdkafka": 0.0, "python": 0.0}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    main = str(os.getpid())
    for tid in tids:
        found = proc_cpu(f"/proc/self/task/{tid}/stat")
        if found is None:
            continue
        comm, cpu = found
        out["loop" if tid == main else "librdkafka" if comm.startswith("rdk:") else "python"] += cpu
    return out


def _split(before: dict | None, after: dict | None, n: int) -> dict | None:
    """µs per message by thread kind between two ``thread_cpu`` readings."""
    if before is None or after is None:
        return None
    return {k: round((after[k] - before.get(k, 0.0)) / n * 1e6, 3) for k in after}


def result_row(what: str, n: int, join: float, wall: float, cpu: float, close: float,
               broker_cpu: float | None, pg_cpu: float | None = None, s3_cpu: float | None = None,
               **extra) -> dict:
    row = {"what": what, "key": extra.pop("key"), "messages": n, "join_s": round(join, 3), "wall_s": round(wall, 3),
           "msg_per_s": round(n / wall) if wall > 0 else None,
           "cpu_s": round(cpu, 3), "cpu_us_per_msg": round(cpu / n * 1e6, 3),
           "close_s": round(close, 3), "peak_rss_mib": peak_rss_mib()}
    if broker_cpu is not None:
        row["broker_cpu_us_per_msg"] = round(broker_cpu / n * 1e6, 3)
    if pg_cpu is not None:
        row["pg_cpu_us_per_msg"] = round(pg_cpu / n * 1e6, 3)
    if s3_cpu is not None:
        row["s3_cpu_us_per_msg"] = round(s3_cpu / n * 1e6, 3)
    split = extra.pop("threads", None)
    if split is not None:
        row["cpu_us_per_msg_by_thread"] = split
    row.update(extra)
    return row


# -- a. raw consumer -------------------------------------------------------------------------

def bench_raw(bootstrap: str, topic: str, n: int, broker_cpu: BrokerCPU, options: dict,
              plain: bool = False) -> dict:
    # The same librdkafka settings the pipeline's consumer gets (kpipe's defaults included),
    # so the baseline differs from the pipeline only in what kpipe adds. ``plain`` (the
    # raw-defaults kind): librdkafka's own defaults and nothing from -X, the consumer a user
    # writes without tuning it, as in the issues' reference figures.
    from kpipe.runtime.runner import KAFKA_DEFAULTS

    tuned = {} if plain else {**KAFKA_DEFAULTS, **options}
    c = Consumer({"bootstrap.servers": bootstrap,
                  "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "enable.auto.offset.store": False, "client.id": "bench-raw",
                  "session.timeout.ms": SESSION_TIMEOUT_MS, **tuned})
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
            t0, cpu0, b0, th0 = time.perf_counter(), time.process_time(), broker_cpu(), thread_cpu()
        for m in msgs:
            if m.error() is not None:
                continue
            v = m.value()
            nbytes += len(v)
            seen += 1
    t1, cpu1, b1, th1 = time.perf_counter(), time.process_time(), broker_cpu(), thread_cpu()
    c.close()
    t2 = time.perf_counter()
    what = "raw consume, librdkafka's defaults" if plain else "raw consume (confluent_kafka)"
    return result_row(what, n, t0 - t_sub, t1 - t0, cpu1 - cpu0, t2 - t1,
                      None if b0 is None else b1 - b0, key=RAW_PLAIN if plain else "raw", bytes=nbytes,
                      threads=_split(th0, th1, n))


RAW_PLAIN = "raw-defaults"


# -- b. the kpipe pipeline -------------------------------------------------------------------

FILES_VARIANTS = ("json", "string", "bytes")
# the json variant with compression: gzip (issue 16's files target), and with verbatim: true; not in --sink files
FILES_GZIP = ("json-gzip", "json-gzip-verbatim")
POSTGRES_VARIANTS = ("postgres-insert", "postgres-upsert")
S3_VARIANTS = ("s3-jsonl-gzip", "s3-jsonl", "s3-parquet")
S3_FORMATS = {"s3-jsonl-gzip": ("jsonl", "gzip"), "s3-jsonl": ("jsonl", "none"), "s3-parquet": ("parquet", "snappy")}
ALL_VARIANTS = FILES_VARIANTS + FILES_GZIP + POSTGRES_VARIANTS + S3_VARIANTS
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_KEY = ["order_id"]  # unique per message (see make_value)


def variant(kind: str) -> tuple[str, str, str | None]:
    """kind -> (sink type, deserializer, postgres mode)."""
    if kind in FILES_VARIANTS:
        return "files", kind, None
    if kind in FILES_GZIP:
        return "files", "json", None
    if kind in POSTGRES_VARIANTS:
        return "postgres", "json", kind.split("-", 1)[1]
    if kind in S3_VARIANTS:
        return "s3", "json", None
    raise SystemExit(f"unknown variant {kind!r}; known: {', '.join(ALL_VARIANTS)}")


class TimedRunner(Runner):
    """Records when the first chunk arrived and when the loop ended; behaviour unchanged."""

    t_sub = t_first = w_first = cpu_first = b_first = pg_first = s3_first = th_first = None
    t_loop_end = cpu_loop_end = b_loop_end = pg_loop_end = s3_loop_end = th_loop_end = None
    broker_cpu = staticmethod(lambda: None)
    pg_cpu = staticmethod(lambda: None)
    s3_cpu = staticmethod(lambda: None)

    def _ingest(self, msgs, now, ready):
        if self.t_first is None:
            self.t_first, self.cpu_first, self.th_first = time.perf_counter(), time.process_time(), thread_cpu()
            self.w_first = time.time()  # against the files' mtimes (drain90)
            self.b_first, self.pg_first, self.s3_first = self.broker_cpu(), self.pg_cpu(), self.s3_cpu()
        return super()._ingest(msgs, now, ready)

    def _loop(self):
        self.t_sub = time.perf_counter()  # subscribe() was just called; it does not block
        try:
            super()._loop()
        finally:
            self.t_loop_end, self.cpu_loop_end, self.th_loop_end = time.perf_counter(), time.process_time(), thread_cpu()
            self.b_loop_end, self.pg_loop_end, self.s3_loop_end = self.broker_cpu(), self.pg_cpu(), self.s3_cpu()


def write_spec(tmp: Path, bootstrap: str, topic: str, out: Path, kind: str, options: dict,
               pg_url: str, pg_table: str, s3: dict | None = None) -> tuple[Path, str]:
    sink_type, deserializer, mode = variant(kind)
    group = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
    if sink_type == "files":
        sink = {"type": "files", "path": str(out), "format": "jsonl", "fsync": True,
                **({"compression": "gzip"} if kind in FILES_GZIP else {}),
                **({"verbatim": True} if kind.endswith("-verbatim") else {}), **(s3 or {}).get("options", {})}
    elif sink_type == "s3":
        fmt, compression = S3_FORMATS[kind]
        sink = {"type": "s3", "bucket": s3["bucket"], "endpoint_url": s3["endpoint"], "region": "us-east-1",
                "format": fmt, "compression": compression, **s3.get("options", {})}
    else:
        sink = {"type": "postgres", "url": pg_url, "table": pg_table, "mode": mode, "columns": "auto",
                **(s3 or {}).get("options", {})}  # -S parse=server
        if mode == "upsert":
            sink["key"] = PG_KEY
    doc = {
        "name": f"bench-{kind}",
        "source": {"brokers": bootstrap, "topic": topic, "group": group, "start": "earliest",
                   "options": {"session.timeout.ms": SESSION_TIMEOUT_MS, **options}},
        "deserializer": {"type": deserializer},
        "sink": sink,
        "batch": {"max_records": BATCH["max_records"], "max_bytes": BATCH["max_bytes"], "max_age": BATCH["max_age"]},
    }
    path = tmp / f"spec-{kind}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, group


def count_output(out: Path) -> tuple[int, int, list]:
    """Records, files, and (mtime, records) of each file (jsonl, gzipped or not)."""
    import gzip as gz

    records = files = 0
    landed = []
    for f in [*out.rglob("*.jsonl"), *out.rglob("*.jsonl.gz")]:
        if parse_name(f.name) is None:
            continue
        files += 1
        with open(f, "rb") as fh:
            data = fh.read()
        k = (gz.decompress(data) if f.name.endswith(".gz") else data).count(b"\n")
        records += k
        landed.append((f.stat().st_mtime, k))
    return records, files, landed


def drain90(landed: list, n: int, w_first: float) -> int | None:
    """msg/s inside the drain: 90 % of n over the time from the first chunk to the file that
    completes 90 % of the records (its mtime), leaving out the end-of-drain tick (issue 16)."""
    done = 0
    for mtime, k in sorted(landed):
        done += k
        if done >= 0.9 * n:
            return round(0.9 * n / (mtime - w_first)) if mtime > w_first else None
    return None


def _pg_connect(pg_url: str):
    import psycopg
    import sqlalchemy as sa

    url = sa.engine.make_url(pg_url).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


def pg_local(pg_url: str) -> bool:
    import sqlalchemy as sa

    return sa.engine.make_url(pg_url).host in (None, "", "localhost", "127.0.0.1", "::1")


def pg_reset(pg_url: str, table: str) -> None:
    """A fresh target table for every run; a checkpoint so no run pays for the last one's WAL."""
    with _pg_connect(pg_url) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.execute("CHECKPOINT")


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def s3_verify(endpoint: str, bucket: str, topic: str, targets: dict) -> dict:
    """Records in the objects (each parsed whole), the stored offsets; then empty the bucket, so
    the server's memory does not carry over to the next run."""
    import gzip as gz

    import pyarrow.parquet as pq

    client = s3_client(endpoint)
    records = count = size = 0
    stored = {}
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            keys.append(o["Key"])
            data = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            if "/_kpipe/state/" in "/" + o["Key"]:
                doc = json.loads(data)
                p = int(o["Key"].rsplit("/", 1)[1].split(".")[0])
                stored[(topic, p)] = doc["next_offset"] if doc["pending"] is None else -1
                continue
            count += 1
            size += len(data)
            if o["Key"].endswith(".gz"):
                data = gz.decompress(data)
            if o["Key"].endswith(".parquet"):
                import io
                records += pq.read_metadata(io.BytesIO(data)).num_rows
            else:
                records += data.count(b"\n")
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
    client.delete_bucket(Bucket=bucket)
    want = {tp: o for tp, o in targets.items() if tp[0] == topic}
    return {"objects": count, "object_bytes": size, "records_in_objects": records, "offsets_ok": stored == want}


def end_offsets(topic: str, n: int, partitions: int) -> dict:
    """What produce_all leaves on a fresh topic: message i went to partition i % partitions.

    Computed rather than asked for: Tansu 0.6 answers ListOffsets(latest) with the last
    record batch's base offset + 1, short of the true end."""
    return {(topic, p): len(range(p, n, partitions)) for p in range(partitions)}


def pg_verify(pg_url: str, table: str, group: str, topic: str, targets: dict, keep: bool) -> dict:
    """Rows in the table, and whether kpipe_offsets holds the end offsets for the group."""
    with _pg_connect(pg_url) as conn:
        rows = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        stored = {(t, p): o for t, p, o in conn.execute(
            "SELECT topic, kafka_partition, next_offset FROM kpipe_offsets WHERE group_id = %s", (group,))}
        size = conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()[0]
        if not keep:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            conn.execute("DELETE FROM kpipe_offsets WHERE group_id = %s", (group,))
    want = {tp: o for tp, o in targets.items() if tp[0] == topic}
    return {"rows_in_table": rows, "table_bytes": size, "offsets_ok": stored == want,
            "offsets": {f"{t}[{p}]": o for (t, p), o in sorted(stored.items())}}


def pg_describe(pg_url: str) -> dict:
    """Server version and the settings that matter for COPY speed, for the report."""
    import sqlalchemy as sa

    with _pg_connect(pg_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', "
            "'wal_level', 'shared_buffers', 'max_wal_size', 'full_page_writes', 'autovacuum')"))
    return {"url": sa.engine.make_url(pg_url).render_as_string(hide_password=True),
            "server_version": version, "settings": settings}


def bench_pipeline(bootstrap: str, topic: str, n: int, kind: str, tmp: Path,
                   broker_cpu: BrokerCPU, options: dict, profile: str | None = None,
                   pg_url: str = DEFAULT_PG_URL, keep_table: bool = False, partitions: int = 4,
                   s3: dict | None = None) -> dict:
    sink_type, deserializer, mode = variant(kind)
    out = tmp / f"out-{kind}{'-profile' if profile else ''}"
    # Per topic, so that two benchmarks on one server do not drop each other's table.
    pg_table = f"kpipe_bench_{mode}_{topic.rsplit('-', 1)[-1]}" if mode else ""
    if sink_type == "s3":
        s3 = {**s3, "bucket": f"bench-{uuid.uuid4().hex[:12]}"}
        s3_client(s3["endpoint"]).create_bucket(Bucket=s3["bucket"])
    spec_path, group = write_spec(tmp, bootstrap, topic, out, kind, options, pg_url, pg_table, s3)
    if sink_type == "postgres":
        pg_reset(pg_url, pg_table)
    spec = load_spec(str(spec_path), env={})
    r = TimedRunner(spec, until_caught_up=True)
    r.broker_cpu = broker_cpu
    if sink_type == "postgres":
        r.pg_cpu = PostgresCPU(pg_local(pg_url))
    if sink_type == "s3":
        r.s3_cpu = BrokerCPU(s3.get("pid"))
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
        raise RuntimeError(f"pipeline {kind} failed: {result.reason}")
    if r.t_first is None:
        raise RuntimeError(f"pipeline {kind} consumed nothing")
    if sink_type == "files":
        records, files, landed = count_output(out)
        ok = records == n and result.written == n
        if not ok:
            say(f"!! {kind}: {records} records in files, {result.written} written, {n} expected")
        what = f"kpipe files (jsonl{', gzip' if kind in FILES_GZIP else ''}, fsync) {deserializer}" \
            + (" verbatim" if kind.endswith("-verbatim") else "") \
            + "".join(f" {k}={v}" for k, v in (s3 or {}).get("options", {}).items())
        extra = {"files": files, "records_in_files": records, "drain90_msg_per_s": drain90(landed, n, r.w_first)}
    elif sink_type == "s3":
        check = s3_verify(s3["endpoint"], s3["bucket"], topic, end_offsets(topic, n, partitions))
        ok = check["records_in_objects"] == n and result.written == n and check["offsets_ok"]
        if not ok:
            say(f"!! {kind}: {check['records_in_objects']} records in objects, {result.written} written, "
                f"{n} expected; offsets ok: {check['offsets_ok']}")
        fmt, compression = S3_FORMATS[kind]
        what = f"kpipe s3 ({fmt}, {compression}) json"
        extra = {"batches": result.batches, "sink_options": s3.get("options", {}), **check}
    else:
        check = pg_verify(pg_url, pg_table, group, topic, end_offsets(topic, n, partitions), keep_table)
        ok = check["rows_in_table"] == n and result.written == n and check["offsets_ok"]
        if not ok:
            say(f"!! {kind}: {check['rows_in_table']} rows, {result.written} written, {n} expected; "
                f"offsets {check['offsets']} vs end offsets {end_offsets(topic, n, partitions)}")
        what = f"kpipe postgres {mode} ({deserializer})" + (f" key {PG_KEY}" if mode == "upsert" else "") \
            + "".join(f" {k}={v}" for k, v in s3.get("options", {}).items())
        extra = {"table": pg_table, "batches": result.batches, **check}
    row = result_row(what, n, r.t_first - r.t_sub,
                     r.t_loop_end - r.t_first, r.cpu_loop_end - r.cpu_first, t_end - r.t_loop_end,
                     None if r.b_first is None else r.b_loop_end - r.b_first,
                     PostgresCPU.delta(r.pg_first, r.pg_loop_end),
                     None if r.s3_first is None else r.s3_loop_end - r.s3_first,
                     key=kind, sink=sink_type, deserializer=deserializer, verified=ok,
                     threads=_split(r.th_first, r.th_loop_end, n), **extra)
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
    plain = next((r for r in rows if r["key"] == RAW_PLAIN), None)
    pg = any("pg_cpu_us_per_msg" in r for r in rows)
    s3 = any("s3_cpu_us_per_msg" in r for r in rows)
    lines = ["| what | msg/s | CPU µs/msg | ratio to raw: msg/s | ratio to raw: CPU/msg |"
             + (" msg/s ratio to raw at librdkafka's defaults |" if plain else "")
             + (" PostgreSQL CPU µs/msg |" if pg else "") + (" S3 server CPU µs/msg |" if s3 else "")
             + " peak RSS MiB |",
             "|---|---:|---:|---:|---:|" + ("---:|" if plain else "") + ("---:|" if pg else "")
             + ("---:|" if s3 else "") + "---:|"]
    for r in rows:
        if raw:
            rate = f"{r['msg_per_s'] / raw['msg_per_s']:.2f}"
            cpu = f"{r['cpu_us_per_msg'] / raw['cpu_us_per_msg']:.2f}"
        else:
            rate = cpu = "-"
        if plain:
            cpu += f" | {r['msg_per_s'] / plain['msg_per_s']:.2f}"
        spread = cspread = ""
        if len(r.get("runs_msg_per_s", [])) > 1:
            spread = f" ({min(r['runs_msg_per_s']):,}–{max(r['runs_msg_per_s']):,})"
            cspread = f" ({min(r['runs_cpu_us_per_msg']):.2f}–{max(r['runs_cpu_us_per_msg']):.2f})"
        line = f"| {r['what']} | {r['msg_per_s']:,}{spread} | {r['cpu_us_per_msg']:.2f}{cspread} | {rate} | {cpu} |"
        if pg:
            line += f" {r['pg_cpu_us_per_msg']:.2f} |" if "pg_cpu_us_per_msg" in r else " - |"
        if s3:
            line += f" {r['s3_cpu_us_per_msg']:.2f} |" if "s3_cpu_us_per_msg" in r else " - |"
        rss = r.get("runs_peak_rss_mib", [r.get("peak_rss_mib", 0)])
        spread = f" ({min(rss):,.0f}–{max(rss):,.0f})" if len(rss) > 1 else ""
        line += f" {max(rss):,.0f}{spread} |"
        lines.append(line)
    return "\n".join(lines)


def measure(kind: str, bootstrap: str, topic: str, n: int, tmp: Path, broker_cpu: BrokerCPU,
            options: dict, profile: str | None = None, pg_url: str = DEFAULT_PG_URL,
            keep_table: bool = False, partitions: int = 4, s3: dict | None = None) -> dict:
    if kind in ("raw", RAW_PLAIN):
        return bench_raw(bootstrap, topic, n, broker_cpu, options, plain=kind == RAW_PLAIN)
    return bench_pipeline(bootstrap, topic, n, kind, tmp, broker_cpu, options, profile=profile,
                          pg_url=pg_url, keep_table=keep_table, partitions=partitions, s3=s3)


BASE_SUFFIX = "@base"


def baseline_commit(path: str) -> str:
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def measure_isolated(kind: str, args, bootstrap: str, topic: str, tmp: Path, broker_pid,
                     profile: str | None = None, py_spy: str | None = None) -> dict:
    """Run one measurement in a fresh interpreter, so no heap or GC state carries over.

    A kind ending in ``@base`` runs with the kpipe of ``--baseline`` first on PYTHONPATH."""
    env = None
    base = kind.endswith(BASE_SUFFIX)
    if base:
        kind = kind[:-len(BASE_SUFFIX)]
        env = {**os.environ, "KPIPE_BENCH_BASELINE": "1", "PYTHONPATH": os.pathsep.join(
            [str(Path(args.baseline).resolve())] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    cmd = [sys.executable, __file__, "--child", kind, "--brokers", bootstrap, "--topic", topic,
           "--messages", str(args.messages), "--tmp", str(tmp), "--pg-url", args.pg_url,
           "--partitions", str(args.partitions), "--value-bytes", str(args.value_bytes),
           "--value-shape", args.value_shape]
    for kv in args.consumer_option:
        cmd += ["-X", kv]
    if broker_pid:
        cmd += ["--broker-pid", str(broker_pid)]
    if args.s3_endpoint:
        cmd += ["--s3-endpoint", args.s3_endpoint]
    if args.s3_pid:
        cmd += ["--s3-pid", str(args.s3_pid)]
    for kv in args.sink_option:
        cmd += ["-S", kv]
    cmd += ["--max-records", str(args.max_records), "--max-bytes", args.max_bytes, "--max-age", args.max_age]
    if profile:
        cmd += ["--child-profile", profile]
    if args.keep_table:
        cmd.append("--keep-table")
    if args.verbose:
        cmd.append("-v")
    if py_spy:
        # Sampling profiler around the child: every Python thread, with native frames.
        cmd = [shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")), "record",
               "--native", "--rate", "200", "--format", "raw", "--output", py_spy, "--"] + cmd
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=600, env=env)
    if proc.returncode:
        raise RuntimeError(f"measurement {kind} failed with exit code {proc.returncode}")
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            row = json.loads(line)
            if base:
                row["key"] += BASE_SUFFIX
                row["what"] += f" [baseline {baseline_commit(args.baseline)}]"
                row["kpipe_from"] = str(Path(args.baseline).resolve())
            return row
    raise RuntimeError(f"measurement {kind} printed no result")


def median_row(runs: list[dict]) -> dict:
    """The run with the median msg/s, annotated with every run's msg/s and CPU/msg."""
    ordered = sorted(runs, key=lambda r: r["msg_per_s"])
    row = dict(ordered[len(ordered) // 2])
    if len(runs) > 1:
        row["runs_msg_per_s"] = [r["msg_per_s"] for r in runs]
        row["runs_cpu_us_per_msg"] = [r["cpu_us_per_msg"] for r in runs]
        if all(r.get("drain90_msg_per_s") for r in runs):
            row["runs_drain90_msg_per_s"] = d90 = sorted(r["drain90_msg_per_s"] for r in runs)
            row["drain90_msg_per_s"] = d90[len(d90) // 2]
        cpus = sorted(r["cpu_us_per_msg"] for r in runs)
        row["median_cpu_us_per_msg"] = cpus[len(cpus) // 2]
        row["runs_peak_rss_mib"] = [r.get("peak_rss_mib") for r in runs]
        if all("pg_cpu_us_per_msg" in r for r in runs):
            row["runs_pg_cpu_us_per_msg"] = [r["pg_cpu_us_per_msg"] for r in runs]
        row["verified"] = all(r.get("verified", True) for r in runs)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--value-bytes", type=int, default=0,
                    help="pad every value to about this many bytes with an `items` list of small objects "
                         "(default: the ~100 B order record)")
    ap.add_argument("--value-shape", choices=["items", "text", "wide"], default="items",
                    help="how --value-bytes pads a value: a list of small objects (items, ~10 x its bytes "
                         "once decoded), one long string (text) or many top-level fields of ~12 B (wide: "
                         "a column each in postgres)")
    ap.add_argument("--brokers", help="bootstrap servers of an external broker (default: start Tansu)")
    ap.add_argument("--sink", choices=["files", "postgres", "s3", "all"], default="files",
                    help="which sink's variants to run when --variants is not given: files -> "
                         "json,string,bytes; postgres -> postgres-insert,postgres-upsert; s3 -> "
                         f"{','.join(S3_VARIANTS)}; all -> all of them (default files)")
    ap.add_argument("--variants", "--deserializers", dest="variants",
                    help="comma-separated pipeline variants to run, any of "
                         f"{','.join(ALL_VARIANTS)} (overrides --sink)")
    ap.add_argument("--s3-endpoint",
                    help="S3 endpoint for the s3 variants (default: start moto's server on loopback; "
                         "credentials from boto3's chain); each run uses a new bucket and deletes it")
    ap.add_argument("--max-records", type=int, default=BATCH["max_records"],
                    help=f"batch.max_records of every pipeline (default {BATCH['max_records']})")
    ap.add_argument("--max-bytes", default=BATCH["max_bytes"],
                    help=f"batch.max_bytes of every pipeline (default {BATCH['max_bytes']})")
    ap.add_argument("--max-age", default=BATCH["max_age"],
                    help=f"batch.max_age of every pipeline (default {BATCH['max_age']}; e.g. 200ms: "
                         "small writes, as with many partitions at a low rate)")
    ap.add_argument("--sink-option", "-S", action="append", default=[], metavar="KEY=VALUE",
                    help="extra sink setting for the s3 and postgres variants, e.g. -S compression_level=6, "
                         "-S parse=server; repeatable")
    ap.add_argument("--pg-url", default=os.environ.get("KPIPE_BENCH_PG_URL", DEFAULT_PG_URL),
                    help=f"database for the postgres variants (default $KPIPE_BENCH_PG_URL or {DEFAULT_PG_URL}); "
                         "each run drops and recreates table kpipe_bench_<mode>")
    ap.add_argument("--keep-table", action="store_true",
                    help="leave the last postgres run's table and offsets rows in place (default: drop them)")
    ap.add_argument("--no-raw", action="store_true", help="skip the raw consumer baseline")
    ap.add_argument("--raw-defaults", action="store_true",
                    help="also measure a raw consumer at librdkafka's own defaults (no kpipe settings, "
                         "no -X): the untuned consumer of the issues' reference figures")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure each variant this many times and report the median run (default 1)")
    ap.add_argument("--consumer-option", "-X", action="append", default=[], metavar="KEY=VALUE",
                    help="librdkafka consumer setting for the raw consumer AND the pipeline spec "
                         "(source.options), e.g. -X fetch.queue.backoff.ms=10; repeatable")
    ap.add_argument("--compression", default="none", help="producer compression.type (default none)")
    ap.add_argument("--profile", action="store_true",
                    help="also run the first pipeline variant once more under pyinstrument; reports go "
                         "to benchmarks/results/profile-VARIANT[-OPTIONS].{html,txt}")
    ap.add_argument("--py-spy", action="store_true",
                    help="also run the first pipeline variant once more under `py-spy record --native` "
                         "(collapsed stacks, every Python thread) -> benchmarks/results/pyspy-VARIANT.txt")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also run every pipeline variant with the kpipe package in DIR (another "
                         "checkout), interleaved with the current code's runs: an A/B in one invocation")
    ap.add_argument("--no-isolate", action="store_true",
                    help="run every measurement in this process instead of a fresh interpreter each")
    ap.add_argument("--output",
                    help="file name under benchmarks/results/ for the JSON report (default latest.json, "
                         "latest-postgres.json with --sink postgres, latest-all.json with --sink all)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--tmp", help="directory for specs and output files (default: a new temp dir)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show kpipe's INFO logs")
    # Internal: one measurement in a child interpreter, against a topic the parent produced.
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    ap.add_argument("--broker-pid", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-profile", help=argparse.SUPPRESS)
    ap.add_argument("--s3-pid", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    def key_values(items: list, flag: str) -> dict:
        out = {}
        for kv in items:
            key, sep, value = kv.partition("=")
            if not sep:
                ap.error(f"{flag} wants KEY=VALUE, got {kv!r}")
            value = value.strip()
            out[key.strip()] = int(value) if value.lstrip("-").isdigit() else \
                {"true": True, "false": False}.get(value, value)  # -S verbatim=true
        return out

    options = key_values(args.consumer_option, "--consumer-option")
    sink_options = key_values(args.sink_option, "--sink-option")
    s3 = {"endpoint": args.s3_endpoint, "pid": args.s3_pid, "options": sink_options}
    BATCH.update(max_records=args.max_records, max_bytes=args.max_bytes, max_age=args.max_age)
    global VALUE_BYTES, VALUE_SHAPE
    VALUE_BYTES, VALUE_SHAPE = args.value_bytes, args.value_shape
    if args.output is None:
        args.output = "latest.json" if args.sink == "files" else f"latest-{args.sink}.json"
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if args.child:
        row = measure(args.child, args.brokers, args.topic, args.messages, Path(args.tmp),
                      BrokerCPU(args.broker_pid), options, profile=args.child_profile,
                      pg_url=args.pg_url, keep_table=args.keep_table, partitions=args.partitions, s3=s3)
        row["kpipe_file"] = str(Path(runner_mod.__file__).parents[1])  # which kpipe ran (--baseline)
        print(json.dumps(row))
        return 0

    broker = moto = None
    load_start = os.getloadavg()
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
        if args.variants:
            pipelines = [d.strip() for d in args.variants.split(",") if d.strip()]
        else:
            pipelines = list({"files": FILES_VARIANTS, "postgres": POSTGRES_VARIANTS, "s3": S3_VARIANTS,
                              "all": ALL_VARIANTS}[args.sink])
        for kind in pipelines:
            variant(kind)  # fail early on a typo
        if any(variant(k)[0] == "s3" for k in pipelines) and not args.s3_endpoint:
            from kpipe.sinks.s3.testing import MotoServer
            moto = MotoServer().start()
            args.s3_endpoint, args.s3_pid = moto.url, moto.proc.pid
            s3.update(endpoint=moto.url, pid=moto.proc.pid)
            say(f"started moto's S3 server on {moto.url}")
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, args.partitions)
        say(f"producing {args.messages:,} messages (~{len(make_value(args.messages // 2))} B) "
            f"to {topic} ({args.partitions} partitions)...")
        prod_s = produce_all(bootstrap, topic, args.messages, args.partitions, args.compression)
        say(f"  produced in {prod_s:.1f} s ({args.messages / prod_s:,.0f} msg/s)")

        def run_one(kind, profile=None, py_spy=None):
            if args.no_isolate and not py_spy:
                row = measure(kind, bootstrap, topic, args.messages, tmp, BrokerCPU(broker_pid),
                              options, profile=profile, pg_url=args.pg_url, keep_table=args.keep_table,
                              partitions=args.partitions, s3=s3)
            else:
                row = measure_isolated(kind, args, bootstrap, topic, tmp, broker_pid, profile=profile,
                                       py_spy=py_spy)
            row["loadavg_1m_after"] = round(os.getloadavg()[0], 2)  # other work on the machine
            return row

        if args.baseline:
            if args.no_isolate:
                ap.error("--baseline needs isolated runs (drop --no-isolate)")
            if not (Path(args.baseline) / "kpipe" / "__init__.py").is_file():
                ap.error(f"--baseline {args.baseline}: no kpipe package there")
        kinds = ([] if args.no_raw else ["raw"]) + ([RAW_PLAIN] if args.raw_defaults else []) + [
            k for kind in pipelines for k in ([kind + BASE_SUFFIX, kind] if args.baseline else [kind])]
        runs: dict[str, list] = {k: [] for k in kinds}
        for i in range(args.repeat):  # interleaved, so slow drift hits every variant alike
            for kind in kinds:
                say(f"{kind} ({i + 1}/{args.repeat})...")
                runs[kind].append(run_one(kind))
                r = runs[kind][-1]
                say(f"  {r['msg_per_s']:,} msg/s, {r['cpu_us_per_msg']} CPU µs/msg, join {r['join_s']} s")
        rows = [median_row(runs[k]) for k in kinds if runs[k]]  # --repeat 0: profile only

        profile_row = pyspy_row = None
        first = pipelines[0] if pipelines else None
        tag = "-".join(f"{k}={v}" for k, v in options.items()).replace("/", "_")
        if args.profile and first:
            say(f"{first} pipeline under pyinstrument...")
            profile_row = run_one(first, profile=f"profile-{first}" + (f"-{tag}" if tag else ""))
            profile_row["what"] += " (under pyinstrument)"
            say(f"  {profile_row['msg_per_s']:,} msg/s; {profile_row['profile']}")
        if args.py_spy and first:
            RESULTS.mkdir(parents=True, exist_ok=True)
            out = RESULTS / (f"pyspy-{first}" + (f"-{tag}" if tag else "") + ".txt")
            say(f"{first} pipeline under py-spy --native...")
            pyspy_row = run_one(first, py_spy=str(out))
            pyspy_row["what"] += " (under py-spy)"
            pyspy_row["profile"] = [str(out.relative_to(ROOT))]
            say(f"  {pyspy_row['msg_per_s']:,} msg/s; {out}")

        report = {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "messages": args.messages, "partitions": args.partitions,
            "value_bytes": len(make_value(args.messages // 2)),
            **({"value_shape": args.value_shape} if args.value_bytes else {}),
            "broker": args.brokers or "embedded Tansu (in-memory)",
            "compression": args.compression,
            "batch": dict(BATCH),
            "consumer_options": {"session.timeout.ms": SESSION_TIMEOUT_MS, **options},
            "isolated": not args.no_isolate, "repeat": args.repeat,
            **({"baseline": {"path": str(Path(args.baseline).resolve()), "commit": baseline_commit(args.baseline)}}
               if args.baseline else {}),
            "produce_s": round(prod_s, 2),
            "loadavg_at_start": [round(x, 2) for x in load_start],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(),
                        "confluent_kafka": confluent_kafka.__version__,
                        "librdkafka": confluent_kafka.libversion()[0]},
            "results": rows,
        }
        if any(variant(k)[0] == "s3" for k in pipelines):
            report["s3"] = {"endpoint": "moto server on loopback (started by this script)" if moto else args.s3_endpoint,
                            "sink_options": sink_options}
        if any(variant(k)[0] == "postgres" for k in pipelines):
            report["postgres"] = pg_describe(args.pg_url)
        if profile_row:
            report["profile_run"] = profile_row
        if pyspy_row:
            report["py_spy_run"] = pyspy_row
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / args.output).write_text(json.dumps(report, indent=2) + "\n")
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(table(rows))
            print(f"\ngroup join (excluded): " + ", ".join(f"{r['key']} {r['join_s']:.1f}s" for r in rows))
            raw = next((r for r in rows if r["key"] == "raw"), None)
            if raw and any(r.get("drain90_msg_per_s") for r in rows):  # the in-drain method
                print("files in-drain msg/s (first chunk to the file completing 90 %): " + ", ".join(
                    f"{r['key']} {r['drain90_msg_per_s']:,} ({r['drain90_msg_per_s'] / raw['msg_per_s']:.2f} x raw)"
                    for r in rows if r.get("drain90_msg_per_s")))
            if any("pg_cpu_us_per_msg" in r for r in rows):
                print("PostgreSQL CPU µs/msg: all local postgres processes, not included in CPU µs/msg")
            if any("s3_cpu_us_per_msg" in r for r in rows):
                print("S3 server CPU µs/msg: the moto server process, not included in CPU µs/msg")
            if any("cpu_us_per_msg_by_thread" in r for r in rows):
                print("CPU µs/msg by thread, loop + other Python threads (kpipe's sink writer) + librdkafka: "
                      + ", ".join(f"{r['key']} " + " + ".join(f"{t[k]:.2f}" for k in ("loop", "python", "librdkafka"))
                                  for r in rows if (t := r.get("cpu_us_per_msg_by_thread"))))
            if any("broker_cpu_us_per_msg" in r for r in rows):
                print("broker CPU µs/msg (not included above): "
                      + ", ".join(f"{r['key']} {r.get('broker_cpu_us_per_msg', '-')}" for r in rows))
            print(f"results: {RESULTS / args.output}")
        return 0 if all(r.get("verified", True) for r in rows) else 1
    finally:
        if broker is not None:
            broker.stop()
        if moto is not None:
            moto.stop()
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

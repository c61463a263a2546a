#!/usr/bin/env python
"""kpipe's PostgreSQL insert beside Quix Streams' PostgreSQLSink, on one topic in one run (issue 16).

The parent starts the bundled Tansu broker (or uses ``--brokers``), produces N ~100 B JSON
messages (bench.py's ``make_value``), then runs, each in a fresh child process with its own
consumer group and its own pre-created table (a ``landed timestamptz DEFAULT clock_timestamp()``
column beside the record's columns):

  kpipe  bench.py's postgres-insert pipeline (``Runner(until_caught_up=True)``, json, COPY);
  quix   ``Application`` + ``app.dataframe(topic, json)`` + ``sdf.sink(PostgreSQLSink(...))``,
         a checkpoint (sink flush, then commit) every 10,000 messages as kpipe's batches
         (``--quix-commit-every``; 0 = Quix's default, every 5 s), Quix's defaults otherwise.
         Quix has no run-to-end mode: the parent stops it with SIGTERM once the table holds N rows.

Measured, the same way for both:

  msg/s    90 % of N over the time from the first message the app handled (wall clock, in the
           child) to the ``landed`` time of the row that completes 90 % (PostgreSQL's clock, same
           host): the join and the end-of-drain tick are left out;
  CPU      utime + stime of the child (/proc/<pid>/stat, all threads) from the first message to
           the end (kpipe: its loop returned; Quix: the parent saw N rows), per message;
  RSS      the child's VmHWM.

Quix runs in its own venv so it cannot change kpipe's confluent-kafka:

    python3 -m venv /tmp/quixvenv && /tmp/quixvenv/bin/pip install quixstreams psycopg2-binary
    .venv/bin/python benchmarks/quix.py                   # 200,000 messages, once each
    .venv/bin/python benchmarks/quix.py --repeat 2 --messages 300000

This file runs under both interpreters: the Quix child imports nothing from kpipe.
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

HERE = Path(__file__).resolve().parent
DEFAULT_QUIX_PYTHON = "/tmp/quixvenv/bin/python"
SESSION_TIMEOUT_MS = 6000
PG = {"host": "127.0.0.1", "port": 5432, "dbname": "test", "user": "postgres", "password": ""}
# The record's columns as kpipe's `columns: auto` would create them (bench.py, "What is measured").
RECORD_COLUMNS = "order_id bigint, customer text, country text, amount double precision, created_at text"
LANDED = "landed timestamptz DEFAULT clock_timestamp()"
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int | str = "self") -> float:
    """utime + stime in seconds of a process, all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def hwm_mib(pid: int | str = "self") -> float:
    """VmHWM (peak resident set) of a process, MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM")


def write_mark(path: str) -> None:
    """The first message's wall time and the CPU used so far, for the parent."""
    Path(path).write_text(json.dumps({"wall": time.time(), "cpu": cpu_of()}))


# -- the Quix child (runs under --quix-python; stdlib and quixstreams only) --------------------

def quix_child(a) -> None:
    from quixstreams import Application
    from quixstreams.sinks.community.postgresql import PostgreSQLSink

    app = Application(broker_address=a.brokers, consumer_group=a.group, auto_offset_reset="earliest",
                      consumer_extra_config={"session.timeout.ms": SESSION_TIMEOUT_MS},
                      commit_every=int(a.quix_commit_every), loglevel="WARNING",
                      state_dir=os.path.join(a.tmp, "quix-state"))
    topic = app.topic(a.topic, value_deserializer="json")
    sdf = app.dataframe(topic)
    marked = []

    def mark(value):  # once: a list check per message, nothing else
        if not marked:
            marked.append(1)
            write_mark(a.mark)

    sdf.update(mark)
    sdf.sink(PostgreSQLSink(host=PG["host"], port=PG["port"], dbname=PG["dbname"], user=PG["user"],
                            password=PG["password"], table_name=a.table))
    app.run()  # until SIGTERM from the parent


# -- the kpipe child (runs under this checkout's venv) ----------------------------------------

def kpipe_child(a) -> None:
    import bench

    spec_path, group = bench.write_spec(Path(a.tmp), a.brokers, a.topic, Path(a.tmp) / "unused",
                                        "postgres-insert", {}, bench.DEFAULT_PG_URL, a.table)
    r = _marked_runner()(bench.load_spec(str(spec_path), env={}), until_caught_up=True)
    r.mark_path = a.mark
    result = r.run()
    end_cpu = cpu_of()
    if result.exit_code:
        raise SystemExit(f"kpipe failed: {result.reason}")
    print(json.dumps({"group": group, "end_cpu": end_cpu, "end_wall": time.time(), "peak_rss_mib": hwm_mib()}))


def _marked_runner():
    import bench

    class MarkedRunner(bench.Runner):
        """Writes the mark at the first non-empty chunk; behaviour unchanged."""

        mark_path = None

        def _ingest(self, msgs, now, ready):
            if self.mark_path:
                write_mark(self.mark_path)
                self.mark_path = None
            return super()._ingest(msgs, now, ready)

    return MarkedRunner


# -- the parent -------------------------------------------------------------------------------

def pg():
    import psycopg

    return psycopg.connect(host=PG["host"], port=PG["port"], dbname=PG["dbname"], user=PG["user"],
                           autocommit=True)


def create_table(table: str, quix: bool) -> None:
    """kpipe's columns, or the ones Quix's sink makes (`timestamp`, `__key`) and then adds with
    ADD COLUMN IF NOT EXISTS, plus `landed`. A checkpoint so no run pays for the last one's WAL."""
    meta = '"timestamp" timestamp NOT NULL, "__key" text, ' if quix else ""
    with pg() as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.execute(f'CREATE TABLE "{table}" ({meta}{RECORD_COLUMNS}, {LANDED})')
        conn.execute("CHECKPOINT")


def rows_and_landed90(table: str, n: int) -> tuple[int, float | None]:
    with pg() as conn:
        rows = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        k = max(1, -(-9 * n // 10))  # the row that completes 90 %
        t = conn.execute(f'SELECT extract(epoch FROM landed) FROM "{table}" ORDER BY landed OFFSET %s LIMIT 1',
                         (k - 1,)).fetchone()
        distinct = conn.execute(f'SELECT count(DISTINCT order_id) FROM "{table}"').fetchone()[0]
    return rows if distinct == rows else -rows, (float(t[0]) if t else None)


def run_child(kind: str, a, bootstrap: str, topic: str, tmp: Path) -> dict:
    import bench

    table = f"quixcmp_{kind}_{uuid.uuid4().hex[:8]}"
    create_table(table, quix=kind == "quix")
    mark = tmp / f"mark-{table}.json"
    group = f"quixcmp-{kind}-{uuid.uuid4().hex[:8]}"
    python = a.quix_python if kind == "quix" else sys.executable
    cmd = [python, __file__, "--child", kind, "--brokers", bootstrap, "--topic", topic, "--table", table,
           "--group", group, "--mark", str(mark), "--tmp", str(tmp), "--quix-commit-every", str(a.quix_commit_every)]
    t_start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=tmp)
    deadline = time.monotonic() + a.timeout
    end_cpu = rss = None
    try:
        if kind == "quix":
            while True:  # Quix does not stop by itself: watch the table
                if proc.poll() is not None:
                    raise RuntimeError(f"quix child exited with {proc.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError("quix child did not land every row in time")
                with pg() as conn:
                    if conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] >= a.messages:
                        break
                time.sleep(0.1)
            end_cpu, rss, end_wall = cpu_of(proc.pid), hwm_mib(proc.pid), time.time()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        else:
            out, _ = proc.communicate(timeout=a.timeout)
            if proc.returncode:
                raise RuntimeError(f"kpipe child exited with {proc.returncode}")
            done = json.loads(out.strip().splitlines()[-1])
            end_cpu, rss, end_wall, group = done["end_cpu"], done["peak_rss_mib"], done["end_wall"], done["group"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = json.loads(mark.read_text())
    rows, landed90 = rows_and_landed90(table, a.messages)
    n = a.messages
    row = {"key": kind, "what": "kpipe postgres insert (json, COPY)" if kind == "kpipe"
           else f"Quix Streams PostgreSQLSink (json, commit_every {a.quix_commit_every})",
           "messages": n, "rows_in_table": rows, "verified": rows == n,
           "join_s": round(first["wall"] - t_start, 2),
           "drain90_msg_per_s": round(0.9 * n / (landed90 - first["wall"])) if landed90 else None,
           "end_to_end_msg_per_s": round(n / (end_wall - first["wall"])),
           "cpu_us_per_msg": round((end_cpu - first["cpu"]) / n * 1e6, 2), "peak_rss_mib": rss}
    if kind == "kpipe":
        row["offsets_ok"] = bench.pg_verify(bench.DEFAULT_PG_URL, table, group, topic,
                                            bench.end_offsets(topic, n, a.partitions), keep=False)["offsets_ok"]
        row["verified"] = row["verified"] and row["offsets_ok"]
    else:
        with pg() as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    return row


def median(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["drain90_msg_per_s"] or 0)
    row = dict(ordered[len(ordered) // 2])
    if len(runs) > 1:
        for k in ("drain90_msg_per_s", "cpu_us_per_msg", "peak_rss_mib"):
            row[f"runs_{k}"] = [r[k] for r in runs]
        row["verified"] = all(r["verified"] for r in runs)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| what | msg/s in drain | msg/s first message → all rows | CPU µs/msg | peak RSS MiB |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['drain90_msg_per_s']:,} | {r['end_to_end_msg_per_s']:,} | "
                     f"{r['cpu_us_per_msg']:.2f} | {r['peak_rss_mib']:,.0f} |")
    k = next((r for r in rows if r["key"] == "kpipe"), None)
    q = next((r for r in rows if r["key"] == "quix"), None)
    if k and q:
        lines.append(f"| **ratio kpipe / Quix** | **{k['drain90_msg_per_s'] / q['drain90_msg_per_s']:.1f} ×** | "
                     f"{k['end_to_end_msg_per_s'] / q['end_to_end_msg_per_s']:.1f} × | "
                     f"{k['cpu_us_per_msg'] / q['cpu_us_per_msg']:.2f} × | "
                     f"{k['peak_rss_mib'] / q['peak_rss_mib']:.2f} × |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, interleaved; the median is kept")
    ap.add_argument("--brokers", help="bootstrap servers of an external broker (default: start Tansu)")
    ap.add_argument("--quix-python", default=DEFAULT_QUIX_PYTHON if os.path.exists(DEFAULT_QUIX_PYTHON) else None,
                    help=f"python of a venv with quixstreams and psycopg2 (default {DEFAULT_QUIX_PYTHON} if it exists)")
    ap.add_argument("--quix-commit-every", type=int, default=10_000,
                    help="Quix's commit_every: a checkpoint (sink flush, then commit) every this many "
                         "messages, as kpipe's batch.max_records 10000 (default); 0 = Quix's default, "
                         "a checkpoint only every commit_interval (5 s)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds each child may take (default 300)")
    ap.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    # Internal: one child.
    for name in ("--child", "--topic", "--table", "--group", "--mark", "--tmp"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child == "quix":
        quix_child(a)
        return 0
    sys.path.insert(0, str(HERE))
    if a.child == "kpipe":
        kpipe_child(a)
        return 0

    import bench

    if not a.quix_python:
        bench.say(f"no Quix python ({DEFAULT_QUIX_PYTHON} is missing; see --quix-python): measuring kpipe only")
    broker = None
    tmp = Path(tempfile.mkdtemp(prefix="kpipe-quix-"))
    try:
        if a.brokers:
            bootstrap = a.brokers
        else:
            from kpipe.broker import EmbeddedBroker
            broker = EmbeddedBroker().start()
            bootstrap = broker.bootstrap
        topic = f"quixcmp-{uuid.uuid4().hex[:8]}"
        bench.create_topic(bootstrap, topic, a.partitions)
        prod_s = bench.produce_all(bootstrap, topic, a.messages, a.partitions, "none")
        bench.say(f"produced {a.messages:,} messages to {topic} in {prod_s:.1f} s")
        kinds = ["kpipe"] + (["quix"] if a.quix_python else [])
        runs: dict[str, list] = {k: [] for k in kinds}
        for i in range(a.repeat):
            for kind in kinds:
                row = run_child(kind, a, bootstrap, topic, tmp)
                row["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
                runs[kind].append(row)
                bench.say(f"{kind} ({i + 1}/{a.repeat}): {row['drain90_msg_per_s']:,} msg/s in drain, "
                          f"{row['cpu_us_per_msg']} CPU µs/msg, {row['peak_rss_mib']} MiB, verified {row['verified']}")
        rows = [median(runs[k]) for k in kinds]
        if a.json:
            print(json.dumps({"messages": a.messages, "partitions": a.partitions, "repeat": a.repeat,
                              "results": rows}, indent=2))
        else:
            print(table(rows))
        return 0 if all(r["verified"] for r in rows) else 1
    finally:
        if broker is not None:
            broker.stop()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

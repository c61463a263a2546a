"""kpipe run as a service, against the real broker: Prometheus metrics that match what landed,
/healthz and /readyz, systemd's notify protocol on a real datagram socket, JSON logs without
the spec's passwords, and the start-up failures of --metrics-port."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid

import yaml
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from conftest import count_published, records_in, write_spec
from kpipe.kafka_admin import create_topic
from kit import (Proc, event, produce_events, produce_values, run_kpipe, seal_events, stop_cleanly, unique,
                 wait_for)
from sqlkit import dbs, write_sql_spec  # noqa: F401

POISON = b'{"id": "not closed'
_SERVING = re.compile(r"serving metrics on http://[^:]+:(\d+)/metrics")


# -- helpers ---------------------------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict:
    """``{(sample name, frozenset of non-pipeline labels): value}`` from /metrics, parsed by
    prometheus_client's own parser; every kpipe sample must carry the pipeline label."""
    status, text = get(port, "/metrics")
    assert status == 200, text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("kpipe_"):
                labels = dict(s.labels)
                assert labels.pop("pipeline", None), s
                out[(s.name, frozenset(labels.items()))] = s.value
    return out


def m(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())))


def serving_port(proc: Proc) -> int:
    found = wait_for(lambda: _SERVING.search(proc.stderr()), 30, "the metrics endpoint", [proc])
    return int(found[1])


def skip_spec(tmp_path, brokers, topic, out, name):
    spec = write_spec(tmp_path, brokers, topic, out, name=name, max_age="300ms")
    doc = yaml.safe_load(spec.read_text())
    doc["errors"] = {"default": "skip"}
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def end_offsets(brokers: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": brokers, "group.id": unique("ends")})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(4)}
    finally:
        c.close()


class NotifySocket:
    """A datagram socket standing in for systemd's: collects what kpipe sends, in order."""

    def __init__(self, address: str):
        self.env = address  # as NOTIFY_SOCKET spells it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the sender's pid, as systemd checks
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []  # (monotonic arrival, one KEY=VALUE line)
        self.senders: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    def _recv(self):
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            for level, kind, creds in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    self.senders.add(struct.unpack("iII", creds[:12])[0])
            now = time.monotonic()
            self.messages.extend((now, line) for line in data.decode().splitlines())

    def lines(self) -> list[str]:
        return [line for _, line in list(self.messages)]

    def first(self, line: str) -> int | None:
        lines = self.lines()
        return lines.index(line) if line in lines else None

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def env_with(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(extra)
    return env


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_match_what_landed_and_the_health_endpoints_answer(brokers, topic, tmp_path):
    items = [(i % 4, str(i), POISON if i == 1001 else event(i)) for i in range(2000)]
    produce_values(brokers, topic, items)
    total = seal_events(brokers, topic, 2000)  # so the broker's ListOffsets is exact (see kit.seal)
    good = total - 1
    out = tmp_path / "out"
    spec = skip_spec(tmp_path, brokers, topic, out, unique("metrics"))
    proc = Proc(tmp_path / "logs", "run", "run", str(spec), "--metrics-port", "0", "--metrics-host", "127.0.0.1")
    try:
        port = serving_port(proc)
        assert get(port, "/healthz")[0] == 200
        # End offsets are refreshed from librdkafka's cache once a second, per partition: wait
        # for every partition's, not only the last one's.
        wait_for(lambda: (s := scrape(port)) and m(s, "kpipe_messages_written_total") == good
                 and all(m(s, "kpipe_partition_lag", topic=topic, partition=p) == 0 for p in range(4)), 60,
                 "every good record written", [proc])
        s = scrape(port)
        assert records_in(out) == good == m(s, "kpipe_messages_written_total")
        assert m(s, "kpipe_messages_consumed_total") == total
        assert m(s, "kpipe_bad_records_total", stage="deserialize", policy="skip") == 1
        assert m(s, "kpipe_records_skipped_total") == 1 and m(s, "kpipe_records_dead_lettered_total") == 0
        batches = m(s, "kpipe_batches_written_total")
        assert batches == count_published(out, topic) >= 4
        assert m(s, "kpipe_batch_records_count") == batches and m(s, "kpipe_batch_records_sum") == good
        assert m(s, "kpipe_batch_records_bucket", le="+Inf") == batches
        assert m(s, "kpipe_sink_write_seconds_count") >= 1 and m(s, "kpipe_commit_seconds_count") >= 1
        assert m(s, "kpipe_partitions_assigned") == 4 and m(s, "kpipe_sink_up") == 1
        ends = end_offsets(brokers, topic)
        for p in range(4):
            assert m(s, "kpipe_partition_end_offset", topic=topic, partition=p) == ends[p] == 501
            assert m(s, "kpipe_partition_committed_offset", topic=topic, partition=p) == 501
            assert m(s, "kpipe_partition_position_offset", topic=topic, partition=p) == 501
            assert m(s, "kpipe_partition_lag", topic=topic, partition=p) == 0
        assert m(s, "kpipe_phase", phase="running") == 1 and m(s, "kpipe_phase", phase="starting") == 0
        assert m(s, "kpipe_last_loop_age_seconds") < 5
        assert m(s, "kpipe_healthy") == 1 and m(s, "kpipe_ready") == 1
        assert get(port, "/healthz")[0] == 200
        status, body = get(port, "/readyz")
        assert status == 200 and "4 partitions assigned" in body, body

        # While it runs: more records, and the counters follow what lands.
        produce_events(brokers, topic, 400, start=total)
        wait_for(lambda: m(scrape(port), "kpipe_messages_written_total") == good + 400, 60, "400 more written", [proc])
        s = scrape(port)
        assert records_in(out) == good + 400 and m(s, "kpipe_messages_consumed_total") == total + 400
        assert m(s, "kpipe_batches_written_total") == count_published(out, topic)
        assert get(port, "/nope")[0] == 404
        stop_cleanly(proc)
    finally:
        proc.kill()


def test_a_run_that_cannot_start_is_unready_then_unhealthy_and_stops_pinging(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: stuck\nsource:\n  brokers: 127.0.0.1:1\n  topic: t\n  connect_timeout: 60s\nsink:\n"
                    f"  type: files\n  path: {tmp_path / 'out'}\n")
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    proc = Proc(tmp_path / "logs", "stuck", "run", str(spec), "--metrics-port", "0", "--metrics-host", "127.0.0.1",
                "--health-stall", "2", env=env_with(NOTIFY_SOCKET=sock.env, WATCHDOG_USEC="200000"))
    try:
        port = serving_port(proc)
        status, body = get(port, "/readyz")
        assert status == 503 and "not ready: starting" in body
        status, body = wait_for(lambda: (r := get(port, "/healthz"))[0] == 503 and r, 10, "/healthz 503", [proc])
        assert "stalled: the loop last turned" in body and "(limit 2s)" in body
        s = scrape(port)
        assert m(s, "kpipe_healthy") == 0 and m(s, "kpipe_ready") == 0 and m(s, "kpipe_phase", phase="starting") == 1
        assert m(s, "kpipe_last_loop_age_seconds") > 2
        assert "WATCHDOG=1" in sock.lines(), sock.lines()  # pinged while the start was young
        pings = sock.lines().count("WATCHDOG=1")
        time.sleep(1.0)  # five ping intervals
        assert sock.lines().count("WATCHDOG=1") == pings, "kept pinging while stalled"
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 3, proc.stderr()[-2000:]
        assert "cannot reach the brokers at 127.0.0.1:1 stopped while trying" in proc.stderr()
        wait_for(lambda: "STOPPING=1" in sock.lines(), 5, "STOPPING=1")
        assert "READY=1" not in sock.lines()
    finally:
        proc.kill()
        sock.close()


# -- systemd ---------------------------------------------------------------------------------


def test_sd_notify_sends_ready_then_watchdog_then_stopping(brokers, topic, tmp_path):
    produce_events(brokers, topic, 100)
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=unique("notify"), max_age="300ms")
    sock = NotifySocket(f"@kpipe-test-{uuid.uuid4().hex}")  # the abstract namespace, as systemd uses
    proc = Proc(tmp_path / "logs", "notify", "run", str(spec), "--log-format", "json",
                env=env_with(NOTIFY_SOCKET=sock.env, WATCHDOG_USEC="1000000"))
    try:
        wait_for(lambda: sock.first("READY=1") is not None, 60, "READY=1", [proc])
        ready = sock.first("READY=1")
        wait_for(lambda: sock.lines()[ready:].count("WATCHDOG=1") >= 2, 10, "two pings after READY", [proc])
        wait_for(lambda: records_in(out) == 100, 30, "the records", [proc])
        wait_for(lambda: any(line.startswith("STATUS=running, 4 partitions, consumed 100, written 100")
                             for line in sock.lines()), 10, "a STATUS line with the totals", [proc])
        assert sock.first("STOPPING=1") is None
        stop_cleanly(proc)
        wait_for(lambda: sock.first("STOPPING=1") is not None, 5, "STOPPING=1")
        lines = sock.lines()
        stopping = lines.index("STOPPING=1")
        assert lines.count("READY=1") == 1 and lines.count("STOPPING=1") == 1
        assert ready < lines.index("WATCHDOG=1", ready) < stopping, lines
        assert lines[-1].startswith("STATUS=done"), lines[-3:]
        # --log-format json: every line of stderr is one object with the four fields
        records = [json.loads(line) for line in proc.stderr().splitlines()]
        assert records and all({"ts", "level", "logger", "message"} <= set(r) for r in records)
        assert any(r["logger"] == "kpipe.run" and r["message"].startswith("assigned ") for r in records)
        name = yaml.safe_load(spec.read_text())["name"]
        assert all(r.get("pipeline") == name for r in records), records[:3]
    finally:
        proc.kill()
        sock.close()


def test_the_supervisor_speaks_to_systemd_for_all_its_pipelines(brokers, topic, tmp_path):
    """Many specs in one Type=notify unit: READY=1 once both pipelines are ready, watchdog pings,
    STOPPING=1; every datagram from the supervisor itself (NotifyAccess=main), none from a child."""
    topic2 = topic + "-sd"
    create_topic(brokers, topic2, 4)
    produce_events(brokers, topic, 100)
    produce_events(brokers, topic2, 60)
    a, b = unique("sd-a"), unique("sd-b")
    spec_a = write_spec(tmp_path, brokers, topic, tmp_path / "a", name=a, max_age="300ms", filename="a.yaml")
    spec_b = write_spec(tmp_path, brokers, topic2, tmp_path / "b", name=b, max_age="300ms", filename="b.yaml")
    sock = NotifySocket(f"@kpipe-test-{uuid.uuid4().hex}")
    sup = Proc(tmp_path / "logs", "sup", "run", str(spec_a), str(spec_b), "--no-progress",
               env=env_with(NOTIFY_SOCKET=sock.env, WATCHDOG_USEC="1000000"))
    try:
        wait_for(lambda: sock.first("READY=1") is not None, 60, "READY=1", [sup])
        ready = sock.first("READY=1")
        # Sent with READY=1: both children reported ready (assigned, sink reachable).
        assert sock.lines()[ready + 1].startswith("STATUS=2/2 pipelines ready"), sock.lines()
        wait_for(lambda: sock.lines()[ready:].count("WATCHDOG=1") >= 2, 10, "two pings after READY", [sup])
        wait_for(lambda: any(line.startswith("STATUS=2/2 pipelines ready, consumed 160, written 160")
                             for line in sock.lines()), 20, "a STATUS line with both totals", [sup])
        assert sock.first("STOPPING=1") is None
        stop_cleanly(sup, timeout=30)
        wait_for(lambda: sock.first("STOPPING=1") is not None, 5, "STOPPING=1")
        lines = sock.lines()
        assert lines.count("READY=1") == 1 and lines.count("STOPPING=1") == 1
        assert sock.senders == {sup.popen.pid}, (sock.senders, sup.popen.pid)
    finally:
        sup.kill()
        sock.close()


# -- logs ------------------------------------------------------------------------------------


def test_json_logs_never_show_the_spec_passwords(brokers, topic, tmp_path, dbs):
    db = dbs("postgres")
    secret = f"pg-{uuid.uuid4().hex[:12]}"  # trust auth: any password connects
    (tmp_path / "pg_password").write_text(secret + "\n")
    produce_events(brokers, topic, 40)
    table, group = db.table("ops"), db.group("ops")
    url = db.url.replace("postgres@", "postgres:${file:pg_password}@", 1)
    assert "${file:" in url
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, sink={"type": "postgres", "url": url, "table": table})
    proc = run_kpipe("run", str(spec), "--until-caught-up", "-v", "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    assert db.count(table) == 40
    records = [json.loads(line) for line in proc.stderr.splitlines()]
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    start = [r for r in records if r["message"].startswith(f"pipeline {group}: ")]
    assert len(start) == 1 and "url=postgresql+psycopg://postgres:***@" in start[0]["message"], start
    assert secret not in proc.stderr and secret[3:] not in proc.stderr


# -- start-up failures -----------------------------------------------------------------------


def test_metrics_port_without_prometheus_client_or_with_the_port_taken_exits_1(tmp_path):
    spec = write_spec(tmp_path, "127.0.0.1:1", "t", tmp_path / "out")
    shadow = tmp_path / "shadow" / "prometheus_client"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed here')\n")
    proc = run_kpipe("run", str(spec), "--metrics-port", "0",
                     env=env_with(PYTHONPATH=str(shadow.parent)), timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert 'pip install "kpipe[metrics]"' in proc.stderr and "Traceback" not in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_kpipe("run", str(spec), "--metrics-port", str(port), "--metrics-host", "127.0.0.1", timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stderr


def test_a_member_with_no_partitions_is_ready(brokers, tmp_path):
    """Two members, one partition: the member the group gives nothing is ready (and idle)."""
    topic = unique("one-partition")
    create_topic(brokers, topic, 1)
    spec = write_spec(tmp_path, brokers, topic, tmp_path / "out", name=unique("spare"))
    procs = [Proc(tmp_path / "logs", f"m{i}", "run", str(spec), "--metrics-port", "0", "--metrics-host", "127.0.0.1")
             for i in range(2)]
    try:
        ports = [serving_port(p) for p in procs]
        wait_for(lambda: all(get(port, "/readyz")[0] == 200 for port in ports)
                 and sorted(m(scrape(port), "kpipe_partitions_assigned") for port in ports) == [0, 1],
                 60, "both ready, one partition between them", procs)
        assert sorted(get(port, "/readyz")[1] for port in ports) == [
            "ready: 0 partitions assigned, sink reachable\n", "ready: 1 partition assigned, sink reachable\n"]
        stop_cleanly(*procs)
    finally:
        for p in procs:
            p.kill()

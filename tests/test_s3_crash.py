"""The S3 sink through the CLI, against the real broker and moto's S3 server over HTTP:
SIGKILL at random moments loses and duplicates nothing, a replay into a second prefix writes
byte-identical objects, and S3 errors end the run with the documented exit codes.

Every kpipe here is a real subprocess (``python -m kpipe run``); the objects in the bucket are
the only evidence.
"""
from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kit import FAST_SESSION, MID_STREAM_KILLS, Proc, final_run, kill_rounds, kill_when, mid_stream, produce_values, run_kpipe, seal, summary, unique
from s3kit import (bucket, committed, moto_server, object_offsets, objects, read_records, s3,  # noqa: F401
                   state_of, uploads, write_s3_spec)

MAX_RECORDS = 500
COUNTRIES = ("DE", "FR", "NL")
T = "{topic}/{partition}/country={value.country}"


def order(i: int) -> dict:
    return {"id": i, "country": COUNTRIES[i % 3], "amount": i % 997}


def produce_orders(brokers: str, topic: str, n: int, start: int = 0) -> None:
    """Orders ``start..start+n-1``, order i to partition i % 4."""
    produce_values(brokers, topic, ((i % 4, str(i), order(i)) for i in range(start, start + n)))


def seal_orders(brokers: str, topic: str, produced: int) -> int:
    seal(brokers, topic, lambda p: order(produced + p))
    return produced + 4


def landed(s3, bucket: str, prefix: str) -> tuple[Counter, dict]:
    """(ids in every object, parsed completely; {key: (partition, first, last)})."""
    ids: Counter = Counter()
    where = {}
    for key, data in objects(s3, bucket, prefix + "/").items():
        for r in read_records(key, data):  # a truncated object would fail here
            ids[r["id"]] += 1
        where[key] = object_offsets(key)
    return ids, where


def committed_records(s3, bucket: str, prefix: str, topic: str) -> int:
    """Records in objects below their partition's committed offset."""
    heads = committed(s3, bucket, prefix, topic)
    n = 0
    for key, data in objects(s3, bucket, prefix + "/").items():
        p, first, last = object_offsets(key)
        if last < heads.get(p, 0):
            n += len(read_records(key, data))
    return n


# -- SIGKILL ---------------------------------------------------------------------------------


def test_sigkill_at_random_moments_leaves_every_record_exactly_once(brokers, topic, tmp_path, moto_server, s3,
                                                                    bucket):
    seed = int(os.environ.get("KPIPE_CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed: {seed} (rerun with KPIPE_CRASH_SEED={seed})")
    rng = random.Random(seed)
    prefix = "raw/orders"
    logs = tmp_path / "logs"
    logs.mkdir()
    # Three objects per batch (one per country), so kills land between a batch's objects too.
    spec = write_s3_spec(tmp_path, brokers, topic, moto_server.url, bucket, prefix, name=unique("s3crash"),
                         max_records=MAX_RECORDS, options=FAST_SESSION, format="jsonl", compression="gzip",
                         path=T)
    produced = 24_000
    produce_orders(brokers, topic, produced)

    def count() -> int:
        return sum(len(page.get("Contents", [])) for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix + "/" + topic))

    modes = ["objects"] * 4 + ["time"] * 2
    rng.shuffle(modes)
    kills = []      # (mode, when, objects this run, complete?)
    snapshots = []  # (committed heads, {key: etag}) at each kill
    procs: list[Proc] = []
    try:
        for i, mode in kill_rounds(kills, modes):
            done = committed_records(s3, bucket, prefix, topic)
            extra = rng.choice([0, 3000, 6000]) if i else 0
            if mode == "objects" and (produced + extra - done) // MAX_RECORDS < 24:
                extra = 12_000  # an objects kill needs batches still to come
            if extra:
                produce_orders(brokers, topic, extra, start=produced)
                produced += extra
            before = count()
            start = sum(committed(s3, bucket, prefix, topic).values())
            proc = Proc(logs, f"kill{i}", "run", str(spec))
            procs.append(proc)
            # Batches still to come in this run: aim K in their first half. Progress is read from
            # the 4 state objects, not a listing: listing hundreds of keys in moto took longer
            # than writing the rest, so the kill came after the run had finished.
            k = rng.randint(1, max(1, min(12, (produced - done) // MAX_RECORDS // 2)))
            what = kill_when(proc, rng, mode, (0.3, 8.0),
                             lambda: sum(committed(s3, bucket, prefix, topic).values()) >= start + k * MAX_RECORDS,
                             f"{k} batches", jitter=0.02, interval=0.005, run=i)
            heads = committed(s3, bucket, prefix, topic)
            listing = {o["Key"]: o["ETag"] for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix + "/" + topic) for o in page.get("Contents", [])}
            snapshots.append((heads, listing))
            complete = sum(heads.values()) >= produced
            kills.append((mode, what, count() - before, complete))
            print(f"kill {i}: {mode} after {what}: +{kills[-1][2]} objects, committed {heads}, complete={complete}")

        produced = seal_orders(brokers, topic, produced)
        # Let the group forget the last killed run before the final one joins (see test_crash.py).
        time.sleep(FAST_SESSION["session.timeout.ms"] / 1000 + 1.5)
        already = committed_records(s3, bucket, prefix, topic)
        final = final_run(spec, logs)
    finally:
        for proc in procs:
            proc.kill()

    ids, where = landed(s3, bucket, prefix)
    missing = set(range(produced)) - set(ids)
    dups = {i: c for i, c in ids.items() if c > 1}
    assert not missing and not dups, f"{len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(dups)} duplicated"
    for p in range(4):
        st = state_of(s3, bucket, prefix, topic, p)
        assert st["pending"] is None, st
        assert st["next_offset"] == len(range(p, produced, 4)), (p, st)
    assert uploads(s3, bucket) == [], "a multipart upload was left dangling"
    final_listing = {o["Key"]: o["ETag"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix + "/" + topic) for o in page.get("Contents", [])}
    for i, (heads, listing) in enumerate(snapshots):  # committed objects are immutable
        for key, etag in listing.items():
            p, first, last = object_offsets(key)
            if last < heads.get(p, 0):
                assert final_listing.get(key) == etag, f"committed {key} changed or vanished after kill {i}"
    assert len(mid_stream(kills)) >= MID_STREAM_KILLS, kills
    consumed, written, _ = summary(final.stderr)
    assert written == produced - already <= consumed, (consumed, written, produced, already)


# -- replay ----------------------------------------------------------------------------------


def test_replay_from_earliest_into_a_second_prefix_is_byte_identical(brokers, topic, tmp_path, moto_server, s3,
                                                                     bucket):
    # Cuts the data decides: everything produced first, max_records dividing each partition's
    # 1500 orders, a max_age no run reaches, and --until-caught-up ending at the sealed end.
    produce_orders(brokers, topic, 6000)
    seal_orders(brokers, topic, 6000)
    keys = {}
    for run in ("first", "second"):
        spec = write_s3_spec(tmp_path, brokers, topic, moto_server.url, bucket, run, name=unique(f"replay-{run}"),
                             max_records=500, max_age="60s", filename=f"{run}.yaml", format="avro",
                             compression="gzip", path="{topic}/dt={timestamp:%Y-%m-%d}/country={value.country}")
        proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
        assert proc.returncode == 0, proc.stderr
        keys[run] = {k.split("/", 1)[1]: v for k, v in objects(s3, bucket, run + "/").items()}
    assert len(keys["first"]) >= 4 * 3 * 3, sorted(keys["first"])  # 4 partitions x 3 countries x 3+ batches
    assert sorted(keys["first"]) == sorted(keys["second"])
    assert keys["first"] == keys["second"]
    assert sum(len(read_records(k, v)) for k, v in keys["first"].items()) == 6004


# -- errors ----------------------------------------------------------------------------------


def test_a_missing_bucket_fails_fast_with_exit_2(brokers, topic, tmp_path, moto_server):
    spec = write_s3_spec(tmp_path, brokers, topic, moto_server.url, "kp-no-such-bucket", "x", name=unique("nobucket"))
    started = time.monotonic()
    proc = run_kpipe("run", str(spec), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "bucket 'kp-no-such-bucket' does not exist" in proc.stderr and "create it" in proc.stderr, proc.stderr
    assert time.monotonic() - started < 20
    assert "kpipe-test-secret" not in proc.stderr


class _SlowDown(BaseHTTPRequestHandler):
    """An S3 endpoint whose bucket exists (HEAD answers 200) but that answers every other request
    503 SlowDown, as S3 does when it throttles."""

    hits = 0
    BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.command == "HEAD":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        type(self).hits += 1
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

    def log_message(self, *args):
        pass


def test_slowdown_is_retried_with_backoff_then_exit_3(brokers, topic, tmp_path, moto_server):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # The first request past the bucket check is reading the offsets, on assignment.
        spec = write_s3_spec(tmp_path, brokers, topic, f"http://127.0.0.1:{server.server_port}", "lake", "x",
                             name=unique("slowdown"), addressing_style="path", options=FAST_SESSION,
                             retry={"max_attempts": 2, "initial_backoff": "100ms", "max_backoff": "200ms",
                                    "max_elapsed": "0s"})
        proc = run_kpipe("run", str(spec), timeout=90)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 3, proc.stderr
    assert "SlowDown 503" in proc.stderr and "retry 1/1" in proc.stderr, proc.stderr
    assert _SlowDown.hits >= 2 * 3, _SlowDown.hits  # botocore's 3 tries, under kpipe's 2 attempts

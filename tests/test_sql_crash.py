"""The PostgreSQL sink under failure, through the CLI: SIGKILL at random moments, a group
member dying mid-stream, and the database going away (through a TCP proxy that is cut).

Evidence is what the database holds: every (topic, partition, offset) exactly once, and the
``kpipe_offsets`` rows agreeing with the rows.
"""
from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager

import pytest

from kit import (ALL, FAST_SESSION, MID_STREAM_KILLS, BurstProducer, Proc, final_run, kill_rounds, kill_when, mid_stream, no_traceback, ownership,
                 produce_events, run_kpipe, seal_events, split, stop_cleanly, summary, wait_for)
from sqlkit import (TcpProxy, assert_rows_exactly_once, committed, dbs, offsets_state,  # noqa: F401
                    write_sql_spec)

META = ["_topic", "_partition", "_offset", "_key"]


def pg_sink(db, table, url=None, parse: str = "client") -> dict:
    return {"type": "postgres", "url": url or db.url, "table": table, "mode": "insert", "metadata_columns": META,
            "parse": parse}


def per_partition(db, table) -> dict[int, int]:
    try:
        return dict(db.rows(f"SELECT _partition, count(*) FROM {db.q(table)} GROUP BY _partition"))
    except Exception:  # the table does not exist yet
        return {}


def finish_exactly_once(db, brokers, topic, table, group, produced):
    counts = assert_rows_exactly_once(db, table, topic, range(produced))
    assert db.offsets(group) == {(topic, p): c for p, c in counts.items()}
    assert committed(brokers, group, topic) == counts


# -- 2. SIGKILL at random moments ----------------------------------------------------------


@pytest.mark.parametrize("parse", ["client", "server"])  # server: PostgreSQL parses the JSON
def test_sigkill_at_random_moments_loses_and_duplicates_no_row(brokers, topic, tmp_path, dbs, parse):
    seed = int(os.environ.get("KPIPE_SQL_CRASH_SEED", random.randrange(2**32)))
    print(f"sql crash test seed: {seed} (rerun with KPIPE_SQL_CRASH_SEED={seed})")
    rng = random.Random(seed)
    db = dbs("postgres")
    table, group = db.table("kill"), db.group("kill")
    logs = tmp_path / "logs"
    batch = 500
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=batch, max_age="1s",
                          options=FAST_SESSION, sink=pg_sink(db, table, parse=parse))
    produced = 40_000
    produce_events(brokers, topic, produced)

    modes = ["rows"] * 4 + ["time"] * 2
    rng.shuffle(modes)
    kills = []  # (mode, what, rows this run added before the kill, all rows in at the kill?)
    procs: list[Proc] = []
    try:
        for i, mode in kill_rounds(kills, modes):
            before = db.count(table)
            k = rng.randint(1, 30)
            # A write call holds up to one consumed chunk (10,000 records) in one transaction,
            # so keep two chunks beyond the kill point in the backlog.
            if mode == "rows" and produced - before < k * batch + 20_000:
                extra = k * batch + 24_000  # a multiple of 4: ids stay 4 * offset + partition
                produce_events(brokers, topic, extra, start=produced)
                produced += extra
            elif i and rng.random() < 0.5:
                produce_events(brokers, topic, 8000, start=produced)
                produced += 8000
            proc = Proc(logs, f"kill{i}", "run", str(spec))
            procs.append(proc)
            target = before + k * batch - rng.randint(0, batch - 1)
            what = kill_when(proc, rng, mode, (0.3, 6.0), lambda: db.count(table) >= target,
                             f"{target - before} rows", jitter=0.3, interval=0.002, run=i)
            after = db.count(table)
            kills.append((mode, what, after - before, after >= produced))
            print(f"kill {i}: {mode} after {what}: +{after - before} rows, complete={after >= produced}")

        produced = seal_events(brokers, topic, produced)
        already = db.count(table)
        final = final_run(spec, logs)
    finally:
        for proc in procs:
            proc.kill()

    finish_exactly_once(db, brokers, topic, table, group, produced)
    assert len(mid_stream(kills)) >= MID_STREAM_KILLS, kills
    # The final run resumed from the offsets in the database: it read only what was missing.
    consumed, written, _ = summary(final.stderr)
    assert consumed == written == produced - already, (consumed, written, produced, already)


# -- 3. two members of one group, one SIGKILLed mid-stream ---------------------------------


def test_group_member_killed_mid_stream_survivor_takes_over(brokers, topic, tmp_path, dbs):
    db = dbs("postgres")
    table, group = db.table("grp"), db.group("grp")
    logs = tmp_path / "logs"
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=300, max_age="500ms",
                          sink=pg_sink(db, table))
    produce_events(brokers, topic, 8000)
    producer = BurstProducer(brokers, topic, start=8000, burst=100, pause=0.05)
    producer.start()
    a = b = None
    try:
        a = Proc(logs, "a", "run", str(spec))
        wait_for(lambda: ownership(a) == ALL, 45, "a to own every partition", [a])
        b = Proc(logs, "b", "run", str(spec))
        owned_a, owned_b = wait_for(lambda: split(a, b), 45, "a and b to split the partitions", [a, b])
        at_split = per_partition(db, table)
        wait_for(lambda: all(per_partition(db, table).get(p, 0) > at_split.get(p, 0) + 300 for p in ALL),
                 30, "both members to write after the split", [a, b])
        a.kill()  # mid-stream: records keep coming, a was writing its partitions
        killed_at = time.monotonic()
        at_kill = per_partition(db, table)
        no_traceback(a)
        wait_for(lambda: ownership(b) == ALL, 40, "b to take over a's partitions", [b])
        took = time.monotonic() - killed_at
        wait_for(lambda: all(per_partition(db, table).get(p, 0) > at_kill.get(p, 0) + 300 for p in owned_a),
                 30, "b to write a's former partitions", [b])
        produced = producer.stop()
        wait_for(lambda: db.count(table) >= produced, 60, f"all {produced} rows", [b])
        time.sleep(1.0)  # anything extra (a duplicate) would land now
        stop_cleanly(b)
    finally:
        producer.stop_event.set()
        for proc in (a, b):
            if proc is not None:
                proc.kill()
    no_traceback(b)
    print(f"a owned {sorted(owned_a)}, b owned {sorted(owned_b)}; b took over after {took:.1f}s")
    finish_exactly_once(db, brokers, topic, table, group, produced)


# -- 7. the database goes away -------------------------------------------------------------


@contextmanager
def _proxied_run(brokers, topic, tmp_path, dbs, prefix: str, retry: dict):
    """A run of a PostgreSQL pipeline writing through a cuttable proxy, its topic holding a
    backlog of 4000 events and fed more by a producer; on leaving, the producer and the run are
    stopped and the proxy closed. Yields (db, table, group, proxy, spec, producer, proc)."""
    db = dbs("postgres")
    table, group = db.table(prefix), db.group(prefix)
    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    # trust auth ignores the password; it is there to prove it is never printed
    url = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{proxy.port}/test"
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_records=300, max_age="500ms",
                          retry=retry, sink=pg_sink(db, table, url))
    produce_events(brokers, topic, 4000)
    producer = BurstProducer(brokers, topic, start=4000, burst=100, pause=0.05)
    producer.start()
    proc = None
    try:
        proc = Proc(tmp_path / "logs", "run", "run", str(spec))
        yield db, table, group, proxy, spec, producer, proc
    finally:
        producer.stop_event.set()
        if proc is not None:
            proc.kill()
        proxy.close()


def test_database_outage_is_retried_and_recovers_exactly_once(brokers, topic, tmp_path, dbs):
    retry = {"max_attempts": 30, "initial_backoff": "200ms", "max_backoff": "1s"}
    with _proxied_run(brokers, topic, tmp_path, dbs, "out", retry) as (db, table, group, proxy, spec, producer, proc):
        wait_for(lambda: db.count(table) >= 4000, 45, "the backlog to be written", [proc])
        proxy.cut()
        time.sleep(0.5)  # a COMMIT in flight at the cut may still land on the server
        at_cut = db.count(table)
        time.sleep(2.5)
        assert proc.alive(), proc.stderr()[-3000:]
        during = db.count(table)
        assert during == at_cut, "rows landed while the database was unreachable?"
        proxy.restore()
        wait_for(lambda: db.count(table) >= at_cut + 1500, 45, "writes to resume", [proc])
        produced = producer.stop()
        wait_for(lambda: db.count(table) >= produced, 60, f"all {produced} rows", [proc])
        time.sleep(1.0)
        stop_cleanly(proc)
    err = proc.stderr()
    assert "Traceback" not in err, err
    assert "writing to sink postgres failed" in err and "retry 1/29" in err, err[-3000:]
    assert "s3cret" not in err, err
    finish_exactly_once(db, brokers, topic, table, group, produced)


def test_database_gone_for_good_exits_3_and_commits_nothing_more(brokers, topic, tmp_path, dbs):
    retry = {"max_attempts": 3, "initial_backoff": "100ms", "max_backoff": "200ms", "max_elapsed": "0s"}
    with _proxied_run(brokers, topic, tmp_path, dbs, "gone", retry) as (db, table, group, proxy, spec, producer, proc):
        wait_for(lambda: db.count(table) >= 4300, 45, "writes past the backlog", [proc])
        proxy.cut()
        rc = proc.wait(30)
        assert rc == 3, f"rc={rc}\n{proc.stderr()[-3000:]}"
        produced = producer.stop()
    err = proc.stderr()
    assert "Traceback" not in err, err
    assert "still failing after 3 attempts" in err, err[-3000:]
    assert "s3cret" not in err, err

    # Nothing past the last durable batch: each partition's stored offset is exactly its rows,
    # and the group never committed past it.
    per, stored, kafka = offsets_state(db, brokers, topic, table, group)
    landed = sum(len(offs) for offs in per.values())
    for p in ALL:
        offs = sorted(per.get(p, []))
        assert offs == list(range(len(offs))), f"partition {p}: rows not contiguous from 0"
        assert stored.get((topic, p), 0) == len(offs), (p, stored, len(offs))
        assert kafka[p] <= len(offs), (p, kafka, len(offs))
    assert landed < produced

    # Through a restored proxy, a later run finishes the job exactly once.
    produced = seal_events(brokers, topic, produced)
    proxy.restore()
    try:
        final = run_kpipe("run", str(spec), "--until-caught-up", timeout=90)
    finally:
        proxy.close()
    assert final.returncode == 0, final.stderr
    assert "s3cret" not in final.stderr
    finish_exactly_once(db, brokers, topic, table, group, produced)
    consumed, written, _ = summary(final.stderr)
    assert consumed == written == produced - landed

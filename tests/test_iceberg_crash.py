"""The iceberg sink through the CLI against the real broker: SIGKILL at random moments under a
live producer, then a drain, leaves every record in the table exactly once; a writer stopped
(SIGSTOP) holding a batch while a second run drains the topic cannot land its stale commit when
it wakes (SIGCONT). Read back with pyiceberg's scan and with pyarrow over the snapshot's files."""
from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import yaml

from kit import (FAST_SESSION, BurstProducer, Proc, final_run, let_run, produce_events, run_kpipe, seal_events,
                 sigkill, unique)

pytest.importorskip("pyiceberg")
from pyiceberg.catalog import load_catalog  # noqa: E402
from pyiceberg.exceptions import NoSuchTableError  # noqa: E402

TABLE = "kpipe.events"


def catalog_props(root: Path) -> dict:
    return {"type": "sql", "uri": f"sqlite:///{root}/catalog.db", "warehouse": f"file://{root}/warehouse"}


def iceberg_spec(tmp_path: Path, brokers: str, topic: str, name: str, *, max_records: int = 300,
                 max_age: str = "300ms") -> Path:
    doc = {"name": name,
           "source": {"brokers": brokers, "topic": topic, "options": dict(FAST_SESSION)},
           "sink": {"type": "iceberg", "catalog": catalog_props(tmp_path), "table": TABLE},
           "batch": {"max_records": max_records, "max_age": max_age}}
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def table(root: Path):
    try:
        return load_catalog("kpipe", **catalog_props(root)).load_table(TABLE)
    except NoSuchTableError:
        return None


def landed(root: Path) -> Counter:
    """Ids in the current snapshot by pyiceberg; pyarrow over the same snapshot's files must agree."""
    t = table(root)
    ids = Counter(t.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())
    files = [task.file.file_path.removeprefix("file://") for task in t.scan().plan_files()]
    raw = Counter(pads.dataset(files, format="parquet").to_table(columns=["id"]).column("id").to_pylist()) \
        if files else Counter()
    assert raw == ids
    return ids


def assert_once(root: Path, produced: int) -> None:
    ids = landed(root)
    missing = set(range(produced)) - set(ids)
    dups = {i: c for i, c in ids.items() if c > 1}
    assert not missing and not dups, f"{len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(dups)} duplicated"


def test_sigkill_under_a_live_producer_leaves_every_record_exactly_once(brokers, topic, tmp_path):
    seed = int(os.environ.get("KPIPE_CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed: {seed} (rerun with KPIPE_CRASH_SEED={seed})")
    rng = random.Random(seed)
    name = unique("icebergcrash")
    spec = iceberg_spec(tmp_path, brokers, topic, name)
    producer = BurstProducer(brokers, topic, 0, burst=200, pause=0.05)
    producer.start()
    procs = []
    try:
        for i in range(4):
            proc = Proc(tmp_path / "logs", f"kill{i}", "run", str(spec))
            procs.append(proc)
            let_run(proc, rng.uniform(2.0, 4.0))
            sigkill(proc)
            time.sleep(FAST_SESSION["session.timeout.ms"] / 1000 + 0.5)  # the group forgets it
    finally:
        produced = producer.stop()
        for proc in procs:
            proc.kill()
    assert table(tmp_path) is not None, "no run wrote anything before its kill"
    produced = seal_events(brokers, topic, produced)
    final_run(spec, tmp_path / "logs")
    assert_once(tmp_path, produced)
    summary = table(tmp_path).current_snapshot().summary.additional_properties
    stored = {(t, p): o for t, p, o in yaml.safe_load(summary[f"kpipe.offsets.{name}"])}
    assert stored == {(topic, p): len(range(p, produced, 4)) for p in range(4)}
    lag = run_kpipe("lag", str(spec), "--json")  # reads the positions from the snapshot summary
    assert lag.returncode == 0, lag.stderr
    rows = json.loads(lag.stdout)["partitions"]
    assert {(r["partition"], r["committed"], r["source"], r["lag"]) for r in rows} == \
        {(p, len(range(p, produced, 4)), "sink", 0) for p in range(4)}
    check = run_kpipe("check", str(spec))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"stored offset of {topic}[0]: {len(range(0, produced, 4))}" in check.stdout


def _snapshots(root: Path) -> int:
    t = table(root)
    return len(t.snapshots()) if t is not None else 0


def test_a_stopped_writer_cannot_land_its_stale_commit_after_a_second_run_drained(brokers, topic, tmp_path):
    """The zombie is stopped inside a write (big batches: writing is most of its time), so when
    it wakes it goes on to commit what it read positions for before the drain. Rounds repeat
    until one stop landed inside a write (its log shows the fence)."""
    name = unique("icebergzombie")
    spec = iceberg_spec(tmp_path, brokers, topic, name, max_records=20_000, max_age="60s")
    produced, fenced = 0, []
    for round_ in range(3):
        produce_events(brokers, topic, 160_000, start=produced)
        produced += 160_000
        before = _snapshots(tmp_path)
        zombie = Proc(tmp_path / "logs", f"zombie{round_}", "run", str(spec))
        try:
            deadline = time.monotonic() + 60
            while _snapshots(tmp_path) < before + 1:  # its first write landed: the next is under way
                assert zombie.alive() and time.monotonic() < deadline, zombie.stderr()[-3000:]
                time.sleep(0.05)
            time.sleep(random.uniform(0.05, 0.3))
            zombie.signal(signal.SIGSTOP)
            produced = seal_events(brokers, topic, produced)
            time.sleep(FAST_SESSION["session.timeout.ms"] / 1000 + 1.0)  # its session expires
            final_run(spec, tmp_path / "logs")
            assert_once(tmp_path, produced)
            zombie.signal(signal.SIGCONT)
            time.sleep(3.0)  # it finishes the write it was in
        finally:
            zombie.signal(signal.SIGCONT)
            zombie.kill()
        assert_once(tmp_path, produced)  # whatever it did, nothing landed twice
        fenced = [ln for ln in zombie.stderr().splitlines() if "another writer" in ln]
        if fenced:
            break
    assert fenced, "no round stopped the zombie inside a write"

"""The delta sink through the CLI against the real broker: SIGKILL at random moments under a
live producer, then a drain, leaves every record in the table exactly once; a writer stopped
(SIGSTOP) holding a batch while a second run drains the topic cannot land its stale commit when
it wakes (SIGCONT). Read back with deltalake and with pyarrow over the version's files."""
from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
import yaml
from deltalake import DeltaTable

from kit import FAST_SESSION, BurstProducer, Proc, final_run, let_run, produce_events, seal_events, sigkill, unique


def delta_spec(tmp_path: Path, brokers: str, topic: str, uri: Path, name: str, *, max_records: int = 300,
               max_age: str = "300ms") -> Path:
    doc = {"name": name,
           "source": {"brokers": brokers, "topic": topic, "options": dict(FAST_SESSION)},
           "sink": {"type": "delta", "uri": str(uri)},
           "batch": {"max_records": max_records, "max_age": max_age}}
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def landed(uri: Path) -> Counter:
    """Ids in the table's current version, by deltalake; pyarrow over the same version's files
    must agree."""
    dt = DeltaTable(str(uri))
    ids = Counter(dt.to_pyarrow_table(columns=["id"]).column("id").to_pylist())
    files = [u.removeprefix("file://") for u in dt.file_uris()]
    raw = Counter(pads.dataset(files, format="parquet").to_table(columns=["id"]).column("id").to_pylist())
    assert raw == ids
    return ids


def assert_once(uri: Path, produced: int) -> None:
    ids = landed(uri)
    missing = set(range(produced)) - set(ids)
    dups = {i: c for i, c in ids.items() if c > 1}
    assert not missing and not dups, f"{len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(dups)} duplicated"


def test_sigkill_under_a_live_producer_leaves_every_record_exactly_once(brokers, topic, tmp_path):
    seed = int(os.environ.get("KPIPE_CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed: {seed} (rerun with KPIPE_CRASH_SEED={seed})")
    rng = random.Random(seed)
    uri = tmp_path / "table"
    name = unique("deltacrash")
    spec = delta_spec(tmp_path, brokers, topic, uri, name)
    producer = BurstProducer(brokers, topic, 0, burst=200, pause=0.05)
    producer.start()
    procs = []
    try:
        for i in range(5):
            proc = Proc(tmp_path / "logs", f"kill{i}", "run", str(spec))
            procs.append(proc)
            let_run(proc, rng.uniform(1.5, 4.0))
            sigkill(proc)
            time.sleep(FAST_SESSION["session.timeout.ms"] / 1000 + 0.5)  # the group forgets it
    finally:
        produced = producer.stop()
        for proc in procs:
            proc.kill()
    assert DeltaTable.is_deltatable(str(uri)), "no run wrote anything before its kill"
    produced = seal_events(brokers, topic, produced)
    final_run(spec, tmp_path / "logs")
    assert_once(uri, produced)
    dt = DeltaTable(str(uri))
    by_partition = {p: dt.transaction_version(f"kpipe:{name}:{topic}:{p}") for p in range(4)}
    assert by_partition == {p: len(range(p, produced, 4)) for p in range(4)}


def _commits(uri: Path) -> int:
    log = uri / "_delta_log"
    return len(list(log.glob("*.json"))) if log.is_dir() else 0


def test_a_stopped_writer_cannot_land_its_stale_commit_after_a_second_run_drained(brokers, topic, tmp_path):
    """The zombie is stopped inside a write (big batches: writing is most of its time), so when
    it wakes it goes on to commit what it read positions for before the drain. Rounds repeat
    until one stop landed inside a write (its log shows the fence)."""
    uri = tmp_path / "table"
    name = unique("deltazombie")
    spec = delta_spec(tmp_path, brokers, topic, uri, name, max_records=20_000, max_age="60s")
    produced, fenced = 0, []
    for round_ in range(3):
        produce_events(brokers, topic, 160_000, start=produced)
        produced += 160_000
        before = _commits(uri)
        zombie = Proc(tmp_path / "logs", f"zombie{round_}", "run", str(spec))
        try:
            deadline = time.monotonic() + 60
            while _commits(uri) < before + 1:  # its first write landed: the next is under way
                assert zombie.alive() and time.monotonic() < deadline, zombie.stderr()[-3000:]
                time.sleep(0.02)
            time.sleep(random.uniform(0.05, 0.3))
            zombie.signal(signal.SIGSTOP)
            produced = seal_events(brokers, topic, produced)
            time.sleep(FAST_SESSION["session.timeout.ms"] / 1000 + 1.0)  # its session expires
            final_run(spec, tmp_path / "logs")
            assert_once(uri, produced)
            zombie.signal(signal.SIGCONT)
            time.sleep(3.0)  # it finishes the write it was in
        finally:
            zombie.signal(signal.SIGCONT)
            zombie.kill()
        assert_once(uri, produced)  # whatever it did, nothing landed twice
        fenced = [ln for ln in zombie.stderr().splitlines() if "another writer" in ln]
        if fenced:
            break
    assert fenced, "no round stopped the zombie inside a write"

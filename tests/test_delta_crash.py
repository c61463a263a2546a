"""The delta sink through the CLI against the real broker: SIGKILL at random moments under a
live producer, then a drain, leaves every record in the table exactly once; a writer stopped
(SIGSTOP) holding a batch while a second run drains the topic cannot land its stale commit when
it wakes (SIGCONT). Read back with deltalake and with pyarrow over the version's files."""
from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
import yaml
from deltalake import DeltaTable

from kit import (FAST_SESSION, assert_each_once, final_run, kill_under_producer, seal_events, stale_writer_rounds,
                 unique)


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
    assert_each_once(landed(uri), produced)


def test_sigkill_under_a_live_producer_leaves_every_record_exactly_once(brokers, topic, tmp_path):
    seed = int(os.environ.get("KPIPE_CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed: {seed} (rerun with KPIPE_CRASH_SEED={seed})")
    uri = tmp_path / "table"
    name = unique("deltacrash")
    spec = delta_spec(tmp_path, brokers, topic, uri, name)
    produced = kill_under_producer(brokers, topic, spec, tmp_path / "logs", random.Random(seed), 5, (1.0, 3.0))
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
    """``kit.stale_writer_rounds``: the zombie wakes inside a write whose positions a drain moved
    past; Delta's conflict check fences its commit."""
    uri = tmp_path / "table"
    name = unique("deltazombie")
    spec = delta_spec(tmp_path, brokers, topic, uri, name, max_records=20_000, max_age="60s")
    stale_writer_rounds(brokers, topic, spec, tmp_path / "logs", lambda: _commits(uri),
                        lambda produced: assert_once(uri, produced), poll=0.02)

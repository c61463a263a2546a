"""The iceberg sink through the CLI against the real broker: SIGKILL at random moments under a
live producer, then a drain, leaves every record in the table exactly once; a writer stopped
(SIGSTOP) holding a batch while a second run drains the topic cannot land its stale commit when
it wakes (SIGCONT). Read back with pyiceberg's scan and with pyarrow over the snapshot's files."""
from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import yaml

from kit import (FAST_SESSION, assert_each_once, final_run, kill_under_producer, run_kpipe, seal_events,
                 stale_writer_rounds, unique)

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
    assert_each_once(landed(root), produced)


def test_sigkill_under_a_live_producer_leaves_every_record_exactly_once(brokers, topic, tmp_path):
    seed = int(os.environ.get("KPIPE_CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed: {seed} (rerun with KPIPE_CRASH_SEED={seed})")
    name = unique("icebergcrash")
    spec = iceberg_spec(tmp_path, brokers, topic, name)
    produced = kill_under_producer(brokers, topic, spec, tmp_path / "logs", random.Random(seed), 4, (1.0, 3.0))
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
    """``kit.stale_writer_rounds``: the zombie wakes inside a write whose positions a drain moved
    past; the catalog's compare-and-set fences its commit."""
    name = unique("icebergzombie")
    spec = iceberg_spec(tmp_path, brokers, topic, name, max_records=20_000, max_age="60s")
    stale_writer_rounds(brokers, topic, spec, tmp_path / "logs", lambda: _snapshots(tmp_path),
                        lambda produced: assert_once(tmp_path, produced), poll=0.05)

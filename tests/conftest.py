"""Shared fixtures: a real Kafka broker (bundled Tansu, or KPIPE_TEST_BROKERS), topics; and the
files sink's helpers: specs, and reading what landed. Other shared helpers are in ``kit.py``."""
from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
import yaml

from kit import SESSION
from kpipe.kafka_admin import create_topic
from kpipe.sinks.files.sink import parse_name


@pytest.fixture(scope="session")
def brokers():
    """Bootstrap servers of a real broker for the whole session."""
    external = os.environ.get("KPIPE_TEST_BROKERS")
    if external:
        yield external
        return
    from kpipe.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture
def topic(brokers, request):
    """A fresh 4-partition topic name, unique to the test."""
    name = f"t-{request.node.name[:30].replace('[', '-').replace(']', '')}-{uuid.uuid4().hex[:8]}"
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
    create_topic(brokers, name, 4)
    return name


# -- the files sink ------------------------------------------------------------------------


def write_spec(tmp_path: Path, brokers: str, topic: str, out: Path, *, name: str = "test-pipe",
               max_records: int = 10000, max_age: str = "5s", fmt: str = "jsonl",
               options: dict | None = None, filename: str = "spec.yaml") -> Path:
    doc = {
        "name": name,
        "source": {"brokers": brokers, "topic": topic,
                   "options": {**SESSION, **(options or {})}},
        "sink": {"type": "files", "path": str(out), "format": fmt},
        "batch": {"max_records": max_records, "max_bytes": "16MiB", "max_age": max_age},
    }
    spec = tmp_path / filename
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def read_output(out: Path, fmt: str = "jsonl"):
    """Everything that landed: (Counter of ids, {partition: [offset ranges in file order]})."""
    ids: Counter = Counter()
    ranges: dict[int, list] = {}
    for f in sorted(out.rglob(f"*.{fmt}")):
        assert not f.name.startswith("."), f
        _, partition, first, last = parse_name(f.name)
        ranges.setdefault(partition, []).append((first, last))
        for line in f.read_bytes().splitlines():
            ids[orjson.loads(line)["id"]] += 1
    return ids, ranges


def assert_exactly_once(out: Path, n: int) -> None:
    ids, ranges = read_output(out)
    missing = set(range(n)) - set(ids)
    dups = {i: c for i, c in ids.items() if c > 1}
    assert not missing and not dups, f"{len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(dups)} duplicated"
    assert sum(ids.values()) == n
    for p, rs in ranges.items():  # files of a partition tile its offsets without overlap
        for (a, b), (c, d) in zip(rs, rs[1:]):
            assert c == b + 1, f"partition {p}: {a}..{b} then {c}..{d}"
    leftovers = [p for p in out.rglob(".*") if p.name != ".lock"]
    assert not leftovers, f"temp files left behind: {leftovers}"


def published(out: Path, topic: str) -> set[str]:
    """Names of the published data files (dot files are the lock and temp files)."""
    names = set()
    for p in range(4):
        try:
            with os.scandir(out / topic / str(p)) as it:
                names.update(e.name for e in it if not e.name.startswith("."))
        except FileNotFoundError:
            pass
    return names


def count_published(out: Path, topic: str) -> int:
    return len(published(out, topic))


def records_in(out: Path) -> int:
    return sum(read_output(out)[0].values())

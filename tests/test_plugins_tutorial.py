"""docs/plugins.md works as written: its files are copied out of the page, installed as a
distribution (into a directory of its own, not this environment), pass the conformance kit,
show up in ``kpipe plugins``, and land a topic exactly once through a killed run."""
from __future__ import annotations

import os
import random
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kit import ROOT, SESSION, Proc, kill_when, produce_events, run_kpipe, seal_events

PAGE = Path(ROOT) / "docs" / "plugins.md"
BLOCK = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.S | re.M)


def page_files() -> dict[str, str]:
    return dict(BLOCK.findall(PAGE.read_text()))


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """The tutorial's project, pip-installed into ``site``; yields (project dir, site)."""
    root = tmp_path_factory.mktemp("tutorial")
    for name, text in page_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    project, site = root / "kpipe-lite", root / "site"
    base = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
            "--target", str(site), str(project)]
    # Without build isolation when the environment can build wheels itself; else let pip
    # fetch the build backend the page's pyproject names.
    if subprocess.run(base + ["--no-build-isolation"], capture_output=True, timeout=120).returncode:
        slow = subprocess.run(base, capture_output=True, text=True, timeout=300)
        assert slow.returncode == 0, slow.stderr[-3000:]
    return project, site


def env_with(site: Path, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(site), **extra}


def test_the_page_has_the_files_it_talks_about():
    files = page_files()
    assert set(files) == {"kpipe-lite/pyproject.toml", "kpipe-lite/kpipe_lite.py",
                          "kpipe-lite/test_lite.py", "kpipe-lite/orders-to-lite.yaml"}
    code = [line for line in files["kpipe-lite/kpipe_lite.py"].splitlines() if line.strip()]
    assert len(code) < 60, f"the tutorial promises a sink under 60 lines; it has {len(code)}"


def test_the_tutorial_sink_passes_the_conformance_kit(lite):
    project, site = lite
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider",
                           "test_lite.py"], cwd=project, env=env_with(site), capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # What the page says the reader will see.
    assert re.search(r"\b14 passed, 4 skipped\b", proc.stdout), proc.stdout[-2000:]


def test_kpipe_finds_it_through_its_entry_point(lite):
    project, site = lite
    proc = run_kpipe("plugins", env=env_with(site))
    assert proc.returncode == 0, proc.stderr
    row = next(line.split() for line in proc.stdout.splitlines() if " lite " in line)
    assert row == ["sink", "lite", "kpipe-lite", "0.1.0", "stores_offsets,idempotent_writes"]


def test_the_pipeline_lands_a_topic_exactly_once_through_a_kill(lite, brokers, topic, tmp_path):
    project, site = lite
    # Enough batches that the kill lands mid-run: 20,000 records drained within its 0.3 s jitter.
    produced = seal_events(brokers, topic, len(produce_events(brokers, topic, 60_000)))
    spec = tmp_path / "orders-to-lite.yaml"
    doc = yaml.safe_load((project / "orders-to-lite.yaml").read_text())
    doc["source"]["options"] = SESSION  # the bundled broker's quick group join
    doc["batch"] = {"max_records": 200}
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = env_with(site, KAFKA_BROKERS=brokers, TOPIC=topic)
    checked = run_kpipe("validate", str(spec), env=env)
    assert checked.returncode == 0 and "WARNING" not in checked.stderr, checked.stderr

    db = tmp_path / "orders.db"  # the spec's relative path, resolved against the spec's directory

    def rows() -> tuple[int, int]:
        if not db.exists():
            return 0, 0
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT count(*), count(DISTINCT partition || '/' || offset) "
                               "FROM records").fetchone()
        except sqlite3.OperationalError:
            return 0, 0
        finally:
            con.close()

    first = Proc(tmp_path / "logs", "first", "run", str(spec), "--until-caught-up", "--no-progress", env=env)
    kill_when(first, random.Random(7), "progress", (0, 0), lambda: rows()[0] > 0, "rows",
              jitter=0.1, interval=0.02, run=1)
    again = run_kpipe("run", str(spec), "--until-caught-up", "--no-progress", env=env, timeout=180)
    assert again.returncode == 0, again.stderr[-3000:]
    total, distinct = rows()
    # seal_events adds one sealing record per partition on top of the events.
    assert (total, distinct) == (produced, produced), f"{total} rows, {distinct} distinct, {produced} produced"

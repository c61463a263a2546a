"""The plugin distributions in plugins/ install on their own and pass their own tests.

CI runs only this repository's ``tests``; this module installs each distribution into the running
environment (editable, no dependencies: kpipe is already here), runs its test suite in a
subprocess, and checks that kpipe finds it through its entry point. Then one real run: kpipe
consumes a topic of the bundled broker into the http sink, posting to a local receiver.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kit import ROOT, SESSION, edit_spec, produce_events, run_kpipe, seal_events

HTTP = Path(ROOT) / "plugins" / "kpipe-http"


def pip_install_editable(path: Path, package: str) -> None:
    """``pip install -e path``, once: xdist workers take turns (a file lock) and skip it when
    ``package`` already imports from ``path``."""
    with open(path / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        where = subprocess.run([sys.executable, "-c", f"import {package}; print({package}.__file__)"],
                               capture_output=True, text=True)
        if where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(path):
            return
        _pip_install(path)


def _pip_install(path: Path) -> None:
    base = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", "-e", str(path)]
    # Without build isolation it takes a second, but needs a setuptools that builds editable
    # wheels itself (>= 70.1) or the wheel package; else let pip fetch a build backend.
    fast = subprocess.run(base + ["--no-build-isolation"], capture_output=True, text=True, timeout=120)
    if fast.returncode == 0:
        return
    slow = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert slow.returncode == 0, f"pip install -e {path} failed:\n{fast.stderr[-2000:]}\n{slow.stderr[-2000:]}"


@pytest.fixture(scope="module")
def kpipe_http():
    pip_install_editable(HTTP, "kpipe_http")
    sys.path.insert(0, str(HTTP / "tests"))  # its receiver, for the run below
    yield HTTP
    sys.path.remove(str(HTTP / "tests"))


def test_kpipe_http_passes_its_own_tests(kpipe_http):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider",
                           str(kpipe_http / "tests")], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


def test_kpipe_plugins_lists_http_from_its_distribution(kpipe_http):
    proc = run_kpipe("plugins")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert ["sink", "http", "kpipe-http"] in [r[:3] for r in rows], proc.stdout


def test_a_pipeline_posts_a_topic_to_a_webhook(kpipe_http, brokers, topic, tmp_path):
    from receiver import Receiver

    produced = seal_events(brokers, topic, len(produce_events(brokers, topic, 400)))
    token = "Bearer e2e-secret-token-123"
    receiver = Receiver()
    try:
        spec = tmp_path / "http.yaml"
        spec.write_text(yaml.safe_dump({
            "name": "to-webhook",
            "source": {"brokers": brokers, "topic": topic, "options": SESSION},
            "sink": {"type": "http", "url": receiver.url, "max_records_per_request": 50,
                     "metadata": ["partition", "offset"],
                     "headers": {"Authorization": "${HOOK_API_TOKEN}"}},
            "batch": {"max_records": 1000, "max_bytes": "16MiB", "max_age": "1s"},
        }, sort_keys=False))
        proc = run_kpipe("run", str(spec), "--until-caught-up", "-vv", timeout=120,
                         env={**os.environ, "HOOK_API_TOKEN": token})
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = sorted((r["partition"], r["offset"]) for r in receiver.accepted)
        assert len(got) == produced and len(set(got)) == produced, "records lost or duplicated"
        assert {r["headers"]["Authorization"] for r in receiver.requests} == {token}
        assert len({r["headers"]["Idempotency-Key"] for r in receiver.requests}) == len(receiver.requests)
        assert "e2e-secret" not in proc.stderr + proc.stdout
        # The sink declares neither capability: the run says so, and a spec asking for more is warned.
        assert "delivery: at-least-once: a batch written before a crash is written again" in proc.stderr
        edit_spec(spec, delivery="exactly-once")
        warned = run_kpipe("validate", str(spec), env={**os.environ, "HOOK_API_TOKEN": token})
        assert warned.returncode == 0 and "delivery: sink 'http' declares neither" in warned.stderr, warned.stderr
    finally:
        receiver.close()

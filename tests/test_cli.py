"""The CLI as a Unix tool: --help everywhere, exit codes, diagnostics on stderr."""
from __future__ import annotations

import re
import time

import pytest

from kit import kpipe_cmd, run_kpipe

COMMANDS = ["validate", "run", "demo", "plugins", "lag", "check"]


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in COMMANDS])
def test_help_everywhere(argv):
    proc = run_kpipe(*argv)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: kpipe")
    assert proc.stderr == ""


def test_usage_errors_exit_1_on_stderr():
    proc = run_kpipe("frobnicate")
    assert proc.returncode == 1
    assert "invalid choice: 'frobnicate'" in proc.stderr and proc.stdout == ""
    proc = run_kpipe("run", "x.yaml", "--max-messages", "many")
    assert proc.returncode == 1 and "invalid int value" in proc.stderr


def test_validate_ok_and_invalid(tmp_path):
    good = run_kpipe("validate", "pipelines/quickstart.yaml")
    assert good.returncode == 0, good.stderr
    assert "pipelines/quickstart.yaml: ok" in good.stdout
    bad1 = tmp_path / "one.yaml"
    bad1.write_text("name: one\nsource:\n  brokers: b\n  topic: t\nsink:\n  type: fils\n  path: x\n")
    bad2 = tmp_path / "two.yaml"
    bad2.write_text("name: two\nsource:\n  brokers: b\n  topics: [t]\n  strat: earliest\nsink:\n  type: files\n")
    proc = run_kpipe("validate", "pipelines/quickstart.yaml", str(bad1), str(bad2))
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    # The built-in sinks, and any plugin distribution installed here (tests/test_plugin_dists.py).
    installed = re.search(r"\(installed: ([^)]*)\)$", lines[0])
    assert installed and {"files", "postgres", "s3", "sql"} <= set(installed[1].split(", ")), lines[0]
    assert lines == [
        f"{bad1}:6:9: sink.type: unknown sink type 'fils'; did you mean 'files'? (installed: {installed[1]})",
        f"{bad2}:5:3: source.strat: unknown key 'strat'; did you mean 'start'?",
        f"{bad2}:7:3: sink.path: missing required key 'path'",
    ]


def test_run_with_invalid_spec_exits_1_without_connecting(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nsource:\n  brokers: ${NOT_SET_ANYWHERE}\n  topic: t\nsink:\n  type: files\n  path: x\n")
    proc = run_kpipe("run", str(spec))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{spec}:3:12: source.brokers: environment variable NOT_SET_ANYWHERE is not set")


def test_unreachable_broker_fails_closed_with_exit_3(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nsource:\n  brokers: 127.0.0.1:1\n  topic: t\n  connect_timeout: 3s\nsink:\n  type: files\n"
                    f"  path: {tmp_path / 'out'}\nretry:\n  max_attempts: 1\n"
                    "  max_elapsed: 0s\n")
    started = time.monotonic()
    proc = run_kpipe("run", str(spec), "--until-caught-up", timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "cannot reach the brokers at 127.0.0.1:1" in proc.stderr
    assert time.monotonic() - started < 40
    assert "Traceback" not in proc.stderr


def test_plugins_lists_builtins_with_capabilities():
    proc = run_kpipe("plugins")
    assert proc.returncode == 0
    rows = {tuple(line.split()[:2]): line for line in proc.stdout.splitlines()}
    assert ("sink", "files") in rows and "stores_offsets,idempotent_writes" in rows[("sink", "files")]
    assert {("deserializer", n) for n in ("json", "string", "bytes")} <= set(rows)


def test_demo_runs_the_quickstart_end_to_end(tmp_path):
    keep = tmp_path / "demo"
    proc = run_kpipe("demo", "--messages", "300", "--keep", str(keep), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "300 records in 4 files; 300 distinct orders of 300 produced; 0 duplicates" in proc.stdout
    assert "every order landed exactly once" in proc.stdout
    assert len(list((keep / "orders").rglob("*.jsonl"))) == 4


def test_sigterm_cuts_the_wait_for_brokers_short(tmp_path):
    import signal
    import subprocess

    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nsource:\n  brokers: 127.0.0.1:1\n  topic: t\n  connect_timeout: 60s\nsink:\n"
                    f"  type: files\n  path: {tmp_path / 'out'}\n")
    proc = subprocess.Popen(kpipe_cmd("run", str(spec)), stderr=subprocess.PIPE, text=True)
    try:
        # Signal once the wait for the brokers has begun, however slow the start-up was.
        seen = []
        while not any("delivery:" in line for line in seen):
            line = proc.stderr.readline()
            assert line, f"kpipe exited before retrying:\n{''.join(seen)}"
            seen.append(line)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        err = "".join(seen) + err
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    assert "cannot reach the brokers at 127.0.0.1:1 stopped while trying" in err
    assert time.monotonic() - started < 8  # at most one 5 s metadata request, then no more waiting

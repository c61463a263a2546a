"""Many pipelines in one ``kpipe run``: a supervisor over child processes, against the real
broker. Who the children are is read from the supervisor's ``started NAME (pid N)`` lines."""
from __future__ import annotations

import os
import re
import signal
import time

import yaml

from conftest import assert_exactly_once, records_in, write_spec
from kit import (FAST_SESSION, Proc, produce_events, run_kpipe, seal_events, stop_cleanly, unique,
                 wait_for)
from kpipe.kafka_admin import create_topic
from kpipe.ops.supervisor import restart_delay, should_restart, worst


def pids(proc: Proc, name: str) -> list[int]:
    return [int(p) for p in re.findall(rf"started {re.escape(name)} \(pid (\d+)\)", proc.stderr())]


def test_worst_exit_code_and_restart_rules():
    assert worst([]) == 0
    assert worst([0, 1]) == 1
    assert worst([0, 1, 3]) == 3
    assert worst([3, 2, 1, 0]) == 2
    assert worst([0, -9]) == 2  # killed by a signal
    assert not should_restart("on-failure", 0, bounded=False)
    assert not should_restart("always", 0, bounded=False)
    assert not should_restart("on-failure", 1, bounded=False)
    assert should_restart("always", 1, bounded=False) and not should_restart("always", 1, bounded=True)
    assert should_restart("on-failure", 3, bounded=True) and should_restart("on-failure", -9, bounded=False)
    assert not should_restart("no", 2, bounded=False)
    assert [restart_delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_two_pipelines_restart_after_sigkill_and_drain_on_sigterm(brokers, topic, tmp_path):
    topic2 = topic + "-b"
    create_topic(brokers, topic2, 4)
    a, b = unique("sup-a"), unique("sup-b")
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    spec_a = write_spec(tmp_path, brokers, topic, out_a, name=a, max_age="300ms", options=FAST_SESSION,
                        filename="a.yaml")
    spec_b = write_spec(tmp_path, brokers, topic2, out_b, name=b, max_age="300ms", options=FAST_SESSION,
                        filename="b.yaml")
    produce_events(brokers, topic, 2000)
    produce_events(brokers, topic2, 1000)
    sup = Proc(tmp_path / "logs", "sup", "run", str(tmp_path / "a.yaml"), str(spec_b), "--no-progress")
    try:
        wait_for(lambda: records_in(out_a) == 2000 and records_in(out_b) == 1000, 60,
                 "both pipelines to write what was produced", [sup], interval=0.2)
        assert f"[{a}] " in sup.stderr() and f"[{b}] " in sup.stderr()  # prefixed pass-through
        victim = pids(sup, a)[0]
        assert os.getpgid(victim) != os.getpgid(sup.popen.pid)  # Ctrl-C reaches the supervisor only
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(pids(sup, a)) == 2, 30, f"{a} to be started again", [sup])
        assert "killed by SIGKILL; restart 1/5 in 1s" in sup.stderr()
        assert len(pids(sup, b)) == 1  # the other one ran on undisturbed
        # The restarted child resumes from the files' own offsets: new records land once.
        produce_events(brokers, topic, 2000, start=2000)
        produce_events(brokers, topic2, 1000, start=1000)
        wait_for(lambda: records_in(out_a) == 4000 and records_in(out_b) == 2000, 60,
                 "the new records to land", [sup], interval=0.2)
        stop_cleanly(sup, timeout=30)
    finally:
        sup.kill()
    err = sup.stderr()
    assert re.search(rf"{a} \(pid \d+\) finished: exit 0", err) and re.search(rf"{b} \(pid \d+\) finished: exit 0", err)
    assert "all pipelines finished (exit codes: " in err and "; exit 0" in err
    assert all(gone(pid) for pid in pids(sup, a) + pids(sup, b))  # no child outlives the supervisor
    assert_exactly_once(out_a, 4000)
    assert_exactly_once(out_b, 2000)


def test_worst_exit_code_wins_and_a_failing_pipeline_is_given_up(brokers, topic, tmp_path):
    produced = seal_events(brokers, topic, len(produce_events(brokers, topic, 500)))
    good = write_spec(tmp_path, brokers, topic, tmp_path / "out", name=unique("good"), filename="good.yaml")
    bad_name = unique("bad")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({
        "name": bad_name, "source": {"brokers": "127.0.0.1:1", "topic": topic, "connect_timeout": "3s"},
        "sink": {"type": "files", "path": str(tmp_path / "bad")}, "retry": {"max_attempts": 1}}))
    started = time.monotonic()
    proc = run_kpipe("run", str(tmp_path), "--until-caught-up", "--max-restarts", "1", timeout=90)
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - started < 60
    assert f"[{bad_name}] " in proc.stderr and "cannot reach the brokers at 127.0.0.1:1" in proc.stderr
    assert f"{bad_name} (pid" in proc.stderr and "restart 1/1 in 1s" in proc.stderr
    assert "giving up after 1 restarts" in proc.stderr
    assert proc.stderr.count(f"started {bad_name} ") == 2
    assert_exactly_once(tmp_path / "out", produced)  # the good one ran to the end regardless


def test_one_invalid_spec_starts_nothing(brokers, topic, tmp_path):
    good = write_spec(tmp_path, brokers, topic, tmp_path / "out", name=unique("good"), filename="good.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsource:\n  brokers: b\n  topic: t\nsink:\n  type: files\n")
    proc = run_kpipe("run", str(good), str(bad), "--until-caught-up")
    assert proc.returncode == 1
    assert "sink.path: missing required key 'path'" in proc.stderr and "started" not in proc.stderr
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_kpipe("run", str(empty))
    assert proc.returncode == 1 and "no *.yaml spec files" in proc.stderr


def gone(pid: int) -> bool:
    """``pid`` has exited (reaped, or a zombie waiting for a parent that is not us)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_children_stop_when_the_supervisor_is_killed(brokers, topic, tmp_path):
    produce_events(brokers, topic, 400)
    specs = [write_spec(tmp_path, brokers, topic, tmp_path / n, name=unique(n), options=FAST_SESSION,
                        filename=f"{n}.yaml") for n in ("x", "y")]
    sup = Proc(tmp_path / "logs", "sup", "run", *map(str, specs), "--no-progress")
    children: list[int] = []
    try:
        wait_for(lambda: sup.stderr().count("kpipe.run: assigned") == 2, 40, "both children assigned", [sup])
        children += [int(p) for p in re.findall(r"started \S+ \(pid (\d+)\)", sup.stderr())]
        assert len(children) == 2
        sup.kill()
        # The progress pipe breaks; each child stops as if sent SIGTERM, within a few seconds.
        wait_for(lambda: all(gone(pid) for pid in children), 20, "the orphaned children to stop")
    finally:
        sup.kill()
        for pid in children:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    assert records_in(tmp_path / "x") == 400 and records_in(tmp_path / "y") == 400


def _free_port_pair() -> int:
    """A port P with P and P+1 both free on 127.0.0.1 right now."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(20000, 60000)
        socks = []
        try:
            for port in (base, base + 1):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no two consecutive free ports")


def scrape(port: int) -> str:
    """The text of ``/metrics`` on 127.0.0.1:``port``; empty while nothing answers there."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return resp.read().decode()
    except OSError:
        return ""


def figure(text: str, metric: str, pipeline: str) -> float:
    """The value of ``metric`` for ``pipeline`` in a scrape; -1 when it is not there."""
    m = re.search(rf'{metric}\{{pipeline="{re.escape(pipeline)}"\}} (\S+)', text)
    return float(m[1]) if m else -1


def test_each_pipeline_serves_its_own_metrics_on_port_plus_its_index(brokers, topic, tmp_path):
    topic2 = topic + "-m"
    create_topic(brokers, topic2, 4)
    a, b = unique("met-a"), unique("met-b")
    spec_a = write_spec(tmp_path, brokers, topic, tmp_path / "a", name=a, options=FAST_SESSION, filename="a.yaml")
    spec_b = write_spec(tmp_path, brokers, topic2, tmp_path / "b", name=b, options=FAST_SESSION, filename="b.yaml")
    produce_events(brokers, topic, 300)
    produce_events(brokers, topic2, 200)
    port = _free_port_pair()
    sup = Proc(tmp_path / "logs", "sup", "run", str(spec_a), str(spec_b), "--no-progress",
               "--metrics-port", str(port), "--metrics-host", "127.0.0.1")

    def written(text: str, name: str) -> float:
        return figure(text, "kpipe_messages_written_total", name)

    try:
        wait_for(lambda: written(scrape(port), a) == 300 and written(scrape(port + 1), b) == 200, 60,
                 "each child's /metrics on its own port", [sup], interval=0.2)
        # Each port is one pipeline's: the other's series are not there.
        assert f'pipeline="{b}"' not in scrape(port) and f'pipeline="{a}"' not in scrape(port + 1)
        stop_cleanly(sup, timeout=30)
    finally:
        sup.kill()

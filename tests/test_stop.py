"""A stop signal does not wait for slow transforms (issue 14, "Shutdown").

A python transform that takes 2 s per record: SIGTERM used to wait for the whole consumed chunk
to go through the stages (20 records: 40 s). Now the first signal abandons the record in
progress, writes and commits what was fully processed, and exits 0; the second drops what is
buffered and exits at once. Nothing is ever committed past a record that was not written.
"""
from __future__ import annotations

import os
import signal
import textwrap
import time

from conftest import assert_exactly_once, read_output, write_spec
from kit import Proc, committed, edit_spec, event, produce_values, run_kpipe, unique, wait_for

N = 20
SLOW = 2.0  # seconds per record


def _slow_run(brokers, topic, tmp_path):
    """``kpipe run`` on N records of partition 0 through a transform sleeping SLOW s per record;
    returns (proc, spec, out dir, group, path of the transform's log of started records)."""
    (tmp_path / "slowstep.py").write_text(textwrap.dedent("""\
        import os, time

        def step(value):
            with open(os.environ["SLOWSTEP_LOG"], "a") as f:
                f.write(f"{value['id']}\\n")
            time.sleep(float(os.environ["SLOWSTEP_SECONDS"]))
            return value
    """))
    produce_values(brokers, topic, [(0, str(i), event(i)) for i in range(N)])
    out, group = tmp_path / "out", unique("stop")
    # max_age far away: what lands was written by the stop's drain, nothing before it.
    spec = edit_spec(write_spec(tmp_path, brokers, topic, out, name=group, max_age="120s"),
                     transforms=[{"python": "slowstep:step"}])
    started = tmp_path / "started.log"
    env = {**os.environ, "SLOWSTEP_LOG": str(started), "SLOWSTEP_SECONDS": str(SLOW)}
    proc = Proc(tmp_path / "logs", "run", "run", str(spec), env=env)
    # Two records through the transform and the third under way: the run is processing.
    wait_for(lambda: started.exists() and len(started.read_text().split()) >= 3, 30,
             "the transform to start its third record", [proc])
    time.sleep(0.5)
    return proc, spec, out, group, started


def _exit(proc, since: float, timeout: float = 15):
    """(exit code or None, seconds from ``since``); the process is gone after."""
    try:
        rc = proc.wait(timeout)
        return rc, time.monotonic() - since
    finally:
        proc.kill()


def test_one_sigterm_writes_what_was_processed_and_exits_without_waiting_for_the_chunk(brokers, topic, tmp_path):
    proc, spec, out, group, started = _slow_run(brokers, topic, tmp_path)
    proc.signal(signal.SIGTERM)
    rc, took = _exit(proc, time.monotonic())
    stderr = proc.stderr()
    print(f"one SIGTERM: exit {rc} after {took:.2f}s")
    assert rc == 0, (rc, took, stderr[-3000:])
    assert took < 5, f"the stop took {took:.1f}s"  # it was N * SLOW (40 s): the whole chunk

    # Exactly the records fully processed, from the start, with no gap: the record under way
    # when the signal came (and those after it) were not written, and nothing past them is committed.
    begun = [int(i) for i in started.read_text().split()]
    ids, ranges = read_output(out)
    k = len(ids)
    assert 2 <= k <= len(begun), (k, begun)  # the record under way (if any) was abandoned
    assert sorted(ids) == list(range(k)) and set(ids.values()) == {1}, ids
    assert ranges == {0: [(0, k - 1)]}, ranges
    assert committed(brokers, group, topic).get(0) == k

    # The next run reads the rest again and writes it exactly once.
    rest = run_kpipe("run", str(spec), "--until-caught-up",
                     env={**os.environ, "SLOWSTEP_LOG": str(started), "SLOWSTEP_SECONDS": "0"})
    assert rest.returncode == 0, rest.stderr
    assert_exactly_once(out, N)
    assert committed(brokers, group, topic).get(0) == N


def test_a_second_sigterm_drops_the_buffer_and_exits_at_once(brokers, topic, tmp_path):
    proc, spec, out, group, started = _slow_run(brokers, topic, tmp_path)
    proc.signal(signal.SIGTERM)
    first = time.monotonic()
    time.sleep(0.02)  # two signals at once would be delivered as one
    proc.signal(signal.SIGTERM)
    rc, took = _exit(proc, first)
    stderr = proc.stderr()
    print(f"two SIGTERMs: exit {rc} after {took:.2f}s")
    assert rc == 0, (rc, took, stderr[-3000:])
    assert took < 2.5, f"two signals took {took:.1f}s to end the run"
    # Whatever landed is a prefix with no gap, and the group never committed past it.
    ids, ranges = read_output(out)
    k = len(ids)
    assert sorted(ids) == list(range(k)) and set(ids.values()) <= {1}, ids
    assert ranges in ({}, {0: [(0, k - 1)]}), ranges
    assert committed(brokers, group, topic).get(0, 0) <= k

"""The progress line before the first assignment (issue 17): what is happening, not a guess
("ETA 0s", "lag ?"). Where each partition starts is the runner's "assigned" log line."""
from __future__ import annotations

from kpipe.ops.progress import Tracker, format_line


def record(t: float, assigned: int, lag=None, remaining=None, phase="running") -> dict:
    return {"name": "orders", "t": t, "phase": phase, "consumed": 0, "written": 0, "lag": lag,
            "assigned": assigned, "remaining": remaining, "until_caught_up": remaining is not None,
            "group": "orders-g"}


def test_before_the_first_assignment_the_line_says_it_waits_and_for_how_long():
    tr = Tracker("orders")
    tr.update(record(100.0, 0, remaining=0))
    tr.update(record(112.4, 0, remaining=0))
    line = format_line(tr, bar=True)
    assert "waiting for partitions (group orders-g, 12 s)" in line, line
    assert "ETA" not in line and "lag" not in line and "%" not in line, line
    tr.update(record(113.0, 4, lag=50, remaining=50))
    line = format_line(tr, bar=True)
    assert "waiting" not in line and "lag 50" in line and "ETA" in line, line
    tr.update(record(120.0, 0, remaining=0))  # a rebalance took everything: waiting again, from now
    assert "waiting for partitions (group orders-g, 0 s)" in format_line(tr, bar=False)

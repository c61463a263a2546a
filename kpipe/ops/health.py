"""Liveness and readiness of a running pipeline, read from its ``Runner``: one rule for
``/healthz``, ``/readyz``, systemd's ``READY=1`` and its watchdog.

Alive (``/healthz`` 200, ``WATCHDOG=1`` sent): the run is not over and its loop turned within
the stall limit. The loop turns at least once a second while it runs; before the first turn
the time counts from the start. The default limit is ``60 s`` plus the longest the spec's
retry budget can wait in all (``retry:``: the sum of the capped backoff waits, or
``max_elapsed`` if longer; 120 s with the defaults, so three minutes in all):
a dependency that is down keeps the loop in a retry wait, and the run exits 3 by itself once
the budget is spent, so only a loop that stays stuck beyond that is wedged.

Ready (``/readyz`` 200, ``READY=1`` sent once): the run is in its loop, the consumer has
joined the group and received an assignment (an empty one counts: a group with more members
than partitions leaves some with none, and they are rightly idle), and the sink opened and its
last write succeeded. A consumer that lost its assignment in a rebalance and has waited for a
new one longer than half of ``source.assignment_timeout`` is not ready (the run exits 3 when
the whole timeout has passed).
"""
from __future__ import annotations

import time

__all__ = ["Health", "default_stall_limit"]


def default_stall_limit(spec) -> float:
    """60 s plus the longest ``retry:`` keeps trying: the sum of the capped backoff waits, or
    ``max_elapsed`` when that is longer (both must be spent before a run gives up)."""
    waits = sum(min(spec.retry_max_backoff, spec.retry_initial_backoff * 2 ** a)
                for a in range(max(0, spec.retry_attempts - 1)))
    return 60.0 + max(waits, getattr(spec, "retry_max_elapsed", 0.0))  # attempt_timeout: exit 3 by itself


class Health:
    def __init__(self, runner, stall_limit: float | None = None):
        self.runner = runner
        self.result = runner.result
        self.stall_limit = default_stall_limit(runner.spec) if stall_limit is None else stall_limit

    def loop_age(self, now: float | None = None) -> float:
        """Seconds since the loop last turned (since the start, before its first turn)."""
        r = self.result
        return (time.monotonic() if now is None else now) - (r.last_loop_at or r.started_at)

    def alive(self) -> tuple[bool, str]:
        r = self.result
        if r.phase == "done":
            return False, f"the run is over (exit code {r.exit_code})"
        age = self.loop_age()
        if age > self.stall_limit:
            return False, f"stalled: the loop last turned {age:.0f}s ago (limit {self.stall_limit:.0f}s)"
        return True, f"{r.phase}: the loop turned {age:.1f}s ago"

    def joined(self) -> bool:
        """The consumer joined the group and got an assignment, possibly empty."""
        return bool(getattr(self.runner, "assigned_once", False))

    def ready(self) -> tuple[bool, str]:
        r = self.result
        if r.phase != "running":
            return False, f"not ready: {r.phase}"
        if not self.joined():
            return False, "not ready: waiting for the consumer group's assignment"
        unassigned = getattr(self.runner, "unassigned_for", lambda: None)()
        if unassigned is not None and unassigned > self.runner.spec.assignment_timeout / 2:
            return False, f"not ready: no partitions assigned for {unassigned:.0f}s (lost in a rebalance)"
        if not r.sink_ok:
            return False, f"not ready: sink {self.runner.spec.sink_type} is not reachable"
        n = len(r.assigned)
        return True, f"ready: {n} partition{'s' if n != 1 else ''} assigned, sink reachable"

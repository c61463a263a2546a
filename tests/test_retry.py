"""The retry rule (kpipe.runtime.retry), on a fake clock: a dependency is given up only when
both the attempts and ``max_elapsed`` are spent."""
from __future__ import annotations

import logging
import random

import pytest

from kpipe.api import RetryableError
from kpipe.runtime.retry import Backoff, DependencyUnavailable, retry


class Clock:
    """Time that passes only when someone sleeps (or a call takes ``cost`` seconds)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def failing(clock: Clock, until: float = float("inf"), cost: float = 0.0):
    """A call that fails (each attempt costing ``cost`` seconds) while the clock is before ``until``."""
    calls = []

    def fn():
        calls.append(clock.now)
        clock.now += cost
        if clock.now < until:
            raise RetryableError("connection refused")
        return "ok"

    return fn, calls


LOG = logging.getLogger("test.retry")


def test_attempts_spent_but_not_the_time_keeps_trying_until_max_elapsed():
    clock = Clock()
    fn, calls = failing(clock)
    with pytest.raises(DependencyUnavailable, match=r"still failing after \d+ attempts in 10\.0s"):
        retry("writing", fn, Backoff(attempts=3, base=1.0, cap=1.0, max_elapsed=10.0), LOG, clock.sleep, clock=clock)
    assert len(calls) > 3
    assert clock.now == pytest.approx(10.0)  # the last wait ends at max_elapsed, not past it


def test_time_spent_but_not_the_attempts_keeps_trying_until_max_attempts():
    clock = Clock()
    fn, calls = failing(clock, cost=10.0)  # each attempt alone outlasts max_elapsed
    with pytest.raises(DependencyUnavailable, match="still failing after 5 attempts"):
        retry("writing", fn, Backoff(attempts=5, base=0.1, cap=0.1, max_elapsed=1.0), LOG, clock.sleep, clock=clock)
    assert len(calls) == 5


def test_attempts_only_when_max_elapsed_is_zero():
    clock = Clock()
    fn, calls = failing(clock)
    with pytest.raises(DependencyUnavailable):
        retry("writing", fn, Backoff(attempts=4, base=0.1, cap=0.1), LOG, clock.sleep, clock=clock)
    assert len(calls) == 4


def test_a_recovery_returns_the_result():
    clock = Clock()
    fn, calls = failing(clock, until=3.0)
    assert retry("writing", fn, Backoff(attempts=2, base=1.0, cap=1.0, max_elapsed=60.0), LOG, clock.sleep,
                 clock=clock) == "ok"
    assert len(calls) >= 3  # past max_attempts: the time budget carried it


def test_each_retry_logs_its_attempt_number_and_the_time_left(caplog):
    clock = Clock()
    fn, _ = failing(clock, until=2.5)
    with caplog.at_level(logging.WARNING, logger="test.retry"):
        retry("writing to sink postgres", fn, Backoff(attempts=8, base=1.0, cap=1.0, max_elapsed=30.0), LOG,
              clock.sleep, clock=clock)
    lines = [r.getMessage() for r in caplog.records]
    assert lines, "no retry was logged"
    assert "retry 1/7 in" in lines[0] and "attempt 1," in lines[0] and "30.0s of retry.max_elapsed left" in lines[0]
    assert all(f"attempt {i}," in line for i, line in enumerate(lines, 1))


@pytest.mark.parametrize("max_elapsed,survives", [(0.0, False), (120.0, True)])
def test_a_20s_outage_with_the_default_attempts(max_elapsed, survives):
    """Issue 13: with full jitter, 8 attempts alone gave up on a 20 s outage about 1 run in 6;
    with the time budget (default 2m) no run does."""
    rng = random.Random(13)
    gave_up = 0
    runs = 300
    for _ in range(runs):
        random.seed(rng.random())
        clock = Clock()
        fn, _ = failing(clock, until=20.0, cost=0.05)
        try:
            retry("writing", fn, Backoff(8, 0.5, 30.0, max_elapsed), LOG, clock.sleep, clock=clock)
        except DependencyUnavailable:
            gave_up += 1
    if survives:
        assert gave_up == 0
    else:
        assert runs / 12 < gave_up < runs / 3, gave_up  # the defect the time budget fixes: ~1 in 6

"""Capped exponential backoff with full jitter, for dependencies that may come back.

The budget has two parts, and a dependency is given up only when **both** are spent: the
attempts (``max_attempts``) and the time since the first attempt (``max_elapsed``). Counting
attempts alone let a short outage end a run: with full jitter, eight attempts can all fall
inside the first few seconds of a 20 s database restart. Counting time alone would let one
slow failure (a connect timeout) use up the whole budget in two tries.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from kpipe.api import RetryableError

__all__ = ["Backoff", "DependencyUnavailable", "retry"]

T = TypeVar("T")


class DependencyUnavailable(Exception):
    """A dependency stayed unreachable after the whole retry budget (exit code 3)."""


@dataclass(frozen=True)
class Backoff:
    attempts: int = 8       # tries in all, the first included
    base: float = 0.5       # seconds before the second try
    cap: float = 30.0       # no single wait is longer; keeps us well inside max.poll.interval.ms
    max_elapsed: float = 0.0  # seconds: keep trying at least this long after the first attempt

    def delay(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog): spreads reconnect storms of many instances.
        return random.uniform(0, min(self.cap, self.base * 2 ** attempt))


def retry(what: str, fn: Callable[[], T], backoff: Backoff, log, sleep=time.sleep,
          retryable: tuple = (RetryableError,), clock: Callable[[], float] = time.monotonic) -> T:
    """Call ``fn`` until it stops raising a retryable error, or fail closed once both the
    attempts and ``max_elapsed`` are spent (see the module's docstring)."""
    start = clock()
    attempt = 0
    while True:
        try:
            return fn()
        except retryable as exc:
            attempt += 1
            elapsed = clock() - start
            time_left = backoff.max_elapsed - elapsed
            attempts_left = backoff.attempts - attempt
            if attempts_left <= 0 and time_left <= 0:
                raise DependencyUnavailable(f"{what}: still failing after {attempt} attempts in {elapsed:.1f}s: "
                                            f"{exc}") from exc
            wait = backoff.delay(attempt - 1)
            if attempts_left <= 0:
                wait = min(wait, time_left)  # only the time budget is left: end close to it
            budget = (f"retry {attempt}/{backoff.attempts - 1}" if attempts_left > 0
                      else f"retry {attempt} (attempts spent)")
            log.warning("%s failed (%s); %s in %.1fs, attempt %d, %.1fs of retry.max_elapsed left", what, exc,
                        budget, wait, attempt, max(0.0, time_left))
            sleep(wait)

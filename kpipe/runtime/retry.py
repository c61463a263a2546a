"""Capped exponential backoff with full jitter, for dependencies that may come back."""
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

    def delay(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog): spreads reconnect storms of many instances.
        return random.uniform(0, min(self.cap, self.base * 2 ** attempt))


def retry(what: str, fn: Callable[[], T], backoff: Backoff, log, sleep=time.sleep,
          retryable: tuple = (RetryableError,)) -> T:
    """Call ``fn`` until it stops raising a retryable error, or fail closed."""
    for attempt in range(backoff.attempts):
        try:
            return fn()
        except retryable as exc:
            if attempt + 1 >= backoff.attempts:
                raise DependencyUnavailable(f"{what}: still failing after {backoff.attempts} attempts: {exc}") from exc
            wait = backoff.delay(attempt)
            log.warning("%s failed (%s); retry %d/%d in %.1fs", what, exc, attempt + 1,
                        backoff.attempts - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")

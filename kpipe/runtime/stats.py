"""What a run has done so far, kept by the runner for whoever watches it: the closing summary,
a progress line, a metrics endpoint, systemd's watchdog.

The runner's threads write; watchers only read, from their own threads, and tolerate a value
that is one update old. Nothing here imports an optional dependency.
"""
from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["RunResult", "Histogram"]

# Seconds: a COPY of 10k rows takes ~50 ms, an S3 multipart upload seconds, a commit ~1-5 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RECORD_BUCKETS = (1, 10, 100, 500, 1000, 5000, 10_000, 50_000, 100_000, 500_000)


class Histogram:
    """Cumulative-on-read bucket counts, a sum and a count (the Prometheus shape)."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``[(upper bound, observations <= it)]``, ending with ``(inf, count)``."""
        out, total = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            total += n
            out.append((bound, total))
        return out


@dataclass
class RunResult:
    """The run's outcome and live figures. ``consumed``..``dead_lettered`` are totals."""

    exit_code: int = 0
    consumed: int = 0
    written: int = 0
    batches: int = 0
    dropped: int = 0        # filtered out by a transform, or skipped tombstones
    skipped: int = 0        # bad records let go by `skip`
    dead_lettered: int = 0  # bad records sent to the DLQ
    reason: str = ""
    partitions: dict = field(default_factory=dict)  # (topic, partition) -> committed next offset at the end

    # -- live, for watchers -----------------------------------------------------------------
    rejected: Counter = field(default_factory=Counter)      # (stage, policy) -> bad records
    batch_records: Histogram = field(default_factory=lambda: Histogram(RECORD_BUCKETS))
    write_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    commit_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    positions: dict = field(default_factory=dict)   # (topic, partition) -> next offset to consume
    committed: dict = field(default_factory=dict)   # (topic, partition) -> committed next offset
    ends: dict = field(default_factory=dict)        # (topic, partition) -> end offset (high watermark)
    targets: dict = field(default_factory=dict)     # --until-caught-up: the end offsets to reach
    assigned: frozenset = frozenset()               # partitions this member holds now
    phase: str = "starting"                         # starting | running | stopping | done
    started_at: float = field(default_factory=time.monotonic)
    last_loop_at: float = 0.0                       # monotonic time of the loop's last turn
    sink_ok: bool = False                           # the sink opened and its last write succeeded

    def lag(self) -> dict:
        """Per assigned partition: end offset minus committed position (None when unknown)."""
        out = {}
        for tp in self.assigned:
            end, done = self.ends.get(tp), self.committed.get(tp)
            out[tp] = None if end is None or done is None else max(0, end - done)
        return out

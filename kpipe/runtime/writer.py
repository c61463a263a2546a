"""The Writer: every call into the sink, on threads of its own.

It owns the sink's threads, the retries of a write, the narrowing of a bad record the sink
reports (the error policy's sink stage), and the bound on how long a sink call may take. The
consumer loop hands it batches (``submit``) and later takes back what became durable
(``settle_oldest``); the OffsetBook is told, and only then does anything reach the group.

Concurrency follows ``Capabilities.max_in_flight`` (1 unless the sink declares more): up to
that many writes run at once, each on its own thread, never two holding the same partition,
and they are settled in the order they were submitted, so each partition's writes stay in
order. Every other sink call (open, load_offsets, revoke, housekeep, close) waits until no
write runs, and runs on the first thread: with one write in flight, every sink call runs on
one thread, one at a time, which is what sinks whose driver is bound to its connecting thread
(sqlite3) need.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable

from kpipe.api import BadRecordError, FatalError, OffsetConflict, RetryableError, Sink, WriteOutcome
from kpipe.runtime.retry import Backoff, DependencyUnavailable, retry
from kpipe.runtime.worker import Worker

__all__ = ["Writer", "Written", "locate"]

log = logging.getLogger("kpipe.run")


@dataclass
class Written:
    """What one write came to: the batches now durable, in order; ``{partition: head}`` for
    partitions another writer is ahead on (not written); the failure that ends the run, if any
    (raised by ``settle_oldest`` after the durable part is reported)."""

    durable: list
    conflicts: dict = field(default_factory=dict)
    failure: BaseException | None = None


@dataclass
class _Flight:
    future: Future
    partitions: frozenset
    worker: Worker
    held: int = 0  # estimated bytes its records hold, released when it is settled


class Writer:
    def __init__(self, plugin, spec, backoff: Backoff, stall_timeout: float, *, result,
                 on_reject: Callable, dlq, stop_level: Callable[[], int], past_grace: Callable[[], bool],
                 stop_grace: float):
        self.plugin = plugin
        self.spec = spec
        self.what = f"writing to sink {spec.sink_type}"
        self.backoff = backoff
        self.stall_timeout = stall_timeout
        self.result = result
        self.on_reject = on_reject      # (message, stage, error): the skip or dlq policy
        self.dlq = dlq
        self.stop_level = stop_level
        self.past_grace = past_grace
        self.stop_grace = stop_grace
        self.max_in_flight = max(1, int(getattr(plugin.capabilities, "max_in_flight", 1) or 1))
        self.sink: Sink | None = None
        self.abandoned = False  # a stuck sink call was given up; its threads may never return
        self._workers: list[Worker] = []
        self._flights: deque[_Flight] = deque()
        self._lock = threading.Lock()  # figures and policies touched by several sink threads

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, context) -> None:
        """Create the sink and open it (with retries), on the sink's thread."""
        self._workers = [Worker("kpipe-sink" if i == 0 else f"kpipe-sink-{i}") for i in range(self.max_in_flight)]
        self.sink = self.call(self.plugin.create, self.spec.sink_config, context)
        self.call(self.retry, f"opening sink {self.spec.sink_type}", self.sink.open)

    def close(self) -> None:
        if self.sink is not None and not self.abandoned:
            try:
                self.call(self.sink.close)
            except Exception as exc:
                log.warning("closing the sink: %s", exc)
        for w in self._workers:
            w.shutdown(wait=not self.abandoned)

    def abandon_writes(self) -> None:
        """Forget the writes in flight (stuck): nothing they may have written is committed."""
        self._flights.clear()

    # -- calls ------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def wait_oldest(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the oldest write in flight; whether it is done."""
        return bool(self._flights) and wait([self._flights[0].future], timeout).not_done == set()

    def oldest_done(self) -> bool:
        return bool(self._flights) and self._flights[0].future.done()

    @property
    def held(self) -> int:
        """Estimated bytes the records of the writes in flight hold (as given to ``submit``)."""
        return sum(f.held for f in self._flights)

    def holds(self, partitions) -> bool:
        """Whether a write in flight covers any of ``partitions``."""
        return any(f.partitions & partitions for f in self._flights)

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the sink's first thread once no write runs, and wait for it."""
        if self.abandoned:
            raise DependencyUnavailable(f"sink {self.spec.sink_type} is not answering")
        if len(self._workers) > 1:
            for f in list(self._flights):  # never beside a write: only writes run concurrently
                self._result(f.future, self.what, raise_error=False)
        return self._result(self._workers[0].submit(fn, *args), getattr(fn, "__name__", "call"))

    def submit_background(self, fn) -> Future:
        """``fn()`` on the first thread, unwaited (housekeeping, while no write runs)."""
        return self._workers[0].submit(fn)

    def submit(self, batches: list, held: int = 0) -> None:
        """Start writing ``batches`` (whose records hold about ``held`` bytes). The caller settles
        first what would break the rules: ``in_flight < max_in_flight`` and no write in flight
        holding one of their partitions."""
        parts = frozenset((b.topic, b.partition) for b in batches)
        assert self.in_flight < self.max_in_flight and not self.holds(parts)
        taken = [f.worker for f in self._flights]
        worker = next(w for w in self._workers if all(w is not t for t in taken))
        self._flights.append(_Flight(worker.submit(self._write, batches), parts, worker, held))

    def settle_oldest(self) -> Written:
        """Wait for the oldest write in flight; return what it made durable. A failure is in
        ``Written.failure``, for the caller to raise once the durable part is committed."""
        flight = self._flights.popleft()
        return self._result(flight.future, self.what)

    # -- bounds ------------------------------------------------------------------------------

    def _result(self, fut: Future, what: str, raise_error: bool = True):
        """``fut.result()``, bounded: a call unanswered for ``stall_timeout``, or past the grace
        period after a stop signal, is given up. Its thread stays stuck (a daemon: it does not
        keep the process alive) and nothing it would have made durable is committed."""
        while True:
            try:
                return fut.result(timeout=0.1)
            except FutureTimeout:
                pass
            except Exception:
                if raise_error:
                    raise
                return None
            self.check_stall(what)
            if self.past_grace() and not fut.done():
                self.abandoned = True
                raise DependencyUnavailable(
                    f"stopping: sink {self.spec.sink_type} did not answer within {self.stop_grace:g}s of the stop "
                    f"signal ({what}); gave it up, nothing committed for it")

    def check_stall(self, what: str | None = None) -> None:
        """Raise ``DependencyUnavailable`` when a sink call has gone unanswered for
        ``stall_timeout``: a silent connection the driver's own timeouts did not end."""
        now = time.monotonic()
        for w in self._workers:
            busy = w.busy_since
            if busy is not None and now - busy > self.stall_timeout:
                self.abandoned = True
                what = what or (self.what if self._flights else "housekeeping")
                raise DependencyUnavailable(
                    f"sink {self.spec.sink_type}: no answer for {now - busy:.0f}s ({what}); the connection is "
                    f"open but silent (retry.attempt_timeout {self.stall_timeout:g}s): giving up, nothing "
                    "committed for it")

    def retry(self, what: str, fn):
        """``retry`` on a sink thread, whose waits end early at a stop signal, and whose stall
        clock runs per attempt."""
        worker = next((w for w in self._workers if w.on_thread()), None)
        return stoppable_retry(what, fn, self.backoff, self.stop_level, self.past_grace, worker)

    # -- one write, on a sink thread ---------------------------------------------------------

    def _write(self, batches: list) -> Written:
        """Write with retries; narrow bad records to what precedes them; keep what a partial
        ``WriteOutcome`` made durable and write the rest again."""
        out = Written([])
        pending = batches

        def attempt():
            nonlocal pending
            started = time.perf_counter()
            try:
                outcome = self.sink.write(pending)
            except OffsetConflict as exc:
                out.conflicts.update(exc.partitions)
                outcome = None
                pending = [b for b in pending if (b.topic, b.partition) not in exc.partitions]
            except RetryableError:
                self.result.sink_ok = False
                raise
            if isinstance(outcome, WriteOutcome) and outcome.durable is not None:
                made = outcome.durable
                out.durable += [b for b in pending if (b.topic, b.partition) in made]
                rest = [b for b in pending if (b.topic, b.partition) not in made]
                if rest:
                    pending = rest
                    self.result.sink_ok = False
                    left = ", ".join(f"{t}[{p}]" for t, p in sorted({(b.topic, b.partition) for b in rest}))
                    raise RetryableError(f"not durable yet: {left}" + (f" ({outcome.reason})" if outcome.reason else ""))
            else:
                out.durable += pending
            pending = []
            with self._lock:
                self.result.write_seconds.observe(time.perf_counter() - started)
            self.result.sink_ok = True

        while pending:
            try:
                try:
                    self.retry(self.what, attempt)
                except BadRecordError as exc:
                    pending = self._narrow(pending, exc, out)
            except Exception as exc:  # retries spent (exit 3), fatal (exit 2), or a sink's bug
                if not out.durable:
                    raise
                # What an earlier attempt made durable is committed all the same: it is durable,
                # and committing it saves the next run a replay.
                out.failure = exc
                break
        return out

    def _narrow(self, batches: list, exc: BadRecordError, out: Written) -> list:
        """The sink narrowed a data error to one record and made nothing durable: apply the
        sink stage's policy, and return what to write next."""
        pos = locate(batches, exc)
        bad = batches[pos]
        tp = (bad.topic, bad.partition)
        if self.spec.policies["sink"] != "fail":
            with self._lock:
                self.on_reject(bad.message(exc.index), "sink", exc)
            if self.dlq is not None:
                self.dlq.ensure_delivered()
            return batches[:pos] + [bad.without(exc.index)] + batches[pos + 1:]
        # fail: write what precedes the record, commit that, and stop.
        out.failure = out.failure or fail_cut(bad.message(exc.index), f"sink {self.spec.sink_type!r}", "sink", exc,
                                              exc.index)
        head = bad.head(exc.index)
        # Order matters: a partition's batches must reach the sink in offset order, and none
        # of that partition's later batches may follow the bad record.
        return (batches[:pos] + ([head] if head.next_offset > head.start_offset else [])
                + [b for b in batches[pos + 1:] if (b.topic, b.partition) != tp])


def fail_cut(msg, what: str, stage: str, exc: BaseException, index: int) -> BadRecordError:
    """The error that ends a run at the bad record ``msg`` under ``errors.<stage>: fail``;
    ``index`` is its position in the list the stage or the sink was given."""
    where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
    return BadRecordError(f"bad record at {where}: {what}: {exc} (errors.{stage}: fail)", index,
                          msg.topic(), msg.partition(), msg.offset())


def stoppable_retry(what: str, fn, backoff: Backoff, stop_level: Callable[[], int],
                    past_grace: Callable[[], bool], worker: Worker | None = None):
    """``retry`` whose waits end early when a stop signal arrives during them: a dependency
    that is down must not hold a SIGTERM past the orchestrator's grace period. On a sink
    thread (``worker``), the stall clock runs per attempt."""
    level = stop_level()

    def sleep(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if stop_level() > level or past_grace():
                raise DependencyUnavailable(f"{what}: stopped while waiting to retry")
            time.sleep(min(0.1, left))

    def attempt():
        if worker is not None:
            worker.busy_since = time.monotonic()
        try:
            return fn()
        finally:
            if worker is not None:
                worker.busy_since = None

    return retry(what, attempt, backoff, log, sleep=sleep)


def locate(batches: list, exc: BadRecordError) -> int:
    """The position in ``batches`` of the batch holding the record a sink reported."""
    same = [i for i, b in enumerate(batches) if (b.topic, b.partition) == (exc.topic, exc.partition)]
    if exc.offset is not None:
        same = [i for i in same if batches[i].start_offset <= exc.offset < batches[i].next_offset]
    if len(same) != 1:
        raise FatalError(f"the sink reported a bad record it did not locate: {exc} "
                         f"({exc.topic}[{exc.partition}]@{exc.offset}); sinks must raise "
                         "BadRecordError.in_batch(message, batch, index)")
    return same[0]

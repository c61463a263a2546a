"""The consumer loop: consume in chunks, run the stages, buffer per partition, cut batches.

Its helpers each have one job: the ``Writer`` (kpipe.runtime.writer) makes every sink call,
with retries, bad-record narrowing and the sink stage of the error policy; the ``OffsetBook``
(kpipe.runtime.offsets) holds every position, and ``GroupCommits`` (kpipe.runtime.commits)
mirrors its durable ones to the group; ``Rebalance`` (kpipe.runtime.rebalance) handles the
group's assignment, and ``Drain`` (kpipe.runtime.drain) the end offsets --until-caught-up
reads to; ``MemoryBound`` (kpipe.runtime.backpressure) keeps the records held within
``batch.max_buffered_bytes``. The consumer comes from an
injected factory (kpipe.runtime.consumer) and the plugins from a registry passed in, so the loop
runs in tests on a fake consumer (kpipe.runtime.fakes).

Invariants the rest of kpipe relies on:
- an offset is committed only after ``Sink.write`` returned for the batch that covers it (or
  named its partition in a ``WriteOutcome``);
- sink calls run on the Writer's threads, never the consumer's: a write overlaps the consuming
  and decoding of the next batches; at most ``Capabilities.max_in_flight`` writes (1 unless the
  sink declares more) run at once, never two for one partition, and no other sink call beside one;
- a partition's start position comes from the sink's own offset store when it has one, so
  a crash between the sink write and the Kafka commit costs nothing and duplicates nothing;
- a revoked partition's buffer is dropped, never written after the revoke;
- a stop signal waits for no stage: the slice of records in the stages is abandoned, and
  records consumed but not through the stages are neither buffered nor committed;
- every wait is bounded: a sink call left unanswered for ``retry.attempt_timeout``, or for
  ``STOP_GRACE`` seconds after a stop signal, is given up (exit 3, nothing committed for it),
  reaching the brokers by ``source.connect_timeout``, and the group's assignment by
  ``source.assignment_timeout``.
"""
from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from concurrent.futures import Future

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from kpipe.api import HOUSEKEEP_EVERY, BadRecordError, FatalError, RetryableError, Sink, SinkContext
from kpipe.plugins import Registry, registry
from kpipe.runtime.backpressure import MemoryBound
from kpipe.runtime.buffer import PartitionBuffer
from kpipe.runtime.commits import GroupCommits
from kpipe.runtime.consumer import (KAFKA_DEFAULTS, ConsumerFactory, consumer_config, group_offsets, kafka_consumer,
                                    topic_partitions)
from kpipe.runtime.dlq import DeadLetterQueue
from kpipe.runtime.drain import Drain
from kpipe.runtime.offsets import OffsetBook, resume_positions
from kpipe.runtime.rebalance import Rebalance
from kpipe.runtime.stages import Stages
from kpipe.runtime.stats import RunResult
from kpipe.runtime.retry import Backoff, DependencyUnavailable
from kpipe.runtime.writer import Writer, fail_cut, stoppable_retry
from kpipe.runtime.writer import locate as _locate  # noqa: F401  (tests import it from here)

__all__ = ["Runner", "RunResult", "consumer_config", "KAFKA_DEFAULTS"]

log = logging.getLogger("kpipe.run")

_CHUNK = 10_000  # messages per Consumer.consume call, at most
# Records per consume call are also bounded by bytes: their estimated held size at most this
# fraction of batch.max_buffered_bytes (10,000 values of 1 MB would be 10 GB in one call).
_CHUNK_SHARE = 8
# Before any value was seen, a consume call takes as many values of the largest size a broker
# sends by default (message.max.bytes) as fill half of batch.max_buffered_bytes in raw bytes (33
# by default): 10,000 values of 1 MB would be 10 GB. The next calls are sized from what it
# brought, and the chunk is decoded slice by slice within the bound (``_ingest``).
_FIRST_VALUE_BYTES = 1_000_000
_FIRST_SHARE = 2
_COMMIT_POLL = 0.01  # seconds consume() waits while a commit awaits its answer
# After a stop signal, how long a sink call may still take before it is given up: the write
# in flight, the drain. Well inside the 10 s an orchestrator usually allows.
STOP_GRACE = 5.0
# After a second stop signal: how long the write in flight may still take.
SECOND_STOP_GRACE = 1.0
# The stages run a partition's records in slices of about this many seconds, so that a stop
# signal abandons at most that much work (a slow transform: one record); the slice size follows
# the measured time per record, so fast stages still get a whole run in one call.
SLICE_SECONDS = 0.1
# After a first stop, the records already consumed still go through the stages for this long
# (fast stages finish a whole chunk well inside it), so a stop does not throw away work that
# costs milliseconds; past it, or on a second signal, the rest is abandoned.
STOP_STAGES_GRACE = 0.5
_ABANDONED = object()  # _ingest_slice: the slice was abandoned for a stop; so is the rest
# Without retry.attempt_timeout: how long one attempt (a sink call, a Kafka commit) may go
# unanswered before it is taken for a stall, at least; retry.max_elapsed if that is longer.
# Short enough to end a silent connection, long enough for a driver's own retries (botocore's).
DEFAULT_ATTEMPT_TIMEOUT = 60.0
# On the way out, how long the commits in flight may take to be answered. A commit only mirrors
# what the sink made durable (a sink without offsets of its own replays what was not committed).
COMMIT_TIMEOUT = 10.0
PROBE_TIMEOUT = 2.0  # before closing the consumer: do the brokers answer a metadata request?
ANSWERED_JUST_NOW = 0.2  # seconds: a commit answered this recently stands in for the probe


class _KafkaTimeout(Exception):
    """The brokers did not answer; ``consumer.close()`` would wait for them without a bound."""


class _Interrupted(BaseException):
    """Raised by the stop signal's handler inside the stages (``Runner._process``): the slice
    in progress is abandoned. A BaseException, like KeyboardInterrupt, so that a transform's
    ``except Exception`` does not take it for a bad record."""


class _Throttle(logging.Filter):
    """Let one copy of a repeated message through per ``window`` seconds.

    A broker that is down makes librdkafka report the same failure every few milliseconds.
    """

    def __init__(self, window: float = 30.0):
        super().__init__()
        self.window = window
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage()
        now = time.monotonic()
        if now - self.last.get(key, -self.window) < self.window:
            return False
        if len(self.last) > 1000:
            self.last.clear()
        self.last[key] = now
        return True


kafka_log = logging.getLogger("kpipe.kafka")
kafka_log.addFilter(_Throttle())


def delivery_statement(spec, caps) -> str:
    """What the run guarantees, from the sink's declared capabilities, for the start-up log."""
    if caps.stores_offsets:
        how = "exactly-once: the sink stores offsets with the data"
    elif caps.idempotent_writes:
        how = "exactly-once: replayed writes converge (idempotent writes)"
    else:
        how = "at-least-once: a batch written before a crash is written again after it"
    if spec.dlq is not None:
        how += "; dead letters at-least-once"
    return how


class Runner:
    def __init__(self, spec, *, until_caught_up: bool = False, max_messages: int | None = None,
                 backoff: Backoff | None = None, consumer_factory: ConsumerFactory = kafka_consumer,
                 plugins: Registry | None = None, dlq_factory=DeadLetterQueue):
        """``consumer_factory`` builds the consumer from its librdkafka config, ``plugins`` is
        the registry the spec's plugins come from (default: the installed ones), ``dlq_factory``
        builds the dead-letter queue: tests drive the loop with fakes (``kpipe.runtime.fakes``)."""
        self.spec = spec
        self.consumer_factory = consumer_factory
        self.dlq_factory = dlq_factory
        self.until_caught_up = until_caught_up
        self.max_messages = max_messages
        self.backoff = backoff or Backoff(spec.retry_attempts, spec.retry_initial_backoff,
                                          spec.retry_max_backoff, spec.retry_max_elapsed)
        # A sink call (one attempt) unanswered this long is a stalled dependency, not a slow one.
        self.stall_timeout = (spec.retry_attempt_timeout if spec.retry_attempt_timeout is not None
                              else max(DEFAULT_ATTEMPT_TIMEOUT, spec.retry_max_elapsed))
        reg = plugins if plugins is not None else registry()
        self.sink_plugin = reg.get("sink", spec.sink_type)
        self.stores_offsets = self.sink_plugin.capabilities.stores_offsets
        self.stages = Stages(spec, reg)
        self.dlq: DeadLetterQueue | None = None
        self.sink = None
        self.consumer = None
        self.buffers: dict[tuple, PartitionBuffer] = {}
        # What the records held cost in memory, and the partitions paused to bound it.
        self.memory = MemoryBound(spec.max_buffered_bytes, self.buffers, write=self._write,
                                  settle_one=self._settle_one)
        self._value_bytes: float | None = None  # raw bytes per value, moving average
        self.result = RunResult()                # totals and live figures, read by watchers
        # Every position of every partition; watchers read its consumed and committed ones.
        self.book = OffsetBook(self.result.positions, self.result.committed)
        self._next_ends = 0.0
        self.housekeep_every = HOUSEKEEP_EVERY
        self._next_housekeep = 0.0  # set when the sink exists
        self._housekeeping: Future | None = None
        self._housekeeps = False  # whether the sink has housekeeping at all (set once it exists)
        self.stop_requested = 0
        self._in_stages = False  # the main thread is inside Stages.process: a signal interrupts it
        self._slice = 1           # records per Stages.process call; follows the time per record
        self._stop_deadline: float | None = None  # sink calls are given up after it
        self._stop_at = 0.0                       # when the first stop was requested
        self._mute_kafka_log = False
        # Every sink call goes through the Writer, on threads of its own: a write in progress
        # overlaps the next consume (the COPY or upload wait was ~25% of a PostgreSQL run).
        self.writer: Writer | None = None
        self._kafka_silent = False  # the brokers did not answer at the end: the consumer is not closed
        # The book's durable positions, mirrored to the group.
        self.commits = GroupCommits(self.book, self.result, spec.brokers, self.stall_timeout)
        # --until-caught-up: the end offsets to reach, and whether they are reached.
        self.drain = (Drain(self.result.targets, self.buffers, self.book, self.commits, retry=self._retry,
                            stored_positions=self._stored_positions) if until_caught_up else None)
        # The group's assignment: the rebalance callbacks, and the watch on one that never comes.
        self.rebalance = Rebalance(spec, buffers=self.buffers, book=self.book, result=self.result,
                                   commits=self.commits, pressure=self.memory.pressure, settle=self._settle,
                                   stored_positions=self._stored_positions, drain=self.drain,
                                   on_assigned=self._refresh_ends)

    # -- lifecycle -------------------------------------------------------------------------

    def request_stop(self, signum=None, frame=None) -> None:
        """The SIGINT/SIGTERM handler (also called from other threads, without a signal).

        First signal: stop consuming; the slice of records in the stages is abandoned, what is
        buffered is written and committed. Second: what is buffered is dropped, and the write in
        flight gets ``SECOND_STOP_GRACE`` more."""
        self.stop_requested += 1
        now = time.monotonic()
        if self.stop_requested == 1:
            self._stop_deadline = now + STOP_GRACE
            self._stop_at = now
            log.info("stopping: draining buffered records (signal again to drop them)")
        elif self.stop_requested == 2:
            self._stop_deadline = min(self._stop_deadline or now + SECOND_STOP_GRACE, now + SECOND_STOP_GRACE)
            log.info("stopping now: dropping buffered records")
        if self._in_stages and signum is not None and threading.current_thread() is threading.main_thread():
            # Signal handlers run on the main thread, between two bytecodes of whatever it runs:
            # here, a decoder or transform (perhaps a user's, sleeping). Its records are read
            # again by the next run; the stages are pure, so abandoning them is safe.
            self._in_stages = False
            raise _Interrupted()

    def run(self) -> RunResult:
        spec = self.spec
        ctx = SinkContext(pipeline=spec.name, group=spec.group, spec_file=spec.file,
                          tombstones=spec.tombstones, value_schema=self.stages.value_schema,
                          log=logging.getLogger(f"kpipe.sink.{spec.sink_type}"))
        old = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        # Each chunk allocates ~10k Message objects and decoded values that die young; the
        # default thresholds ran full collections over them constantly (15% of CPU, profiled).
        thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(100_000, 50, 1000)
        try:
            self.writer = Writer(self.sink_plugin, spec, self.backoff, self.stall_timeout, result=self.result,
                                 on_reject=self._reject, dlq=None, stop_level=lambda: self.stop_requested,
                                 past_grace=self._past_stop_grace, stop_grace=STOP_GRACE)
            self.writer.start(ctx)
            self.sink = self.writer.sink
            self._housekeeps = type(self.sink).housekeep is not Sink.housekeep
            self._next_housekeep = time.monotonic() + self.housekeep_every
            self.result.sink_ok = True
            log.info("delivery: %s", delivery_statement(spec, self.sink_plugin.capabilities))
            if spec.dlq is not None:
                self.dlq = self.writer.dlq = self.dlq_factory(spec, kafka_log)
            self.consumer = self.consumer_factory({**consumer_config(spec), "error_cb": self._on_kafka_error,
                                                   "on_commit": self.commits.answered, "logger": kafka_log})
            self.commits.consumer = self.memory.consumer = self.consumer
            self.memory.writer = self.writer
            self.rebalance.writer = self.writer
            parts = self._reach_brokers()
            if self.drain is not None:
                self.drain.consumer = self.consumer
                self.drain.snapshot(parts)
            self.rebalance.joining(self.consumer)
            rebalance = self.rebalance
            self.consumer.subscribe(list(spec.topics), on_assign=rebalance.on_assign,
                                    on_revoke=rebalance.on_revoke, on_lost=rebalance.on_lost)
            self.result.phase = "running"
            self._loop()
        except DependencyUnavailable as exc:
            self._fail(3, str(exc))
        except (FatalError, BadRecordError, KafkaException) as exc:
            self._fail(2, str(exc))
        except Exception as exc:  # a bug (ours or a plugin's): exit 2 like any failure, with the trace
            log.error("internal error", exc_info=True)
            self._fail(2, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._shutdown()
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            for s, h in old.items():
                signal.signal(s, h)
        return self.result

    def _retry(self, what: str, fn):
        """``retry`` on the loop's thread whose waits end early at a stop signal."""
        return stoppable_retry(what, fn, self.backoff, lambda: self.stop_requested, self._past_stop_grace)

    @property
    def abandoned(self) -> bool:
        """A sink call was given up while stuck (its thread may never return), or the consumer
        was left unclosed because the brokers did not answer."""
        return (self.writer is not None and self.writer.abandoned) or self._kafka_silent

    def _close_consumer(self) -> None:
        """``consumer.close()`` (leave the group, so it rebalances at once), once a metadata
        request shows the brokers answer: librdkafka's close waits on them without a bound,
        holding the interpreter meanwhile, so it cannot be bounded from another thread. When
        they do not answer, the consumer is left unclosed (``abandoned``: the CLI then exits
        without running its destructor) and the group rebalances after session.timeout.ms.
        A commit answered ``ANSWERED_JUST_NOW`` ago shows it as well (the usual end of a drain),
        and the probe would wait behind the fetch the broker holds open (up to fetch.wait.max.ms,
        500 ms: measured 0.48 s on Tansu)."""
        if time.monotonic() - self.commits.answered_at > ANSWERED_JUST_NOW:
            try:
                self.consumer.list_topics(timeout=PROBE_TIMEOUT)
            except KafkaException:
                self._kafka_silent = True
                raise _KafkaTimeout() from None
        try:
            # Records consumed meanwhile are dropped.
            self.commits.await_answers(lambda: self.consumer.consume(1, 0.1), COMMIT_TIMEOUT,
                                       self._past_stop_grace)
        except Exception as exc:  # closing must never mask the real outcome
            log.warning("waiting for the last commits: %s", exc)
        self.consumer.close()

    def _past_stop_grace(self) -> bool:
        return self._stop_deadline is not None and time.monotonic() > self._stop_deadline

    def _fail(self, code: int, reason: str) -> None:
        self.result.exit_code = code
        self.result.reason = reason
        log.error("%s", reason)

    def _shutdown(self) -> None:
        self.result.phase = "stopping"
        writer = self.writer
        while writer is not None and writer.in_flight:
            if writer.abandoned:
                writer.abandon_writes()  # stuck: nothing they may have written is committed
                break
            try:
                self._settle_one()  # what became durable is still worth a commit
            except Exception as exc:
                log.warning("the last write did not complete: %s", exc)
        if self.dlq is not None:
            self.dlq.close()
        if self.consumer is not None:
            muted, kafka_log.disabled = kafka_log.disabled, self._mute_kafka_log or kafka_log.disabled
            try:
                self._close_consumer()
            except _KafkaTimeout:
                log.warning("the brokers at %s do not answer: leaving without closing the consumer; the group "
                            "rebalances after session.timeout.ms", self.spec.brokers)
            except Exception as exc:  # closing must never mask the real outcome
                log.warning("closing the consumer: %s", exc)
            finally:
                kafka_log.disabled = muted
        if writer is not None:
            writer.close()
        self.result.partitions = dict(self.book.committed)
        self.result.phase = "done"

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        spec = self.spec
        timeout = min(1.0, max(0.05, spec.max_age / 2))
        budget = self.max_messages
        while not self.stop_requested:
            self._tick()
            while self.writer.oldest_done():
                self._settle_one()  # commit promptly, not only when the next batch is ready
            self.memory.bound()
            # A commit's answer is served inside consume() but does not end its wait: while one
            # is in flight, wait briefly, or --until-caught-up would exit up to `timeout` late.
            # Paused for memory: wait briefly too, to resume as soon as a write completes.
            wait = _COMMIT_POLL if self.commits.inflight or self.memory.pressure.paused else timeout
            count = self._chunk()
            if self.drain is not None:
                count, wait = self.drain.ask(count, wait)
            msgs = self.consumer.consume(count if budget is None else max(1, min(count, budget)), wait)
            if self.rebalance.error is not None:
                raise self.rebalance.error
            now = time.monotonic()
            self.rebalance.check(now)
            self.commits.check(now)
            self.writer.check_stall()
            ready: list = []
            bad = None
            if msgs:
                bad = self._ingest(msgs, now, ready)
                if budget is not None:
                    budget -= len(msgs)
            self._collect_due(now, ready, drain=bad is not None or (budget is not None and budget <= 0))
            if ready:
                self._write(ready)
            if self.book.pending:
                self.commits.commit(list(self.book.pending))
            if bad is not None:
                self._settle()  # what precedes the bad record is written and committed
                raise bad
            if budget is not None and budget <= 0:
                self._settle()
                self._tick(force=True)
                log.info("reached --max-messages %d", self.max_messages)
                return
            if self.drain is not None:
                if self.writer.in_flight and self.drain.all_read():
                    self._settle()  # nothing left to overlap the last write with
                if self.drain.caught_up(self.rebalance.steady):
                    self._settle()
                    self._tick(force=True)
                    log.info("caught up with the end offsets recorded at start")
                    return
        if self.stop_requested == 1:
            ready = []
            self._collect_due(time.monotonic(), ready, drain=True)
            if ready:
                self._write(ready)
        self._settle()
        self._tick(force=True)

    # -- memory ----------------------------------------------------------------------------

    def _held(self) -> int:
        """Estimated bytes of the records held (``MemoryBound.held``); tests and benchmarks read it."""
        return self.memory.held()

    def _chunk(self) -> int:
        """Messages to ask of the next consume call: ``_CHUNK``, or fewer when that many would
        hold more than a ``_CHUNK_SHARE``-th of ``batch.max_buffered_bytes``. Before any value
        was seen: as many values of ``_FIRST_VALUE_BYTES`` as fill a ``_FIRST_SHARE``-th of it."""
        if self._value_bytes is None:
            return max(1, min(_CHUNK, self.spec.max_buffered_bytes // _FIRST_SHARE // _FIRST_VALUE_BYTES))
        per = self.memory.sizes.held(1, int(self._value_bytes))
        return max(1, min(_CHUNK, int(self.spec.max_buffered_bytes // _CHUNK_SHARE // per)))

    def _tick(self, force: bool = False) -> None:
        """The loop turned: say so to watchers, let the sink housekeep, and refresh end offsets
        once a second from librdkafka's cache (fetch responses carry them; no request is made)."""
        now = time.monotonic()
        self.result.last_loop_at = now
        if now >= self._next_housekeep and not self.writer.in_flight and self._housekeeps:
            self._next_housekeep = now + self.housekeep_every
            if self._housekeeping is None or self._housekeeping.done():
                self._housekeeping = self.writer.submit_background(self._housekeep)
        if now < self._next_ends and not force:
            return
        self._next_ends = now + 1.0
        ends = self.result.ends
        for tp in self.buffers:
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                ends[tp] = high

    def _refresh_ends(self) -> None:
        """New partitions: their end offsets at the next turn."""
        self._next_ends = 0.0

    def _housekeep(self) -> None:
        """On the sink thread: the sink's background duties, which never stop the run."""
        try:
            self.sink.housekeep()
        except Exception as exc:
            log.warning("sink %s: housekeeping failed, tried again in %.0f s: %s", self.spec.sink_type,
                        self.housekeep_every, exc)

    def _ingest(self, msgs: list, now: float, ready: list):
        """Buffer a consumed chunk; returns the BadRecordError that stops the run, if any."""
        by_tp = _runs(msgs)
        if by_tp is None:
            by_tp = {}
            for m in msgs:
                if m.error() is not None:
                    self._on_message_error(m)
                    continue
                tp = (m.topic(), m.partition())
                lst = by_tp.get(tp)
                if lst is None:
                    by_tp[tp] = [m]
                else:
                    lst.append(m)
        left = sum(map(len, by_tp.values()))  # messages of the chunk not through the stages yet
        for tp, lst in by_tp.items():
            buf = self.buffers.get(tp)
            if buf is None:
                left -= len(lst)
                continue  # not ours (any more): a revoke raced this chunk
            if self.drain is not None:
                self.drain.learn_end(tp)
            if lst[0].offset() < buf.position:
                # Stale messages from before a seek; never buffer an offset twice.
                left -= len(lst)
                lst = [m for m in lst if m.offset() >= buf.position]
                left += len(lst)
                if not lst:
                    continue
            n = len(lst)
            lo = 0
            while lo < n:
                if self._abandoning():
                    return None  # consumed, not processed: not committed, read again next time
                hi = min(n, lo + min(self._slice, self._chunk()))  # bounded by time and by bytes
                part = lst if hi - lo == n else lst[lo:hi]
                bad = self._ingest_slice(tp, buf, part, now, ready)
                if bad is _ABANDONED:
                    return None  # nothing past an abandoned slice may be buffered
                if bad is not None:
                    bad.index += lo
                    return bad
                lo = hi
                left -= len(part)
                if left and self.memory.over(ready):
                    self.memory.make_room(ready)  # before decoding more of this chunk
        return None

    def _abandoning(self) -> bool:
        """Whether a stop abandons the records not yet through the stages: at a second signal,
        or once the first is ``STOP_STAGES_GRACE`` old."""
        return bool(self.stop_requested) and (
            self.stop_requested > 1 or time.monotonic() - self._stop_at > STOP_STAGES_GRACE)

    def _process(self, tp, lst: list, raw: list):
        """``Stages.process`` on ``lst``; None when a stop signal interrupted it. Times it, to
        size the next slice at about ``SLICE_SECONDS``."""
        started = time.perf_counter()
        try:
            try:
                self._in_stages = True
                if self._abandoning():
                    return None  # a signal between the check and the flag
                # A dependency of a stage (a Schema Registry) that is down raises RetryableError:
                # retried like any other, never taken for a bad record. The stages are pure.
                out = self._retry("decoding records", lambda: self.stages.process(tp[0], tp[1], lst, raw))
            finally:
                self._in_stages = False
        except _Interrupted:  # raised by request_stop, at most once per slice
            return None
        n = len(lst)
        per_record = (time.perf_counter() - started) / n
        if n >= self._slice:  # a full slice: grow (at most double) or shrink to the target
            self._slice = max(1, min(2 * self._slice, _CHUNK,
                                     int(SLICE_SECONDS / per_record) if per_record > 0 else _CHUNK))
        elif per_record * self._slice > SLICE_SECONDS:
            self._slice = max(1, int(SLICE_SECONDS / per_record))
        return out

    def _ingest_slice(self, tp, buf: PartitionBuffer, lst: list, now: float, ready: list):
        """Run one slice of a partition's records through the stages and buffer them; returns
        the BadRecordError that stops the run (its index into ``lst``), ``_ABANDONED`` when a
        stop interrupted it, else None."""
        spec = self.spec
        raw = list(map(Message.value, lst))
        try:
            sizes = list(map(len, raw))
        except TypeError:  # tombstones
            sizes = [0 if v is None else len(v) for v in raw]
        mean = sum(sizes) / len(sizes)  # sizes the next consume calls (filtered records too)
        self._value_bytes = mean if self._value_bytes is None else 0.75 * self._value_bytes + 0.25 * mean
        out = self._process(tp, lst, raw)
        if out is None:
            return _ABANDONED  # stopped: the slice is not buffered, its offsets not committed
        self.result.consumed += len(lst)  # counted once through the stages: a stop may abandon them
        failure = None
        for i, stage, exc in out.rejected:
            if self.spec.policies[stage] == "fail":
                failure = (i, stage, exc)
                self.result.rejected[(stage, "fail")] += 1
                break
            self._reject(lst[i], stage, exc)
        self.result.dropped += out.dropped
        kept = out.kept
        if failure is not None:
            # Keep only what precedes the bad record; nothing past it is committed.
            cut = failure[0]
            if kept is None:
                kept = list(range(cut))
            n = sum(1 for i in kept if i < cut)
            kept, out.values = kept[:n], out.values[:n]
            out.keys = None if out.keys is None else out.keys[:n]
        before = buf.nbytes
        if kept is None:
            buf.add(lst, out.values, sizes, now, out.keys)
        elif kept:
            sizes = [sizes[i] for i in kept]
            buf.add([lst[i] for i in kept], out.values, sizes, now, out.keys)
        if kept is None or kept:
            self.memory.sizes.observe(buf.nbytes - before, out.values, sizes)
        if failure is not None:
            i, stage, exc = failure
            m = lst[i]
            buf.skip_to(m.offset(), now)
            return fail_cut(m, stage, stage, exc, i)
        buf.skip_to(lst[-1].offset() + 1, now)  # filtered and rejected records count as read
        self.book.read(tp, buf.position)
        # --until-caught-up: the last batch ends at the target, wherever the consume calls ended.
        buf.cut(spec.max_records, spec.max_bytes, ready, None if self.drain is None else self.drain.end(tp))
        return None

    def _collect_due(self, now: float, ready: list, drain: bool = False) -> None:
        max_age = self.spec.max_age
        for buf in self.buffers.values():
            if drain:
                buf.take_all(ready)
            elif (buf.msgs or buf.position > buf.start) and now - buf.first_at >= max_age:
                buf.take_all(ready)

    def _reject(self, msg, stage: str, exc: BaseException) -> None:
        """Apply a ``skip`` or ``dlq`` policy to one bad record (any thread)."""
        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        self.result.rejected[(stage, self.spec.policies[stage])] += 1
        if self.spec.policies[stage] == "dlq":
            self.dlq.send(msg, stage, exc)
            self.result.dead_lettered += 1
            log.warning("bad record at %s (%s): %s; sent to dead-letter topic %r", where, stage, exc, self.dlq.topic)
        else:
            self.result.skipped += 1
            log.warning("bad record at %s (%s): %s; skipped", where, stage, exc)

    def _write(self, batches: list) -> None:
        """Hand ``batches`` to the Writer once the writes in flight leave room for them: fewer
        than ``max_in_flight``, and none holding one of their partitions."""
        writer = self.writer
        parts = {(b.topic, b.partition) for b in batches}
        while writer.in_flight and (writer.in_flight >= writer.max_in_flight or writer.holds(parts)):
            rewound = self._settle_one()
            if rewound:  # cut before the rewind: their offsets will be read again
                batches = [b for b in batches if (b.topic, b.partition) not in rewound]
                if not batches:
                    return
                parts -= rewound
        if self.dlq is not None:
            self.dlq.ensure_delivered()  # the write stores offsets past every dead letter so far
        for b in batches:
            self.book.handed((b.topic, b.partition), b.next_offset)
        writer.submit(batches, self.memory.held_in(batches))

    def _settle(self) -> None:
        """Settle every write in flight, oldest first (see ``_settle_one``)."""
        while self.writer is not None and self.writer.in_flight:
            self._settle_one()

    def _settle_one(self) -> set:
        """Wait for the oldest write in flight and commit what it made durable; raise its failure.

        Returns the partitions rewound because another writer was ahead on them."""
        written = self.writer.settle_oldest()
        done = []
        for b in written.durable:
            tp = (b.topic, b.partition)
            self.book.made_durable(tp, b.next_offset)
            self.result.written += len(b.values)
            self.result.batches += 1
            self.result.batch_records.observe(len(b.values))
            done.append(tp)
        for tp, head in written.conflicts.items():
            self._rewind(tp, head)
        self.commits.commit(done)
        if written.failure is not None:
            raise written.failure
        return set(written.conflicts)

    def _rewind(self, tp, head: int) -> None:
        """Another writer got ahead on ``tp``: drop what we buffered and resume at its head."""
        log.warning("%s[%d]: another writer already published up to offset %d; resuming there",
                    tp[0], tp[1], head)
        if tp in self.buffers:
            self.buffers[tp] = PartitionBuffer(tp[0], tp[1], head)
            self.book.rewind(tp, head)
            try:
                self.consumer.seek(TopicPartition(tp[0], tp[1], head))
            except KafkaException as exc:
                log.warning("seek %s[%d]@%d failed (%s); expecting a rebalance", tp[0], tp[1], head, exc)

    # -- reaching the brokers ---------------------------------------------------------------

    def _reach_brokers(self) -> list:
        """The partitions of the source topics, once the brokers answer a metadata request
        (within ``source.connect_timeout``). Under --until-caught-up a missing topic is fatal."""
        deadline = time.monotonic() + self.spec.connect_timeout

        def fetch():
            try:
                md = self.consumer.list_topics(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            except KafkaException as exc:
                raise RetryableError(exc.args[0].str())
            parts, missing = topic_partitions(md, self.spec.topics)
            for topic, why in missing.items():
                if self.until_caught_up:
                    raise FatalError(f"topic {topic!r} {why} on {self.spec.brokers}")
                log.warning("topic %r %s (yet); waiting for it", topic, why)
            return parts

        while True:  # bounded by source.connect_timeout, not by retry:
            try:
                parts = fetch()
                break
            except RetryableError as exc:
                if time.monotonic() >= deadline or self.stop_requested:
                    # One line says it; librdkafka's queued "connect failed" logs, delivered
                    # when the consumer closes, would only repeat it.
                    self._mute_kafka_log = True
                    when = ("stopped while trying" if self.stop_requested
                            else f"within {self.spec.connect_timeout:g}s (source.connect_timeout)")
                    raise DependencyUnavailable(f"cannot reach the brokers at {self.spec.brokers} {when}: {exc}") from None
                log.debug("connecting to Kafka at %s: %s", self.spec.brokers, exc)
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        return parts

    # -- the group's assignment ------------------------------------------------------------

    def unassigned_for(self, now: float | None = None) -> float | None:
        """Seconds the consumer has been in its group without an assignment (None: it has one)."""
        return self.rebalance.unassigned_for(now)

    @property
    def assigned_once(self) -> bool:
        """Whether the group has assigned us partitions (possibly none) at least once."""
        return self.rebalance.assigned_once

    def _stored_positions(self, tps: list) -> dict:
        """Where the pipeline stands on ``tps``: the sink's stored offset, else the group's
        committed one; partitions with neither are left out. Kafka errors propagate."""
        def load_sink(tps):
            return self.writer.call(self.writer.retry, "loading offsets from the sink",
                                    lambda: self.sink.load_offsets(tps))

        found = resume_positions(tps, load_sink if self.stores_offsets else None,
                                 lambda tps: group_offsets(self.consumer, tps))
        return {tp: o for tp, (o, _) in found.items()}

    # -- errors from librdkafka ------------------------------------------------------------

    def _on_message_error(self, m) -> None:
        err = m.error()
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise FatalError(f"Kafka: {err}")
        kafka_log.warning("%s", err.str())

    def _on_kafka_error(self, err) -> None:
        if err.fatal():  # raised by the loop, like an error inside a rebalance callback
            self.rebalance.error = FatalError(f"Kafka: {err}")
        else:
            kafka_log.warning("%s", err.str())


def _runs(msgs: list) -> dict | None:
    """``{(topic, partition): messages}`` for a chunk of one topic whose partitions come in
    contiguous runs, without an error among them: the usual shape (librdkafka hands over a
    fetch per partition), found with C-level passes instead of a Python step per message.
    None for any other chunk."""
    if any(map(Message.error, msgs)):
        return None
    topics = list(map(Message.topic, msgs))
    topic, n = topics[0], len(msgs)
    if topics.count(topic) != n:
        return None
    parts = list(map(Message.partition, msgs))
    out: dict = {}
    i = 0
    while i < n:
        p = parts[i]
        run = parts.count(p)
        if parts[i:i + run].count(p) != run:
            return None  # the partition comes back later: not runs
        out[(topic, p)] = msgs[i:i + run] if i or run != n else msgs
        i += run
    return out


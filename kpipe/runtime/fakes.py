"""A scripted broker for driving the runner without Kafka: a ``FakeCluster`` holds topics, the
group's committed offsets and a script of events; ``cluster.factory`` is the runner's
``consumer_factory`` and builds a ``FakeConsumer`` on it.

    cluster = FakeCluster({"t": 2})
    cluster.produce("t", 0, [b'{"a": 1}', b'{"a": 2}'])
    cluster.at(3, "revoke")                     # before the 3rd consume: revoke everything
    cluster.at(4, "assign")                     # then take every partition back
    Runner(spec, until_caught_up=True, consumer_factory=cluster.factory, plugins=reg).run()

Events, run at the start of the n-th ``consume`` call (``at``) or at the next one (``then``):
``"assign"`` (the given partitions, default all), ``"revoke"``, ``"lost"``, ``"error"`` (a
message carrying a ``KafkaError``), ``"client_error"`` (``error_cb``), ``"stop"`` (calls
``stop_with``: say, ``runner.request_stop``), or any callable taking the consumer. Commits are
answered at the next ``consume``; ``fail_commits`` makes the next answers errors, and
``raise_commits`` makes ``commit`` itself raise. Nothing here sleeps longer than 5 ms.

A real consumer's ``consume(n, timeout)`` returns early only once it has ``n`` messages: every
call that hands out fewer would have waited its whole timeout, and ``FakeConsumer.waits``
records those timeouts. ``cluster.listed_ends`` makes the end offsets a consumer asks the broker
for (``cached=False``) differ from the true ends that fetches report (``cached=True``), as
Tansu's end-offset answer stops short of the last batch.

Messages are real ``confluent_kafka.Message`` objects, so the runner's C-level paths run too.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from types import SimpleNamespace
from typing import Callable

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTP

from kpipe.api import Capabilities, Sink, SinkPlugin, WriteOutcome

__all__ = ["FakeCluster", "FakeConsumer", "FakeDeadLetters", "Store", "RecordingSink", "recording_registry",
           "fake_spec"]

_NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: no committed offset


class FakeCluster:
    def __init__(self, partitions: dict[str, int]):
        self.partitions = dict(partitions)
        self.logs: dict = {(t, p): [] for t, n in partitions.items() for p in range(n)}
        self.committed: dict = {}          # the group's committed offsets
        self.commits: list = []            # every accepted commit, [(topic, partition, offset)]
        self.events: dict = defaultdict(list)  # consume call number -> events
        self.soon: deque = deque()         # events for the next consume call
        self.commit_errors: deque = deque()   # answers for the next commits (KafkaError)
        self.commit_raises: deque = deque()   # errors the next commit calls raise
        self.stop_with: Callable | None = None
        self.on_commit: Callable | None = None  # called with (topic, partition, offset) per accepted commit
        self.consumers: list = []
        self.chunk: int | None = None  # at most this many messages per consume call
        self.max_calls = 5000  # a runner that never ends fails the test instead of hanging it
        self.listed_ends: dict = {}  # (topic, partition) -> the end offset a request answers

    # -- the script -------------------------------------------------------------------------

    def produce(self, topic: str, partition: int, values: list, keys: list | None = None) -> None:
        log = self.logs[(topic, partition)]
        for i, v in enumerate(values):
            log.append(Message(topic=topic, partition=partition, offset=len(log), value=v,
                               key=None if keys is None else keys[i], timestamp=(1, 1_700_000_000_000 + len(log))))

    def at(self, call: int, event, partitions: list | None = None) -> None:
        self.events[call].append((event, partitions))

    def then(self, event, partitions: list | None = None) -> None:
        self.soon.append((event, partitions))

    def fail_commits(self, n: int = 1, code: int = KafkaError.REQUEST_TIMED_OUT) -> None:
        self.commit_errors.extend(KafkaError(code) for _ in range(n))

    def raise_commits(self, n: int = 1, code: int = KafkaError._TRANSPORT) -> None:
        self.commit_raises.extend(KafkaError(code) for _ in range(n))

    def factory(self, conf: dict) -> "FakeConsumer":
        consumer = FakeConsumer(self, conf)
        self.consumers.append(consumer)
        return consumer

    def end(self, tp) -> int:
        return len(self.logs[tp])


class FakeConsumer:
    """The ``ConsumerLike`` the runner needs, over a ``FakeCluster``."""

    def __init__(self, cluster: FakeCluster, conf: dict):
        self.cluster = cluster
        self.conf = conf
        self.on_commit = conf.get("on_commit")
        self.error_cb = conf.get("error_cb")
        self.callbacks: dict = {}
        self.topics: list = []
        self.assignment: dict = {}   # (topic, partition) -> next offset to hand out
        self.answers: deque = deque()  # (err, [KafkaTP]) waiting for the next consume
        self.calls = 0
        self.closed = False
        self.paused: set = set()     # partitions paused: consume hands out none of their messages
        self.pauses: list = []       # every pause and resume call: ("pause" | "resume", [tp])
        self.waits: list = []        # timeouts of the calls a real consumer would have waited out

    def subscribe(self, topics, on_assign=None, on_revoke=None, on_lost=None) -> None:
        self.topics = list(topics)
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self.cluster.at(1, "assign")  # the group's first assignment

    def _all(self) -> list:
        return [tp for tp in self.cluster.logs if tp[0] in self.topics]

    def fire(self, event, partitions: list | None = None) -> list:
        """Run one event now (see the module's docstring); returns messages it produced."""
        tps = self._all() if partitions is None else list(partitions)
        if callable(event):
            event(self)
        elif event == "assign":
            self.callbacks["assign"](self, [KafkaTP(*tp) for tp in tps])
        elif event in ("revoke", "lost"):
            tps = [tp for tp in tps if tp in self.assignment]
            self.callbacks[event](self, [KafkaTP(*tp) for tp in tps])
            for tp in tps:
                self.assignment.pop(tp, None)  # an eager rebalance unassigns everything
                self.paused.discard(tp)
        elif event == "error":
            return [Message(topic=tps[0][0], partition=tps[0][1], error=KafkaError(KafkaError._TRANSPORT))]
        elif event == "client_error":
            self.error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN))
        elif event == "stop":
            self.cluster.stop_with()
        else:
            raise ValueError(f"unknown event {event!r}")
        return []

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list:
        self.calls += 1
        asked = num_messages
        num_messages = min(num_messages, self.cluster.chunk or num_messages)
        if self.calls > self.cluster.max_calls:
            raise RuntimeError(f"fake consumer: the run went on past {self.cluster.max_calls} consume calls")
        out: list = []
        while self.answers:
            err, parts = self.answers.popleft()
            self.on_commit(err, parts)
        due = self.cluster.events.pop(self.calls, []) + list(self.cluster.soon)
        self.cluster.soon.clear()
        for event, partitions in due:
            out += self.fire(event, partitions)
        for tp, pos in list(self.assignment.items()):
            if len(out) >= num_messages:
                break
            if tp in self.paused:
                continue
            log = self.cluster.logs[tp]
            take = log[pos:pos + num_messages - len(out)]
            out += take
            self.assignment[tp] = pos + len(take)
        if not out:
            time.sleep(min(max(timeout, 0), 0.005))
        if len(out) < asked:
            self.waits.append(timeout)
        return out

    def commit(self, offsets=None, asynchronous: bool = True) -> None:
        if self.cluster.commit_raises:
            raise KafkaException(self.cluster.commit_raises.popleft())
        err = self.cluster.commit_errors.popleft() if self.cluster.commit_errors else None
        parts = [KafkaTP(o.topic, o.partition, o.offset) for o in offsets]
        if err is None:
            for o in parts:
                self.cluster.committed[(o.topic, o.partition)] = o.offset
                self.cluster.commits.append((o.topic, o.partition, o.offset))
                if self.cluster.on_commit is not None:
                    self.cluster.on_commit(o.topic, o.partition, o.offset)
        self.answers.append((err, parts))

    def committed(self, partitions, timeout: float = -1) -> list:
        return [KafkaTP(p.topic, p.partition, self.cluster.committed.get((p.topic, p.partition), _NO_OFFSET))
                for p in partitions]

    def list_topics(self, topic=None, timeout: float = -1):
        topics = {t: SimpleNamespace(partitions={p: None for p in range(n)}, error=None)
                  for t, n in self.cluster.partitions.items()}
        return SimpleNamespace(topics=topics, brokers={1: None})

    def get_watermark_offsets(self, partition, timeout: float = -1, cached: bool = False) -> tuple:
        tp = (partition.topic, partition.partition)
        if not cached and tp in self.cluster.listed_ends:
            return 0, self.cluster.listed_ends[tp]
        return 0, self.cluster.end(tp)

    def assign(self, partitions) -> None:
        self.assignment = {(p.topic, p.partition): p.offset for p in partitions}
        self.paused &= set(self.assignment)

    def incremental_assign(self, partitions) -> None:
        self.assignment.update({(p.topic, p.partition): p.offset for p in partitions})

    def incremental_unassign(self, partitions) -> None:
        for p in partitions:
            self.assignment.pop((p.topic, p.partition), None)
            self.paused.discard((p.topic, p.partition))

    def seek(self, partition) -> None:
        self.assignment[(partition.topic, partition.partition)] = partition.offset

    def pause(self, partitions) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self.paused.update(tp for tp in tps if tp in self.assignment)
        self.pauses.append(("pause", tps))

    def resume(self, partitions) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self.paused.difference_update(tps)
        self.pauses.append(("resume", tps))

    def memberid(self) -> str:
        return "fake-member"

    def close(self) -> None:
        self.closed = True


class FakeDeadLetters:
    """A ``DeadLetterQueue`` stand-in that keeps what it was sent: ``[(offset, stage, error)]``."""

    def __init__(self, spec=None, kafka_logger=None, topic: str = "dead-letters"):
        self.topic = topic
        self.sent: list = []
        self.closed = False

    def send(self, msg, stage: str, exc: BaseException) -> None:
        self.sent.append((msg.offset(), stage, str(exc)))

    def ensure_delivered(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Store:
    """What a ``RecordingSink`` made durable: per partition, the offsets it holds, in order."""

    def __init__(self):
        self.rows: dict = {}       # (topic, partition) -> [offset, ...] in write order
        self.durable: dict = {}    # (topic, partition) -> next offset durable
        self.calls: list = []      # per write: [(topic, partition, start, next)]
        self.lock = threading.Lock()


class RecordingSink(Sink):
    """A sink that keeps what it is given in a ``Store``, refusing a gap or an overlap.

    ``config["hook"](sink, batches)``, when set, runs before each write: it may raise to fail
    the write, or return a ``WriteOutcome`` to make only the partitions it names durable."""

    def __init__(self, config, context, store: Store):
        super().__init__(config, context)
        self.store = store

    def load_offsets(self, partitions):
        return {tp: self.store.durable[tp] for tp in partitions if tp in self.store.durable}

    def write(self, batches):
        hook = self.config.get("hook")
        outcome = hook(self, batches) if hook is not None else None
        made = outcome.durable if isinstance(outcome, WriteOutcome) and outcome.durable is not None else None
        with self.store.lock:
            for b in batches:
                tp = (b.topic, b.partition)
                if made is not None and tp not in made:
                    continue
                if b.start_offset != self.store.durable.get(tp, b.start_offset):
                    raise AssertionError(f"{tp}: a write from {b.start_offset}, durable up to {self.store.durable[tp]}")
                self.store.rows.setdefault(tp, []).extend(b.offsets)
                self.store.durable[tp] = b.next_offset
            self.store.calls.append([(b.topic, b.partition, b.start_offset, b.next_offset) for b in batches])
        return outcome


def recording_registry(store: Store, capabilities: Capabilities = Capabilities(), base=None):
    """The installed plugins (or ``base``), with sink ``recording`` writing to ``store``."""
    from kpipe.plugins import Registry, registry

    base = base or registry()
    sink = SinkPlugin("recording", {}, lambda config, ctx: RecordingSink(config, ctx, store), capabilities)
    return Registry({**{k: dict(v) for k, v in base.plugins.items()}, "sink": {"recording": sink}},
                    base.broken, base.dists)


def fake_spec(policy: str = "fail", **fields):
    """A spec for topic ``t`` into sink ``recording``, JSON values, three records a batch and
    no flush by age; ``fields`` override any ``Spec`` field. ``policy`` is every stage's."""
    from kpipe.spec.model import STAGES, Spec

    spec = dict(file="fake.yaml", name="fake", group="fake-group", brokers="fake:9092", topics=["t"],
                start="earliest", options={}, deserializer_type="json", deserializer_config={}, transforms=[],
                sink_type="recording", sink_config={}, max_records=3, max_bytes=1 << 20, max_age=60.0,
                policies={s: policy for s in STAGES})
    if policy == "dlq":
        spec["dlq"] = {"topic": "dead-letters", "brokers": "fake:9092", "options": {}}
    spec.update(fields)
    return Spec(**spec)

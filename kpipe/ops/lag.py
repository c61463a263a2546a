"""``kpipe lag SPEC``: per partition of the source topics, the pipeline's committed position,
the end offset (high watermark, fetched fresh from the broker) and the lag.

The position is the one the runner would resume from: the sink's own offset store when the
sink plugin declares ``stores_offsets`` (the sink is opened to read it), else the group's
committed offset. A partition with neither shows no position; its lag is what the next run
would read (``source.start: earliest``: end - low watermark; ``latest``: 0).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from kpipe.api import FatalError, RetryableError, SinkContext
from kpipe.plugins import registry
from kpipe.runtime.retry import Backoff, retry
from kpipe.runtime.runner import consumer_config

__all__ = ["PartitionLag", "gather", "format_table", "to_json", "short_backoff", "probe_consumer", "kafka_call"]

log = logging.getLogger("kpipe.lag")

_TRANSIENT = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN,
              KafkaError._RESOLVE, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
              KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT}


class _Quiet:
    """A logger for ``retry`` and librdkafka in one-shot commands: their chatter goes to the
    debug log, so a failure is reported in one line."""

    def __init__(self, name: str):
        self.logger = logging.getLogger(name)

    def warning(self, *args, **kw):
        self.logger.debug(*args, **kw)

    def log(self, level, *args, **kw):  # librdkafka's logger interface
        self.logger.debug(*args, **kw)


def short_backoff(spec) -> Backoff:
    """A one-shot command waits a little for a dependency, not a service's whole budget."""
    return Backoff(min(spec.retry_attempts, 3), min(spec.retry_initial_backoff, 0.5), 2.0)


def probe_consumer(spec, brokers: str | None = None, group: bool = True) -> Consumer:
    """A consumer that never subscribes: metadata, watermarks and (with ``group``) the group's
    committed offsets. Its librdkafka logs go to the debug log."""
    conf = {**consumer_config(spec), "logger": _Quiet("kpipe.kafka"), "error_cb": lambda err: None}
    if brokers is not None:
        conf["bootstrap.servers"] = brokers
    if not group:
        conf["group.id"] = f"kpipe-{spec.name}-probe"
    return Consumer(conf)


def kafka_call(what: str, fn):
    """``fn()``, with a transient Kafka error as ``RetryableError`` and any other as ``FatalError``."""
    try:
        return fn()
    except KafkaException as exc:
        err = exc.args[0]
        text = err.str() if isinstance(err, KafkaError) else str(err)
        if isinstance(err, KafkaError) and (err.code() in _TRANSIENT or err.retriable()):
            raise RetryableError(f"{what}: {text}") from None
        raise FatalError(f"{what}: {text}") from None


@dataclass
class PartitionLag:
    topic: str
    partition: int
    committed: int | None   # the next offset the pipeline resumes from; None: no position yet
    end: int                # high watermark
    lag: int
    source: str             # where `committed` comes from: sink | group | none


def _metadata(consumer, spec) -> list[tuple[str, int]]:
    md = kafka_call(f"cannot reach the brokers at {spec.brokers}", lambda: consumer.list_topics(timeout=5))
    tps = []
    for topic in spec.topics:
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            why = "does not exist" if t is None or t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART \
                else t.error.str()
            raise FatalError(f"topic {topic!r}: {why} on {spec.brokers}")
        tps += [(topic, p) for p in sorted(t.partitions)]
    return tps


def open_sink(spec):
    """Create and open the spec's sink (the caller closes it)."""
    plugin = registry().get("sink", spec.sink_type)
    ctx = SinkContext(pipeline=spec.name, group=spec.group, spec_file=spec.file, tombstones=spec.tombstones,
                      log=logging.getLogger(f"kpipe.sink.{spec.sink_type}"))
    sink = plugin.create(spec.sink_config, ctx)
    try:
        retry(f"opening sink {spec.sink_type}", sink.open, short_backoff(spec), _Quiet("kpipe.lag"))
    except BaseException:
        sink.close()
        raise
    return sink, plugin


def gather(spec, backoff: Backoff | None = None) -> list[PartitionLag]:
    """The lag of every partition of the spec's topics. Raises ``DependencyUnavailable`` when
    Kafka or the sink stays unreachable, ``FatalError`` for anything else."""
    backoff = backoff or short_backoff(spec)
    quiet = _Quiet("kpipe.lag")

    def again(what, fn):
        return retry(what, lambda: kafka_call(what, fn), backoff, quiet)

    consumer = probe_consumer(spec)
    try:
        tps = retry("connecting to Kafka", lambda: _metadata(consumer, spec), backoff, quiet)
        stored: dict = {}
        if registry().get("sink", spec.sink_type).capabilities.stores_offsets:
            sink, _ = open_sink(spec)
            try:
                stored = retry("loading offsets from the sink", lambda: sink.load_offsets(tps), backoff, quiet)
            finally:
                sink.close()
        group: dict = {}
        missing = [TopicPartition(*tp) for tp in tps if tp not in stored]
        if missing:
            for c in again("reading the group's committed offsets", lambda: consumer.committed(missing, timeout=10)):
                if c.error is None and c.offset >= 0:
                    group[(c.topic, c.partition)] = c.offset
        rows = []
        for tp in tps:
            low, high = again(f"end offset of {tp[0]}[{tp[1]}]",
                              lambda: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10, cached=False))
            if tp in stored:
                pos, source = stored[tp], "sink"
            elif tp in group:
                pos, source = group[tp], "group"
            else:
                pos, source = None, "none"
            start = pos if pos is not None else (low if spec.start == "earliest" else high)
            rows.append(PartitionLag(tp[0], tp[1], pos, high, max(0, high - start), source))
        return rows
    finally:
        consumer.close()


def totals(rows: list[PartitionLag]) -> dict:
    return {"committed": sum(r.committed or 0 for r in rows), "end": sum(r.end for r in rows),
            "lag": sum(r.lag for r in rows)}


def format_table(spec, rows: list[PartitionLag]) -> str:
    head = ("topic", "partition", "committed", "end", "lag", "from")
    body = [(r.topic, str(r.partition), "-" if r.committed is None else str(r.committed), str(r.end),
             str(r.lag), r.source) for r in rows]
    t = totals(rows)
    body.append(("total", "", str(t["committed"]), str(t["end"]), str(t["lag"]), ""))
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([f"{spec.name} (group {spec.group}, sink {spec.sink_type})", line(head),
                      *(line(b) for b in body)])


def to_json(spec, rows: list[PartitionLag]) -> str:
    return json.dumps({"pipeline": spec.name, "group": spec.group, "sink": spec.sink_type,
                       "partitions": [asdict(r) for r in rows], "total": totals(rows)}, indent=2)

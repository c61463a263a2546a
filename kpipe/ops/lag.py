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
from kpipe.runtime.consumer import consumer_config, group_offsets, topic_partitions
from kpipe.runtime.offsets import resume_positions, start_position

__all__ = ["PartitionLag", "gather", "with_members", "format_table", "to_json", "short_backoff", "probe_consumer",
           "kafka_call"]

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
    member: str | None = None  # ``client@host`` of the group member holding it, when the broker says


def _metadata(consumer, spec) -> list[tuple[str, int]]:
    md = kafka_call(f"cannot reach the brokers at {spec.brokers}", lambda: consumer.list_topics(timeout=5))
    tps, missing = topic_partitions(md, spec.topics)
    for topic, why in missing.items():
        raise FatalError(f"topic {topic!r}: {why} on {spec.brokers}")
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

        def load_sink(tps):
            sink, _ = open_sink(spec)
            try:
                return retry("loading offsets from the sink", lambda: sink.load_offsets(tps), backoff, quiet)
            finally:
                sink.close()

        stores = registry().get("sink", spec.sink_type).capabilities.stores_offsets
        resumed = resume_positions(tps, load_sink if stores else None, lambda missing: again(
            "reading the group's committed offsets", lambda: group_offsets(consumer, missing)))
        rows = []
        for tp in tps:
            low, high = again(f"end offset of {tp[0]}[{tp[1]}]",
                              lambda: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10, cached=False))
            pos, source = resumed.get(tp, (None, "none"))
            start = start_position(pos, low, high, spec.start)
            rows.append(PartitionLag(tp[0], tp[1], pos, high, max(0, high - start), source))
        return rows
    finally:
        consumer.close()


def totals(rows: list[PartitionLag]) -> dict:
    return {"committed": sum(r.committed or 0 for r in rows), "end": sum(r.end for r in rows),
            "lag": sum(r.lag for r in rows)}


def with_members(rows: list[PartitionLag], members) -> list[PartitionLag]:
    """``rows`` with each partition's holder from ``members`` (``kpipe.ops.members.Members``)."""
    owners = members.owners() if members is not None else {}
    for r in rows:
        m = owners.get((r.topic, r.partition))
        r.member = m.label if m is not None else None
    return rows


def _group_line(members) -> str:
    if members is None:
        return ""
    if not members.known:
        return f"; members unknown: {members.note}"
    if not members.members:
        return "; no members running"
    return f"; {len(members.members)} member{'s' if len(members.members) != 1 else ''}"


def format_table(spec, rows: list[PartitionLag], members=None) -> str:
    """The report as text; a ``member`` column when the broker named the partitions' holders."""
    show = any(r.member for r in rows)
    head = ("topic", "partition", "committed", "end", "lag", "from") + (("member",) if show else ())
    body = [(r.topic, str(r.partition), "-" if r.committed is None else str(r.committed), str(r.end),
             str(r.lag), r.source) + ((r.member or "-",) if show else ()) for r in rows]
    t = totals(rows)
    body.append(("total", "", str(t["committed"]), str(t["end"]), str(t["lag"]), "") + (("",) if show else ()))
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if i in (0, 5, 6) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    title = f"{spec.name} (group {spec.group}, sink {spec.sink_type}{_group_line(members)})"
    return "\n".join([title, line(head), *(line(b) for b in body)])


def to_json(spec, rows: list[PartitionLag], members=None) -> str:
    doc = {"pipeline": spec.name, "group": spec.group, "sink": spec.sink_type,
           "partitions": [asdict(r) for r in rows], "total": totals(rows)}
    if members is not None:
        doc["group_state"] = members.state
        # null: the broker did not say who the members are (see members_note)
        doc["members"] = [{**asdict(m), "partitions": [list(tp) for tp in m.partitions]}
                          for m in members.members] if members.known else None
        if members.note:
            doc["members_note"] = members.note
    return json.dumps(doc, indent=2)

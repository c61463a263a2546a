"""Every position of a pipeline's partitions, read once, for ``kpipe offsets`` and the progress
display: the sink's stored position, the group's committed offset, the log start and end, and
where the next run starts and why (the runner's rule: ``kpipe.runtime.offsets``)."""
from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import TopicPartition

from kpipe.ops.probe import Quiet, kafka_call, open_sink, probe_consumer, short_backoff, topic_metadata
from kpipe.plugins import registry
from kpipe.runtime.consumer import group_offsets
from kpipe.runtime.offsets import resume_positions, start_position
from kpipe.runtime.retry import retry

__all__ = ["Position", "read_positions", "stores_offsets"]


@dataclass
class Position:
    topic: str
    partition: int
    sink: int | None      # the sink's stored next offset (None: none, or the sink stores none)
    group: int | None     # the group's committed offset (None: none)
    log_start: int        # low watermark
    log_end: int          # high watermark
    start: int            # where the next run reads from
    source: str           # why: sink | group | start (source.start: earliest/latest)

    @property
    def tp(self) -> tuple:
        return (self.topic, self.partition)

    @property
    def lag(self) -> int:
        return max(0, self.log_end - self.start)


def stores_offsets(spec) -> bool:
    return registry().get("sink", spec.sink_type).capabilities.stores_offsets


def read_positions(spec, consumer=None, sink=None) -> list[Position]:
    """One ``Position`` per partition of the spec's topics. ``consumer`` (a probe of the spec's
    group) and ``sink`` (opened) are used when given, else made and closed here. Raises
    ``DependencyUnavailable`` or ``FatalError`` as ``kpipe lag`` does."""
    backoff, quiet = short_backoff(spec), Quiet("kpipe.offsets")

    def again(what, fn):
        return retry(what, lambda: kafka_call(what, fn), backoff, quiet)

    own = consumer is None
    consumer = consumer or probe_consumer(spec)
    try:
        tps = retry("connecting to Kafka", lambda: topic_metadata(consumer, spec), backoff, quiet)
        group = again("reading the group's committed offsets", lambda: group_offsets(consumer, tps)) if tps else {}
        stored: dict = {}
        if stores_offsets(spec) and tps:
            opened = sink is None
            if opened:
                sink, _ = open_sink(spec)
            try:
                stored = retry("loading offsets from the sink", lambda: sink.load_offsets(tps), backoff, quiet)
            finally:
                if opened:
                    sink.close()
        # The runner's rule, with what was read above: sink, then group, then source.start.
        resumed = resume_positions(tps, (lambda _: stored) if stored else None,
                                   lambda missing: {tp: group[tp] for tp in missing if tp in group})
        rows = []
        for tp in tps:
            low, high = again(f"log start and end of {tp[0]}[{tp[1]}]",
                              lambda: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10, cached=False))
            pos, why = resumed.get(tp, (None, "start"))
            rows.append(Position(tp[0], tp[1], stored.get(tp), group.get(tp), low, high,
                                 start_position(pos, low, high, spec.start), why))
        return rows
    finally:
        if own:
            consumer.close()

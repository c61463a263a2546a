"""The consumer as the runner sees it: a small interface, built by an injected factory.

The runner calls only the methods of ``ConsumerLike`` (a subset of confluent_kafka's
``Consumer``), and gets its consumer from a ``ConsumerFactory`` given the librdkafka config
(with ``error_cb``, ``on_commit`` and ``logger`` in it). ``kafka_consumer`` is the real one;
``kpipe.runtime.fakes.FakeConsumer`` drives the loop in tests without a broker.

Also here, once: the spec's librdkafka config, and reading the partitions of the spec's
topics from a metadata answer (the runner, ``kpipe lag`` and ``kpipe check`` all need it).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from confluent_kafka import Consumer, KafkaError
from confluent_kafka import TopicPartition as KafkaTP

__all__ = ["ConsumerLike", "ConsumerFactory", "kafka_consumer", "consumer_config", "prefetch_bounds", "KAFKA_DEFAULTS",
           "topic_partitions", "group_offsets"]


class ConsumerLike(Protocol):
    def subscribe(self, topics: list, on_assign=None, on_revoke=None, on_lost=None) -> None: ...
    def consume(self, num_messages: int, timeout: float) -> list: ...
    def commit(self, offsets: list, asynchronous: bool) -> Any: ...
    def committed(self, partitions: list, timeout: float) -> list: ...
    def list_topics(self, timeout: float) -> Any: ...
    def get_watermark_offsets(self, partition, timeout: float = ..., cached: bool = ...) -> tuple: ...
    def assign(self, partitions: list) -> None: ...
    def incremental_assign(self, partitions: list) -> None: ...
    def incremental_unassign(self, partitions: list) -> None: ...
    def seek(self, partition) -> None: ...
    def pause(self, partitions: list) -> None: ...
    def resume(self, partitions: list) -> None: ...
    def memberid(self) -> str | None: ...
    def close(self) -> None: ...


ConsumerFactory = Callable[[dict], ConsumerLike]


def kafka_consumer(conf: dict) -> Consumer:
    return Consumer(conf)


# kpipe's own defaults for librdkafka; anything in source.options overrides them.
KAFKA_DEFAULTS = {
    # librdkafka's default (1000 ms) pauses fetching a whole second whenever its queue is
    # full: measured here, that capped even a bare consumer at 171k msg/s instead of 900k.
    "fetch.queue.backoff.ms": 10,
}


# What one message waiting in librdkafka's queue costs at least, its value aside: the queue's
# byte bound counts values only, but each message also holds an op of ~300 B (measured: 1M values
# of 100 B, 100,000 queued by default, peaked 30 MiB above 16,384 queued, at the same msg/s).
QUEUED_MESSAGE_COST = 1024


def prefetch_bounds(spec) -> dict:
    """librdkafka's prefetch, bounded from ``batch.max_buffered_bytes``: a quarter of it may wait
    in librdkafka's queue (its default is 64 MiB, and fetch.max.bytes 50 MiB per fetch, whatever
    kpipe's own bound), counted in values' bytes and, for small values, in messages at
    ``QUEUED_MESSAGE_COST`` each (librdkafka's default is 100,000 messages). Settings in
    ``source.options`` win over these."""
    quarter = max(1, spec.max_buffered_bytes // 4)
    # librdkafka refuses fetch.max.bytes below message.max.bytes (1,000,000 unless set).
    floor = int(spec.options.get("message.max.bytes", 1_000_000))
    fetch = max(quarter, floor)
    out = {"queued.max.messages.kbytes": max(1, quarter // 1024), "fetch.max.bytes": fetch,
           "queued.min.messages": max(1000, min(100_000, quarter // QUEUED_MESSAGE_COST))}
    if "fetch.message.max.bytes" not in spec.options:  # an alias of max.partition.fetch.bytes
        out["max.partition.fetch.bytes"] = min(1 << 20, fetch)
    return out


def consumer_config(spec) -> dict:
    conf = {
        **KAFKA_DEFAULTS,
        **prefetch_bounds(spec),
        "bootstrap.servers": spec.brokers,
        "group.id": spec.group,
        "auto.offset.reset": spec.start,
        "client.id": f"kpipe-{spec.name}",
    }
    conf.update(spec.options)  # librdkafka settings pass through unchanged
    # The runner owns offsets; these two are not negotiable (validation rejects them too).
    conf["enable.auto.commit"] = False
    conf["enable.auto.offset.store"] = False
    return conf


def topic_partitions(md, topics) -> tuple[list, dict]:
    """From a metadata answer: ``[(topic, partition)]`` of ``topics`` in order, and
    ``{topic: why}`` for those that cannot be read (missing, or a broker-side error)."""
    parts: list = []
    missing: dict = {}
    for topic in topics:
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            missing[topic] = ("does not exist" if t is None or t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
                              else t.error.str())
            continue
        parts += [(topic, p) for p in sorted(t.partitions)]
    return parts, missing


def group_offsets(consumer, tps: list, timeout: float = 10) -> dict:
    """The group's committed offsets of ``tps`` that exist. Kafka errors propagate."""
    out: dict = {}
    for c in consumer.committed([KafkaTP(*tp) for tp in tps], timeout=timeout):
        if c.error is None and c.offset >= 0:
            out[(c.topic, c.partition)] = c.offset
    return out

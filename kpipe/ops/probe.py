"""What the one-shot commands (``lag``, ``offsets``, ``check``) share to look at a pipeline
from outside: a consumer that never subscribes, Kafka calls with their errors classified, the
topic metadata, and the spec's sink opened for reading its stored positions."""
from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaError, KafkaException

from kpipe.api import FatalError, RetryableError, SinkContext
from kpipe.plugins import registry
from kpipe.runtime.consumer import consumer_config, topic_partitions
from kpipe.runtime.retry import Backoff, retry

__all__ = ["Quiet", "short_backoff", "probe_consumer", "kafka_call", "topic_metadata", "open_sink"]

_TRANSIENT = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN,
              KafkaError._RESOLVE, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
              KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT}


class Quiet:
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
    conf = {**consumer_config(spec), "logger": Quiet("kpipe.kafka"), "error_cb": lambda err: None}
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


def topic_metadata(consumer, spec) -> list[tuple[str, int]]:
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
        retry(f"opening sink {spec.sink_type}", sink.open, short_backoff(spec), Quiet("kpipe.sink"))
    except BaseException:
        sink.close()
        raise
    return sink, plugin

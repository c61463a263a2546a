"""The dead-letter queue: bad records go to a Kafka topic, as they were, with the reason.

Headers mirror Kafka Connect's ``__connect.errors.*`` set under ``kpipe.error.*``. The runner
calls ``ensure_delivered`` before it writes (and so commits) any offset a dead letter covers:
a record is never lost between a failed DLQ produce and a successful sink write.
"""
from __future__ import annotations

import logging

from confluent_kafka import KafkaException, Producer

from kpipe.api import FatalError

__all__ = ["DeadLetterQueue", "error_headers"]

log = logging.getLogger("kpipe.dlq")
_MAX_MESSAGE = 4000  # header bytes for the error text; a stack of nested causes can be huge
DELIVERY_TIMEOUT_MS = 30_000


def error_headers(stage: str, exc: BaseException, msg, pipeline: str) -> list:
    cause = exc.__cause__ or exc.__context__ or exc  # the underlying error, even when raised "from None"
    return [
        ("kpipe.error.stage", stage),
        ("kpipe.error.class", f"{type(cause).__module__}.{type(cause).__qualname__}"),
        ("kpipe.error.message", str(exc)[:_MAX_MESSAGE]),
        ("kpipe.error.topic", msg.topic()),
        ("kpipe.error.partition", str(msg.partition())),
        ("kpipe.error.offset", str(msg.offset())),
        ("kpipe.error.pipeline", pipeline),
    ]


class DeadLetterQueue:
    def __init__(self, spec, kafka_logger=None):
        conf = {
            "bootstrap.servers": spec.dlq["brokers"],
            "client.id": f"kpipe-{spec.name}-dlq",
            # A dead letter is the only copy of a record kpipe is about to skip.
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            # Bounded: librdkafka's default keeps an unacknowledged record for 5 minutes.
            # ensure_delivered waits a little longer than this, then stops the run.
            "message.timeout.ms": DELIVERY_TIMEOUT_MS,
            **spec.dlq.get("options", {}),
            "error_cb": self._on_error,
        }
        if kafka_logger is not None:
            conf["logger"] = kafka_logger
        # The longest one produce may wait for its acknowledgement (delivery.timeout.ms is its alias).
        timeout_ms = conf.get("delivery.timeout.ms", conf["message.timeout.ms"])
        self.delivery_timeout = float(timeout_ms) / 1000.0
        self.topic = spec.dlq["topic"]
        self.pipeline = spec.name
        self.producer = Producer(conf)
        self.unacked = 0
        self.failures: list = []
        self.sent = 0

    def send(self, msg, stage: str, exc: BaseException) -> None:
        kind, ts = msg.timestamp()
        try:
            self.producer.produce(self.topic, value=msg.value(), key=msg.key(),
                                  headers=list(msg.headers() or ()) + error_headers(stage, exc, msg, self.pipeline),
                                  timestamp=ts if kind else 0, on_delivery=self._delivered)
        except (BufferError, KafkaException) as err:
            raise FatalError(f"dead-letter topic {self.topic!r}: cannot produce the record from "
                             f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: {err}") from None
        self.unacked += 1
        self.sent += 1
        self.producer.poll(0)

    def _delivered(self, err, _msg) -> None:
        self.unacked -= 1
        if err is not None:
            self.failures.append(err)

    def _on_error(self, err) -> None:
        log.warning("dead-letter producer: %s", err.str())

    def ensure_delivered(self, timeout: float | None = None) -> None:
        """Wait until every dead letter is acknowledged (at most a little longer than the
        producer's message.timeout.ms); raise ``FatalError`` if one was not."""
        if timeout is None:
            timeout = self.delivery_timeout + 5.0
        if self.unacked:
            self.producer.flush(timeout)
        if self.failures or self.unacked:
            first = self.failures[0].str() if self.failures else f"no acknowledgement within {timeout:.0f}s"
            raise FatalError(f"dead-letter topic {self.topic!r}: {len(self.failures) or self.unacked} "
                             f"record(s) not acknowledged ({first}); stopping without committing past them")

    def close(self) -> None:
        self.producer.flush(5)

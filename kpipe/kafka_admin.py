"""Small Kafka helpers shared by the demo, the tests and the benchmarks."""
from __future__ import annotations

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = ["create_topic", "produce"]


def create_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=timeout)
    try:
        futures[topic].result(timeout)
    except KafkaException as exc:
        if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
            raise


def produce(bootstrap: str, topic: str, items, partitions: int | None = None) -> int:
    """Produce ``(key, value)`` pairs (bytes or None); with ``partitions``, round-robin by index.

    Returns how many were delivered; raises if any delivery failed.
    """
    failures = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(err)

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "enable.idempotence": False, "acks": "all"})
    n = 0
    for n, (key, value) in enumerate(items, 1):
        kw = {} if partitions is None else {"partition": (n - 1) % partitions}
        while True:
            try:
                p.produce(topic, value, key, on_delivery=on_delivery, **kw)
                break
            except BufferError:
                p.poll(0.1)
        if n % 5000 == 0:
            p.poll(0)
    remaining = p.flush(60)
    if failures or remaining:
        raise RuntimeError(f"{len(failures)} deliveries failed, {remaining} undelivered: {failures[:3]}")
    return n

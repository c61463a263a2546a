"""Small Kafka helpers shared by the demo, the tests and the benchmarks."""
from __future__ import annotations

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = ["create_topic", "describe", "describe_group", "produce"]

# librdkafka settings an AdminClient shares with the consumer it reports on: how to reach and
# authenticate to the brokers. Consumer-only settings would only draw warnings.
_CONNECTION_PREFIXES = ("security.", "sasl.", "ssl.", "client.", "socket.", "broker.", "api.")


def create_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=timeout)
    try:
        futures[topic].result(timeout)
    except KafkaException as exc:
        if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
            raise


def describe(bootstrap: str, group: str, options=None, timeout: float = 5.0):
    """The coordinator's DescribeGroups answer for ``group`` (confluent_kafka's
    ``ConsumerGroupDescription``); raises ``KafkaException`` when it cannot be had."""
    conf = {"bootstrap.servers": bootstrap,
            **{k: v for k, v in (options or {}).items() if str(k).startswith(_CONNECTION_PREFIXES)}}
    admin = AdminClient(conf)
    return admin.describe_consumer_groups([group], request_timeout=timeout)[group].result(timeout + 1)


def describe_group(bootstrap: str, group: str, options=None, timeout: float = 5.0) -> str:
    """What the group's coordinator reports about ``group`` (DescribeGroups), as one phrase:
    ``state PreparingRebalance, 2 members: id1 (client, host), ...``. Never raises: a failure
    to describe is reported in the phrase. The protocol does not report the group's leader."""
    try:
        desc = describe(bootstrap, group, options, timeout)
    except Exception as exc:  # a diagnosis must not hide the failure it explains
        return f"describing the group failed: {exc}"
    state = getattr(desc.state, "name", desc.state)
    members = ", ".join(f"{m.member_id} ({m.client_id}, {m.host})" for m in desc.members)
    return (f"state {state}, {len(desc.members)} member{'s' if len(desc.members) != 1 else ''}"
            f"{': ' + members if members else ''}; the leader's member id is not reported by the broker")


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

"""``kpipe run SPEC --replicas N``: N members of the spec's consumer group on one machine, each
a child process under the supervisor (``kpipe.ops.supervisor``), because the GIL would keep
threads of one process on one core.

- Replica *i* of pipeline NAME is the child ``NAME/i``; it runs ``kpipe run SPEC --replica i``.
  That suffixes the spec's ``client.id`` (default ``kpipe-NAME``) with ``-i``, so the broker's
  group tools and ``kpipe lag`` tell the members apart, and a ``group.instance.id`` too: two
  static members with one id would fence each other.
- Children are numbered in order, each spec's replicas in turn; child *k* serves its metrics
  on PORT+*k* (``--metrics-port 0``: each a free port).
- Useful replicas are at most the partitions: the group gives each partition to one member,
  so the rest stay idle (kept as warm standbys). ``warn_idle`` says so, from a metadata
  request that never delays the start.
"""
from __future__ import annotations

import dataclasses
import logging
import threading

__all__ = ["plan", "as_replica", "warn_idle", "INSTANCE_KEYS"]

log = logging.getLogger("kpipe.supervisor")

# librdkafka settings that name one member: each replica needs its own.
INSTANCE_KEYS = ("client.id", "group.instance.id")


def plan(specs, replicas: int, port: int | None) -> list[tuple[str, str, tuple]]:
    """The supervisor's children: ``(name, spec path, extra args)`` per replica of each spec."""
    children = []
    for spec in specs:
        for i in range(replicas):
            k = len(children)
            extra: tuple = () if port is None else ("--metrics-port", str(port + k if port else 0))
            if replicas > 1:
                children.append((f"{spec.name}/{i}", spec.file, (*extra, "--replica", str(i))))
            else:
                children.append((spec.name, spec.file, extra))
    return children


def as_replica(spec, replica: int):
    """``spec`` as member ``replica`` of its group: its instance keys suffixed with ``-replica``."""
    from kpipe.runtime.consumer import consumer_config  # the default client.id is the runner's

    conf = consumer_config(spec)
    options = dict(spec.options)
    for key in INSTANCE_KEYS:
        if conf.get(key):
            options[key] = f"{conf[key]}-{replica}"
    return dataclasses.replace(spec, options=options)


def warn_idle(specs, replicas: int, timeout: float = 10.0) -> threading.Thread:
    """Log a warning, from a thread of its own, for each spec whose topics have fewer
    partitions than ``replicas``. A broker that does not answer is the children's to report."""

    def check():
        for spec in specs:
            try:
                partitions = count_partitions(spec, timeout)
            except Exception as exc:  # a hint only: never in the way of the run
                log.debug("%s: cannot count partitions: %s", spec.name, exc)
                continue
            if partitions is not None and replicas > partitions:
                log.warning("%s: %d replicas for %d partitions of %s: %d will stay idle (a partition has one "
                            "member at a time; useful replicas <= partitions)", spec.name, replicas, partitions,
                            ",".join(spec.topics), replicas - partitions)

    thread = threading.Thread(target=check, name="kpipe-replicas-check", daemon=True)
    thread.start()
    return thread


def count_partitions(spec, timeout: float) -> int | None:
    """Partitions of the spec's topics (None when a topic is missing), without joining the group."""
    from kpipe.ops.probe import probe_consumer
    from kpipe.runtime.consumer import topic_partitions

    consumer = probe_consumer(spec, group=False)
    try:
        parts, missing = topic_partitions(consumer.list_topics(timeout=timeout), spec.topics)
    finally:
        consumer.close()
    return None if missing else len(parts)

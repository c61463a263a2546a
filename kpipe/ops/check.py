"""``kpipe check SPEC``: the spec validates (done by the caller), then every dependency answers.

Checks, one line each (``ok: ...`` or ``FAILED: ...``) on stdout:
- kafka: the brokers answer a metadata request;
- topic T: exists, with its partition count (a topic error such as an authorization failure
  is reported as is);
- sink: the plugin creates and opens, and (for ``stores_offsets`` sinks) reads the stored
  offset of one partition; then it is closed;
- dlq: the dead-letter brokers answer and the dead-letter topic exists.

The exit code is the worst of the failures (2 > 3 > 1 > 0): 3 when a dependency stayed
unreachable after a short retry, 2 for anything else (a missing topic, access denied, a sink
that refuses its configuration). Each failure's reason is also printed on stderr, one line.
"""
from __future__ import annotations

import sys

from kpipe.api import FatalError, KpipeError
from kpipe.ops.probe import Quiet, kafka_call, open_sink, probe_consumer, short_backoff
from kpipe.ops.supervisor import worst
from kpipe.runtime.consumer import topic_partitions
from kpipe.runtime.retry import DependencyUnavailable, retry

__all__ = ["check"]


def _outcome(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, DependencyUnavailable):
        return 3, str(exc)
    if isinstance(exc, KpipeError):
        return 2, str(exc)
    return 2, f"{type(exc).__name__}: {exc}"


def check(spec, out=None, err=None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    codes: list[int] = []
    backoff = short_backoff(spec)
    quiet = Quiet("kpipe.check")

    def ok(what: str, detail: str) -> None:
        print(f"ok: {what}: {detail}", file=out, flush=True)

    def failed(what: str, exc: BaseException) -> None:
        code, reason = _outcome(exc)
        codes.append(code)
        print(f"FAILED: {what}: {reason}", file=out, flush=True)
        print(f"kpipe check: {spec.file}: {what}: {reason}", file=err, flush=True)

    ok("spec", f"{spec.file} ({spec.name}: {', '.join(spec.topics)} -> {spec.sink_type})")
    for key, value in spec.sink_defaults.items():  # so nobody wonders where a 5m max_age came from
        ok(f"default {key}", f"{value} (the {spec.sink_type} sink's default; the spec does not set it)")

    def metadata(brokers: str):
        consumer = probe_consumer(spec, brokers=brokers, group=False)
        try:
            what = f"cannot reach the brokers at {brokers}"
            return retry("connecting to Kafka", lambda: kafka_call(what, lambda: consumer.list_topics(timeout=5)),
                         backoff, quiet)
        finally:
            consumer.close()

    first_tp = None
    try:
        md = metadata(spec.brokers)
    except BaseException as exc:
        failed("kafka", exc)
    else:
        ok("kafka", f"{spec.brokers} ({len(md.brokers)} broker{'s' if len(md.brokers) != 1 else ''})")
        parts, missing = topic_partitions(md, spec.topics)
        for topic in spec.topics:
            if topic in missing:
                why = missing[topic]
                failed(f"topic {topic}", FatalError(f"{why} on {spec.brokers}" if why == "does not exist" else why))
                continue
            ours = [p for t, p in parts if t == topic]
            ok(f"topic {topic}", f"{len(ours)} partitions")
            if first_tp is None and ours:
                first_tp = (topic, ours[0])

    try:
        sink, plugin = open_sink(spec)
        try:
            detail = "opened"
            if plugin.capabilities.stores_offsets:
                tp = first_tp or (spec.topics[0], 0)
                stored = retry("loading offsets from the sink", lambda: sink.load_offsets([tp]), backoff, quiet)
                where = f"{tp[0]}[{tp[1]}]"
                detail += f"; stored offset of {where}: {stored[tp]}" if tp in stored \
                    else f"; no stored offset for {where} yet"
        finally:
            sink.close()
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        failed(f"sink {spec.sink_type}", exc)
    else:
        ok(f"sink {spec.sink_type}", detail)

    if spec.dlq is not None:
        brokers, topic = spec.dlq["brokers"], spec.dlq["topic"]
        try:
            md = metadata(brokers)
            t = md.topics.get(topic)
            if t is None:
                raise FatalError(f"dead-letter topic {topic!r} does not exist on {brokers}")
            if t.error is not None:
                raise FatalError(f"dead-letter topic {topic!r}: {t.error.str()}")
        except BaseException as exc:
            failed("dlq", exc)
        else:
            ok("dlq", f"{topic} on {brokers}")
    return worst(codes)

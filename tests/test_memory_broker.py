"""Peak memory against a real broker: a slow sink does not let the runner's memory grow with the
backlog. The pipeline runs in a child process, whose peak RSS (VmHWM) is compared with its RSS
once everything is imported: the growth is what the run held.

The values are 100 KB JSON objects holding a list of small objects: decoded, each costs about
ten times its bytes, so a runner that decoded the backlog (as it did: 10,000 messages a consume
call) would grow by several hundred MiB. The backlog is kept at 50 MB because against the
bundled broker (Tansu 0.6) even a bare consumer taking four messages a call grows with the
backlog (133 MiB at 100 MB, 325 MiB at 300 MB; see benchmarks/README.md, Memory).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from confluent_kafka import Producer

from kit import unique

CHILD = textwrap.dedent("""
    import json, sys, time
    from kpipe.api import Capabilities, Sink, SinkPlugin
    from kpipe.runtime import Runner
    from kpipe.spec import load_spec

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    class SlowSink(Sink):
        written = {}
        def write(self, batches):
            time.sleep(0.1)  # a sink far slower than the consumer
            for b in batches:
                tp = (b.topic, b.partition)
                assert b.start_offset == SlowSink.written.get(tp, 0), (tp, b.start_offset)
                SlowSink.written[tp] = b.next_offset

    spec = load_spec(sys.argv[1], env={})
    runner = Runner(spec, until_caught_up=True)
    runner.sink_plugin = SinkPlugin("slow", {"type": "object"}, SlowSink, Capabilities())
    start = rss("VmRSS:")
    result = runner.run()
    print(json.dumps({"exit": result.exit_code, "reason": result.reason, "written": result.written,
                      "ends": {str(p): o for (t, p), o in SlowSink.written.items()},
                      "growth": rss("VmHWM:") - start}))
""")


def big_value(i: int, size: int = 100_000) -> bytes:
    items, n = [], 40
    while n < size:
        items.append({"sku": f"s{i:06d}-{len(items)}", "qty": len(items) % 9 + 1, "price": 12.5})
        n += 50
    return json.dumps({"id": i, "items": items}, separators=(",", ":")).encode()


def test_a_slow_sink_keeps_memory_flat_whatever_the_backlog(brokers, topic, tmp_path):
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 50})
    n = 500  # 4 partitions, 50 MB
    for i in range(n):
        p.produce(topic, big_value(i), partition=i % 4)
        p.poll(0)
    assert p.flush(60) == 0
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({
        "name": unique("memory"),
        "source": {"brokers": brokers, "topic": topic, "options": {"session.timeout.ms": 6000}},
        "sink": {"type": "files", "path": str(tmp_path / "unused")},  # replaced by the slow sink
        "batch": {"max_records": 10000, "max_bytes": "16MiB", "max_age": "60s", "max_buffered_bytes": "32MiB"},
    }))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(spec)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["exit"] == 0, out["reason"]
    assert out["written"] == n and sum(out["ends"].values()) == n  # every record, once, in order
    # The decoded backlog is ~500 MiB; what the run may hold is 32 MiB of records, librdkafka's
    # prefetch, and the raw bytes of a consume call (Tansu hands over the whole backlog).
    assert out["growth"] < 250 << 20, f"peak RSS grew by {out['growth'] >> 20} MiB"

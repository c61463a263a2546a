#!/usr/bin/env python
"""Writes in flight: the same pipelines with the sink's ``Capabilities.max_in_flight`` at 1 and
at higher values, side by side with the raw consumer, on one topic in one run.

Reuses bench.py's measurement (clocks from the first consumed chunk to the end of the loop, CPU
of this process, the S3 server's CPU when this script started moto). Each pipeline runs in this
process with the plugin's declared ``max_in_flight`` replaced for the run, so nothing else
differs. The runs of the different settings are interleaved (``--repeat``) and the median kept.

    .venv/bin/python benchmarks/in_flight.py                                    # s3-jsonl-gzip, 1 vs 4
    .venv/bin/python benchmarks/in_flight.py --variants json,s3-jsonl --in-flight 1,2,4 --messages 500000
    .venv/bin/python benchmarks/in_flight.py --s3-latency-ms 20                 # S3's latency, modelled
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402

from kpipe.plugins import registry  # noqa: E402


def with_in_flight(sink_type: str, n: int) -> None:
    """Make the installed ``sink_type`` plugin declare ``max_in_flight = n`` (this process only)."""
    plugin = registry().plugins["sink"][sink_type]
    object.__setattr__(plugin, "capabilities", dataclasses.replace(plugin.capabilities, max_in_flight=n))


def with_s3_latency(ms: float) -> None:
    """Add ``ms`` to every S3 request the sink makes (this process only): moto on loopback
    answers in about a millisecond, AWS S3 in 20-50 ms, and latency is what writes in flight
    are for."""
    import time

    from kpipe.sinks.s3.store import Store

    for name in ("call", "get", "etag"):
        real = getattr(Store, name)

        def slow(self, *args, _real=real, **kwargs):
            time.sleep(ms / 1000)
            return _real(self, *args, **kwargs)

        setattr(Store, name, slow)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="s3-jsonl-gzip", help="bench.py pipeline variants (comma-separated)")
    ap.add_argument("--in-flight", default="1,4", help="max_in_flight values to compare (comma-separated)")
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--max-records", type=int, default=5000, help="batch.max_records (default 5000)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--s3-latency-ms", type=float, default=0.0,
                    help="added to every S3 request of the sink, to model a real endpoint (default 0)")
    args = ap.parse_args(argv)
    if args.s3_latency_ms:
        with_s3_latency(args.s3_latency_ms)
    bench.BATCH.update(max_records=args.max_records)
    kinds = [k.strip() for k in args.variants.split(",") if k.strip()]
    levels = [int(x) for x in args.in_flight.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="kpipe-in-flight-"))
    from kpipe.broker import EmbeddedBroker
    moto = None
    with EmbeddedBroker() as broker:
        s3 = {"endpoint": None, "pid": None, "options": {}}
        if any(bench.variant(k)[0] == "s3" for k in kinds):
            from kpipe.sinks.s3.testing import MotoServer
            moto = MotoServer().start()
            s3.update(endpoint=moto.url, pid=moto.proc.pid)
        try:
            topic = f"inflight-{uuid.uuid4().hex[:8]}"
            bench.create_topic(broker.bootstrap, topic, args.partitions)
            bench.produce_all(broker.bootstrap, topic, args.messages, args.partitions, "none")
            cpu = bench.BrokerCPU(broker.proc.pid)
            runs: dict = {"raw": []}
            for _ in range(args.repeat):
                runs["raw"].append(bench.bench_raw(broker.bootstrap, topic, args.messages, cpu, {}))
                for kind in kinds:
                    for n in levels:
                        with_in_flight(bench.variant(kind)[0], n)
                        row = bench.bench_pipeline(broker.bootstrap, topic, args.messages, kind, tmp, cpu, {},
                                                   partitions=args.partitions, s3=s3)
                        row["what"] += f", max_in_flight {n}"
                        row["key"] = f"{kind}@{n}"
                        runs.setdefault(row["key"], []).append(row)
                        bench.say(f"{row['key']}: {row['msg_per_s']:,} msg/s, {row['cpu_us_per_msg']} CPU µs/msg")
            rows = [bench.median_row(r) for r in runs.values()]
            print(bench.table(rows))
        finally:
            if moto is not None:
                moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

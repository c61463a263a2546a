#!/usr/bin/env python
"""The CPU budget behind issue 16's "≤ 2.0 × raw consume's CPU per message" targets: what each
step a pipeline cannot skip costs per record, measured in-process, against the budget a ratio
leaves.

A ratio of 2.0 × a raw consume that costs R µs a message leaves kpipe R µs on top of the consume
itself, for everything: decoding, the sink's encoding, the runtime's bookkeeping, the write. This
script times each step alone on bench.py's ~100 B orders (batches of ``--records``, the garbage
collector set as the runner sets it, best of ``--rounds`` interleaved rounds; a step's time
includes freeing what it made) and adds them up per path, next to that budget. The steps' sum
is a floor: the runner's loop, the transaction and the thread handoff come on top.

The steps reuse one batch, decoded once into a fresh heap. The last table runs PostgreSQL's
steps as a pipeline meets them: each batch decoded anew into a heap that earlier batches were
freed into, its COPY text made on the same thread, and on a second thread it is handed to as
the runner hands it to the sink writer.

For each path two sums are shown: kpipe's own steps as they are, and a lower bound, the same
work done by the fastest C-level route available to Python here (msgspec's typed decode into
Structs instead of dicts; COPY text from msgspec's encoder instead of per-column Python work).

R is measured in the same run, between the rounds of the steps, since this machine's speed
drifts by as much as 1.5 × over minutes: bench.py's raw consume (``bench_raw``: kpipe's
librdkafka defaults, every value touched, CPU from the first message on) of ``--messages``
from the bundled broker. ``--raw-us`` gives R instead.

    .venv/bin/python benchmarks/floor.py                    # starts the bundled broker for R
    .venv/bin/python benchmarks/floor.py --raw-us 0.64      # R from elsewhere (bench.py's raw row)
"""
from __future__ import annotations

import argparse
import gc
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import msgspec
from confluent_kafka import Message

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench  # noqa: E402  (the records)
from kpipe.api import Batch  # noqa: E402
from kpipe.deserializers.basic import JsonDeserializer  # noqa: E402
from kpipe.deserializers.json_check import check_json  # noqa: E402
from kpipe.formats.compression import deflater  # noqa: E402
from kpipe.formats.jsonl import encode_jsonl, encode_verbatim  # noqa: E402
from kpipe.runtime.runner import _runs  # noqa: E402
from kpipe.sinks.sql import rows  # noqa: E402
from kpipe.sinks.sql.columns import Column  # noqa: E402

# The sink's columns for the orders, as `columns: auto` infers them.
COLUMNS = [Column("order_id", "bigint", ("order_id",)), Column("customer", "text", ("customer",)),
           Column("country", "text", ("country",)), Column("amount", "double", ("amount",)),
           Column("created_at", "timestamptz", ("created_at",))]
_BIGINT = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
# The same columns as a Struct: msgspec checks each field's type and range while decoding, in C.
Order = msgspec.defstruct("Order", [("order_id", Optional[_BIGINT], None), ("customer", Optional[str], None),
                                    ("country", Optional[str], None), ("amount", Optional[float], None),
                                    ("created_at", Optional[str], None)], forbid_unknown_fields=True)


def steps(n: int) -> dict:
    """name -> a callable doing that step once over a batch of ``n`` records."""
    raw = [bench.make_value(i) for i in range(n)]
    msgs = [Message(topic="orders", partition=4 * i // n, offset=i, value=v) for i, v in enumerate(raw)]
    dec = JsonDeserializer({})
    decoded = dec.deserialize(raw)
    batch = Batch("orders", 0, 0, n, decoded, msgs)
    jsonl = encode_jsonl(decoded)
    typed = msgspec.json.Decoder(Order).decode
    structs = [typed(v) for v in raw]
    astuple, encode = msgspec.structs.astuple, msgspec.json.Encoder().encode

    def runtime_passes():  # what the loop does per message before the stages (runner._ingest_slice)
        by_tp = _runs(msgs)
        for lst in by_tp.values():
            values = list(map(Message.value, lst))
            sum(map(len, values))

    def copy_text():  # the sink's COPY text, joined and encoded as it is sent
        for piece in rows.copy_chunks(batch, COLUMNS):
            piece.encode()

    def copy_text_c():  # the C-level route: Structs -> JSON arrays -> CSV lines (no escapes here)
        data = encode(list(map(astuple, structs)))
        return data[2:-2].replace(b"],[", b"\n") if b"\\" not in data else None

    def gzip():
        z = deflater(1)
        z.compress(jsonl)
        z.flush()

    return {
        "runtime: split by partition, values, sizes (per message, C-level passes)": runtime_passes,
        "decode: json deserializer (msgspec, dicts)": lambda: dec.deserialize(raw),
        "decode, lower bound: msgspec typed Structs": lambda: [typed(v) for v in raw],
        "postgres: COPY text (rows.copy_chunks, joined, encoded)": copy_text,
        "postgres, lower bound: COPY text in C (Structs -> msgspec encode -> CSV)": copy_text_c,
        "files: jsonl encode (encode_jsonl)": lambda: encode_jsonl(decoded),
        "files: gzip level 1 (deflater: ISA-L when installed)": gzip,
        "verbatim / parse: server: check_json": lambda: check_json(raw),
        "verbatim: encode_verbatim": lambda: encode_verbatim(raw),
    }


PATHS = {  # path -> (kpipe's steps, the lower bound's steps)
    "postgres insert (json)": (
        ["runtime", "decode: json", "postgres: COPY"],
        ["runtime", "decode, lower", "postgres, lower"]),
    "files jsonl gzip (json)": (
        ["runtime", "decode: json", "files: jsonl", "files: gzip"],
        ["runtime", "decode, lower", "files: gzip"]),
    "files jsonl gzip, verbatim": (
        ["runtime", "verbatim / parse", "verbatim: encode", "files: gzip"],
        ["runtime", "verbatim / parse", "files: gzip"]),
}


def _step(found: dict, prefix: str) -> tuple:
    (hit,) = [v for name, v in found.items() if name.startswith(prefix)]  # exactly one step
    return hit


def measure(cases: dict, n: int, rounds: int, between=None) -> dict:
    """name -> (best, median) µs per record over ``rounds`` interleaved rounds; ``between()``
    is called before every tenth round (the raw consume)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)  # as the runner sets it
    times: dict = {name: [] for name in cases}
    for i in range(rounds):
        if between is not None and i % 10 == 0:
            between()
        for name, fn in cases.items():
            t0 = time.process_time_ns()
            fn()
            times[name].append((time.process_time_ns() - t0) / n / 1000)
    return {name: (min(ts), statistics.median(ts)) for name, ts in times.items()}


class RawBaseline:
    """The bundled broker with ``n`` of bench.py's orders in 4 partitions, consumed raw on demand."""

    def __init__(self, n: int):
        from kpipe.broker import EmbeddedBroker
        from kpipe.kafka_admin import create_topic

        self.n, self.partitions = n, 4
        self.broker = EmbeddedBroker().start()
        self.topic = "floor"
        create_topic(self.broker.bootstrap, self.topic, self.partitions)
        bench.produce_all(self.broker.bootstrap, self.topic, n, self.partitions, "none")
        self.runs: list = []

    def __call__(self) -> None:
        row = bench.bench_raw(self.broker.bootstrap, self.topic, self.n, bench.BrokerCPU(None), {})
        self.runs.append(row["cpu_us_per_msg"])

    def close(self) -> None:
        self.broker.stop()


def fresh_records(n: int, batches: int = 50) -> dict:
    """The PostgreSQL steps on fresh records, as in a pipeline: every batch decoded anew into a
    heap that earlier batches have been freed into, its COPY text made on the same thread and,
    again, on a second thread it is handed to (the sink writer's place). CPU µs per record
    (``thread_time``)."""
    raws = [[bench.make_value(b * n + i) for i in range(n)] for b in range(4)]
    dec = JsonDeserializer({})
    spent = {"decode": 0.0, "COPY text, same thread": 0.0, "COPY text, handed to a second thread": 0.0}

    def fresh(i):
        t = time.thread_time()
        b = Batch("orders", 0, 0, n, dec.deserialize(raws[i % 4]), [None] * n)
        spent["decode"] += time.thread_time() - t
        return b

    def copy_text(b, key):
        t = time.thread_time()
        for piece in rows.copy_chunks(b, COLUMNS):
            piece.encode()
        spent[key] += time.thread_time() - t

    for i in range(batches):
        copy_text(fresh(i), "COPY text, same thread")
    q: queue.Queue = queue.Queue(maxsize=2)

    def writer():
        while (b := q.get()) is not None:
            copy_text(b, "COPY text, handed to a second thread")

    th = threading.Thread(target=writer)
    th.start()
    for i in range(batches):
        q.put(fresh(i))
    q.put(None)
    th.join()
    spent["decode"] /= 2  # both halves decoded
    return {k: v / (batches * n) * 1e6 for k, v in spent.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw-us", type=float,
                    help="raw consume's CPU µs per message, from elsewhere (default: measured here)")
    ap.add_argument("--messages", type=int, default=300_000, help="for the raw consume (default 300,000)")
    ap.add_argument("--ratio", type=float, default=2.0, help="the target, as a multiple of raw (default 2.0)")
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args(argv)
    raw = None if args.raw_us else RawBaseline(args.messages)
    try:
        found = measure(steps(args.records), args.records, args.rounds, raw)
        if raw is not None:
            raw()
    finally:
        if raw is not None:
            raw.close()
    if raw is not None:
        args.raw_us = statistics.median(raw.runs)
        print(f"raw consume, measured between the rounds: {args.raw_us:.3f} µs/msg (median of "
              f"{len(raw.runs)}: {', '.join(f'{r:.3f}' for r in raw.runs)})\n")
    print("| step | µs/record, best | median |\n|---|---:|---:|")
    for name, (best, med) in found.items():
        print(f"| {name} | {best:.3f} | {med:.3f} |")
    budget = args.raw_us * (args.ratio - 1)
    print(f"\nbudget on top of raw consume: {args.raw_us:.2f} × ({args.ratio:g} − 1) = {budget:.2f} µs/msg "
          f"(steps below: best rounds)\n")
    print("| path | kpipe's steps | lower bound | budget | kpipe's steps alone, × raw |\n|---|---:|---:|---:|---:|")
    for path, (ours, floor) in PATHS.items():
        total = [sum(_step(found, prefix)[0] for prefix in names) for names in (ours, floor)]
        print(f"| {path} | {total[0]:.2f} | {total[1]:.2f} | {budget:.2f} | "
              f"{(args.raw_us + total[0]) / args.raw_us:.2f} |")
    runs = [fresh_records(args.records) for _ in range(3)]
    print("\npostgres steps on fresh records (µs/record, mean of 50 batches, 3 runs), beside the "
          "steps above (median round):\n")
    print("| step | fresh records, 3 runs | one batch reused (above) |\n|---|---:|---:|")
    for key, step in (("decode", "decode: json"), ("COPY text, same thread", "postgres: COPY"),
                      ("COPY text, handed to a second thread", "postgres: COPY")):
        print(f"| {key} | {', '.join(f'{r[key]:.3f}' for r in runs)} | {_step(found, step)[1]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak RSS that one PostgreSQL sink write of 100 KB values adds (issue 16: COPY streamed in pieces).

    .venv/bin/python benchmarks/sql_copy_rss.py [RECORDS [PARTITIONS [items|text]]]   # 640 4 items

The records are built and decoded first; the figure is the peak RSS (VmHWM) after the write minus
before it, in a fresh interpreter. ``items``: a json column of 2,500 small objects per record (~100 KB of
JSON text); ``text``: one ~100 KB string per record. Run it with PYTHONPATH=<a worktree> for
another commit's kpipe.
"""
import gc
import sys
import uuid

from kpipe.api import Batch, SinkContext
from kpipe.sinks.sql.sink import SqlSink
from sql_partitions import drop

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def value(i: int, shape: str) -> dict:
    if shape == "text":
        return {"order_id": i, "customer": "c%03d" % (i % 200), "note": ("%08d " % i) * 11000}
    return {"order_id": i, "customer": "c%03d" % (i % 200),
            "items": [{"sku": "s%06d" % (i + k), "qty": k % 9 + 1, "price": k % 300 + 0.25} for k in range(2500)]}


def peak_mib() -> float:
    """VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across exec."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def main() -> None:
    n, parts = int(sys.argv[1]) if len(sys.argv) > 1 else 640, int(sys.argv[2]) if len(sys.argv) > 2 else 4
    shape = sys.argv[3] if len(sys.argv) > 3 else "items"
    table, group = f"kpipe_bench_rss_{uuid.uuid4().hex[:8]}", f"bench-rss-{uuid.uuid4().hex[:8]}"
    sink = SqlSink({"url": URL, "table": table, "mode": "insert"}, SinkContext(pipeline="rss", group=group))
    sink.open()
    try:
        sink.write([Batch("t", p, 0, 1, [value(p, shape)], []) for p in range(parts)])  # the table
        per = n // parts
        batches = [Batch("t", p, 1, 1 + per, [value(p * per + k, shape) for k in range(per)], [])
                   for p in range(parts)]
        gc.collect()
        before = peak_mib()
        sink.write(batches)
        print(f"{n} records ({shape}) over {parts} partitions: peak {before:.0f} MiB before the write, "
              f"{peak_mib():.0f} MiB after: +{peak_mib() - before:.0f} MiB")
    finally:
        sink.close()
        drop(URL, table, group)


if __name__ == "__main__":
    main()

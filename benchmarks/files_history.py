#!/usr/bin/env python
"""The files sink's cost per write against the number of files already in the partition directory.

For each history size (100, 10k, 100k files by default) a partition directory is filled with
that many published files (empty, correctly named: the head is found from names, never from
contents), then one sink instance is assigned the partition (``load_offsets``) and writes
``--writes`` batches of ``--records`` records one after the other. Reported per history size:
the assignment, the first write, and the median and p90 of the other writes, in ms.

``--baseline REV`` (default: the commit before the head hint) measures the files sink of that
git revision the same way, in the same run, on a copy of the same directory.

    .venv/bin/python benchmarks/files_history.py
    .venv/bin/python benchmarks/files_history.py --sizes 100,1000,10000 --writes 50 --fsync
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kpipe.api import Batch, SinkContext  # noqa: E402
from kpipe.sinks.files.sink import FilesSink, file_name  # noqa: E402

BASELINE = "bb484aa"  # the files sink before the head hint: it listed the directory on every write
CTX = SinkContext(pipeline="bench", group="bench")


def baseline_sink(rev: str):
    """The FilesSink class of git revision ``rev``, loaded beside the current one."""
    source = subprocess.run(["git", "show", f"{rev}:kpipe/sinks/files/sink.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="kpipe-files-baseline-")) / "sink_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("kpipe.sinks.files.sink_baseline", path,
                                                  submodule_search_locations=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "kpipe.sinks.files"
    spec.loader.exec_module(module)
    return module.FilesSink


def fill(d: Path, n: int, per_file: int) -> int:
    """``n`` published files of ``per_file`` offsets each; returns the next offset."""
    d.mkdir(parents=True)
    for i in range(n):
        (d / file_name("orders", 0, i * per_file, (i + 1) * per_file - 1, ".jsonl")).touch()
    return n * per_file


def measure(cls, root: Path, head: int, writes: int, records: int, fsync: bool) -> dict:
    sink = cls({"path": str(root), "format": "jsonl", "fsync": fsync}, CTX)
    sink.open()
    t = time.perf_counter()
    found = sink.load_offsets([("orders", 0)])
    assign = time.perf_counter() - t
    assert found == {("orders", 0): head}, found
    times = []
    for k in range(writes):
        start = head + k * records
        b = Batch("orders", 0, start, start + records, [{"id": start + i, "v": "x" * 80} for i in range(records)], [])
        t = time.perf_counter()
        sink.write([b])
        times.append(time.perf_counter() - t)
    sink.close()
    rest = sorted(times[1:])
    return {"assign_ms": assign * 1e3, "first_ms": times[0] * 1e3, "median_ms": statistics.median(rest) * 1e3,
            "p90_ms": rest[int(len(rest) * 0.9)] * 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,10000,100000", help="files already in the directory (comma-separated)")
    ap.add_argument("--writes", type=int, default=30, help="writes per measurement (default 30)")
    ap.add_argument("--records", type=int, default=100, help="records per write (default 100)")
    ap.add_argument("--fsync", action="store_true", help="fsync each file (default off: the listing is measured)")
    ap.add_argument("--baseline", default=BASELINE, help=f"git revision to compare with (default {BASELINE}); "
                                                          "'' for none")
    ap.add_argument("--tmp", help="directory for the partition directories (default: a new temp dir)")
    args = ap.parse_args(argv)
    variants = [("current", FilesSink)] + ([(f"baseline {args.baseline}", baseline_sink(args.baseline))]
                                           if args.baseline else [])
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="kpipe-files-history-"))
    rows = []
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            seed = tmp / f"seed-{n}" / "orders" / "0"
            head = fill(seed, n, args.records)
            for label, cls in variants:
                root = tmp / f"{label.split()[0]}-{n}"
                shutil.copytree(seed.parent.parent, root)
                r = measure(cls, root, head, args.writes, args.records, args.fsync)
                rows.append((n, label, r))
                print(f"{n:>7} files  {label:<18} assign {r['assign_ms']:8.2f} ms  first write {r['first_ms']:8.2f} ms"
                      f"  then median {r['median_ms']:7.3f} ms  p90 {r['p90_ms']:7.3f} ms", flush=True)
                shutil.rmtree(root)
            shutil.rmtree(seed.parent.parent)
    finally:
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"| files in the directory | sink | assignment (ms) | first write (ms) | later writes, median (ms) | p90 (ms) |")
    print("|---:|---|---:|---:|---:|---:|")
    for n, label, r in rows:
        print(f"| {n:,} | {label} | {r['assign_ms']:.2f} | {r['first_ms']:.2f} | {r['median_ms']:.3f} | "
              f"{r['p90_ms']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The files and S3 sinks with several writes in flight (``Capabilities.max_in_flight``; the
files sink declares 1, but it must be safe with more, which a plugin wrapping it may declare), under
the real runner driven by a fake consumer: writes of different partitions overlap, each of them
widens the one dataset schema with a column of its own, and everything lands exactly once, read
back with pyarrow and boto3.

Overlap is made certain, not hoped for: the first write waits until another has started."""
from __future__ import annotations

import io
import json
import threading

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from kpipe.plugins import registry
from kpipe.sinks.files.sink import FilesSink
from kpipe.sinks.s3.sink import S3Sink
from s3kit import bucket, moto_server, objects, s3  # noqa: F401
from test_partial_durability import _ctx, run_with

PARTS = 4
N = 6


def test_the_s3_sink_declares_writes_in_flight():
    """S3 uploads wait on latency; the files sink stays at 1, measured slower with more (its
    writes encode under the GIL beside the consumer thread: benchmarks/README.md)."""
    sinks = registry().plugins["sink"]
    assert sinks["s3"].capabilities.max_in_flight > 1
    assert sinks["files"].capabilities.max_in_flight == 1


def produced():
    from kpipe.runtime.fakes import FakeCluster

    c = FakeCluster({"t": PARTS})
    for p in range(PARTS):  # each partition brings a column of its own: every write widens the schema
        c.produce("t", p, [json.dumps({"id": p * 100 + i, f"c{p}": i * 1.5 if i % 2 else i}).encode()
                           for i in range(N)])
    c.chunk = N  # one partition's batch per consume: the next is cut while the first is written
    return c


def overlapping(base):
    """``base`` whose first write waits for a second one to start (at most 10 s), recording how
    many writes ran at once and refusing two at once for one partition."""
    state = {"active": set(), "peak": 0, "second": threading.Event(), "first": True}
    lock = threading.Lock()

    class Overlapping(base):
        def write(self, batches):
            parts = {(b.topic, b.partition) for b in batches}
            with lock:
                assert not parts & state["active"], f"two writes at once for {parts & state['active']}"
                first, state["first"] = state["first"], False
                state["active"] |= parts
                state["peak"] = max(state["peak"], len(state["active"]))
                if len(state["active"]) > len(parts):
                    state["second"].set()
            try:
                if first:
                    state["second"].wait(10)
                return super().write(batches)
            finally:
                with lock:
                    state["active"] -= parts

    return Overlapping, state


def expected() -> list:
    return sorted(p * 100 + i for p in range(PARTS) for i in range(N))


def check_table(table) -> None:
    rows = table.to_pylist()
    assert sorted(r["id"] for r in rows) == expected()
    assert set(table.column_names) == {"id"} | {f"c{p}" for p in range(PARTS)}
    for r in rows:
        p, i = divmod(r["id"], 100)
        assert r[f"c{p}"] == (i * 1.5 if i % 2 else i)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_files_writes_in_flight_widen_one_schema_and_land_once(tmp_path, fmt):
    cls, state = overlapping(FilesSink)
    out = tmp_path / "out"
    result = run_with(cls, "files", {"path": str(out), "format": fmt}, produced(), max_records=N, in_flight=2)
    assert result.exit_code == 0, result.reason
    assert state["peak"] > 1, "the writes never overlapped"
    files = sorted(out.glob(f"t/*/*.{fmt}"))
    assert len(files) == PARTS
    if fmt == "parquet":
        check_table(ds.dataset(str(out), format="parquet").to_table())
    else:
        import csv
        rows = [r for f in files for r in csv.DictReader(f.open(newline=""))]
        assert sorted(int(r["id"]) for r in rows) == expected()
    doc = json.loads((out / ".kpipe" / "schema.json").read_text())
    assert set(doc["columns"]) == {"id"} | {f"c{p}" for p in range(PARTS)}


def test_s3_writes_in_flight_widen_one_schema_and_land_once(moto_server, s3, bucket):
    cls, state = overlapping(S3Sink)
    config = {"bucket": bucket, "endpoint_url": moto_server.url, "region": "us-east-1", "format": "parquet"}
    result = run_with(cls, "s3", config, produced(), max_records=N)
    assert result.exit_code == 0, result.reason
    assert state["peak"] > 1, "the writes never overlapped"
    got = objects(s3, bucket)
    assert len(got) == PARTS
    schema = pq.read_schema(io.BytesIO(s3.get_object(Bucket=bucket, Key="_common_metadata")["Body"].read()))
    import pyarrow as pa
    check_table(pa.concat_tables([pq.read_table(io.BytesIO(v), schema=schema) for v in got.values()]))


def widen_from_threads(schemas, n: int = 8) -> None:
    """``n`` threads of one sink widen its dataset schema at once, each with a column of its own."""
    barrier = threading.Barrier(n)
    errors: list = []

    def widen(i):
        try:
            barrier.wait(10)
            for k in range(3):  # several rounds: each thread's stale copy meets the others' widenings
                schemas.schema_for([{f"t{i}_{k}": i * 1.5}])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=widen, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_files_threads_of_one_sink_lose_no_widening(tmp_path):
    s = FilesSink({"path": str(tmp_path), "format": "parquet"}, _ctx())
    s.open()
    widen_from_threads(s.schemas)
    doc = json.loads((tmp_path / ".kpipe" / "schema.json").read_text())
    assert set(doc["columns"]) == {f"t{i}_{k}" for i in range(8) for k in range(3)}
    assert set(pq.read_schema(tmp_path / "_common_metadata").names) == set(doc["columns"])


def test_s3_threads_of_one_sink_lose_no_widening(moto_server, s3, bucket):
    s = S3Sink({"bucket": bucket, "endpoint_url": moto_server.url, "region": "us-east-1", "format": "parquet"},
               _ctx())
    s.open()
    widen_from_threads(s._schemas("t"))
    doc = json.loads(s3.get_object(Bucket=bucket, Key="_kpipe/schema.json")["Body"].read())
    assert set(doc["columns"]) == {f"t{i}_{k}" for i in range(8) for k in range(3)}
    schema = pq.read_schema(io.BytesIO(s3.get_object(Bucket=bucket, Key="_common_metadata")["Body"].read()))
    assert set(schema.names) == set(doc["columns"])

"""The S3 sink against a real S3 server (moto's, over HTTP): formats read back with their standard
readers, per-record paths, Kafka Connect's names, fencing of zombies, multipart uploads, clean-up
after crashes, and errors. The crash tests through the CLI and Kafka are in test_s3_crash.py."""
from __future__ import annotations

import datetime as dt
import logging
import random
import string

import pytest
from botocore.exceptions import ClientError

from kpipe.api import FatalError, OffsetConflict, RetryableError, SinkContext
from kpipe.sinks.s3.sink import S3Sink
from kpipe.sinks.s3.store import Store
from kpipe.sinks.s3.upload import ObjectUpload
from kpipe.sinks.s3.testing import CREDENTIALS
from s3kit import bucket, free_port, make_batch, moto_server, objects, read_records, s3, state_of, uploads  # noqa: F401

CTX = SinkContext(pipeline="p", group="g", log=logging.getLogger("test.s3"))
DAY = 86_400_000
T0 = int(dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc).timestamp() * 1000)


def sink(moto_server, bucket, **config) -> S3Sink:
    s = S3Sink({"bucket": bucket, "endpoint_url": moto_server.url, "region": "us-east-1", **config}, CTX)
    s.open()
    return s


def orders(n: int, start: int = 0) -> list[dict]:
    return [{"order_id": start + i, "country": ("DE", "FR", "NL")[(start + i) % 3], "amount": (start + i) * 1.25,
             "items": [{"sku": f"s{(start + i) % 7}", "qty": 1 + i % 3}], "note": None if i % 5 else "gift"}
            for i in range(n)]


# -- formats, read back ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt,compression", [("jsonl", "none"), ("jsonl", "gzip"), ("jsonl", "zstd"), ("csv", "gzip"),
                                             ("avro", "gzip"), ("avro", "zstd"), ("parquet", "snappy"),
                                             ("parquet", "zstd")])
def test_each_format_reads_back_with_its_standard_reader(moto_server, s3, bucket, fmt, compression):
    values = orders(500)
    s = sink(moto_server, bucket, prefix="lake", format=fmt, compression=compression)
    s.write([make_batch(values[:300], 0), make_batch(values[300:], 300)])
    got = objects(s3, bucket, "lake/")
    assert len(got) == 2, list(got)
    records = [r for key in sorted(got) for r in read_records(key, got[key])]
    if fmt == "csv":  # text cells; nested values as JSON text, null as empty
        values = [{k: "" if v is None else str(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                   else v if isinstance(v, str) else __import__("orjson").dumps(v).decode() for k, v in r.items()}
                  for r in values]
    assert records == values
    assert state_of(s3, bucket, "lake", "orders", 0) == {"next_offset": 500, "pending": None}


# -- paths -----------------------------------------------------------------------------------


def test_paths_are_evaluated_per_record(moto_server, s3, bucket):
    values = [{"id": i, "country": ["DE", "FR", None, "a/b"][i % 4]} for i in range(40)]
    stamps = [T0 + (i // 20) * DAY for i in range(40)]  # one batch, two days
    s = sink(moto_server, bucket, prefix="raw/orders", format="jsonl", compression="gzip",
             path="{topic}/dt={timestamp:%Y-%m-%d}/country={value.country}")
    s.write([make_batch(values, 1000, partition=2, timestamps=stamps)])
    got = objects(s3, bucket)
    by_dir = {}
    for key, data in got.items():
        d, name = key.rsplit("/", 1)
        records = read_records(key, data)
        ids = [r["id"] for r in records]
        by_dir[d] = ids
        first, last = map(int, name.split(".")[0].split("+")[2:])
        assert (first, last) == (1000 + ids[0], 1000 + ids[-1]), key  # named by their own records' offsets
        assert all(r["country"] == records[0]["country"] for r in records)
    assert by_dir == {
        "raw/orders/orders/dt=2026-11-26/country=DE": [0, 4, 8, 12, 16],
        "raw/orders/orders/dt=2026-11-26/country=FR": [1, 5, 9, 13, 17],
        "raw/orders/orders/dt=2026-11-26/country=__HIVE_DEFAULT_PARTITION__": [2, 6, 10, 14, 18],
        "raw/orders/orders/dt=2026-11-26/country=a%2Fb": [3, 7, 11, 15, 19],
        "raw/orders/orders/dt=2026-11-27/country=DE": [20, 24, 28, 32, 36],
        "raw/orders/orders/dt=2026-11-27/country=FR": [21, 25, 29, 33, 37],
        "raw/orders/orders/dt=2026-11-27/country=__HIVE_DEFAULT_PARTITION__": [22, 26, 30, 34, 38],
        "raw/orders/orders/dt=2026-11-27/country=a%2Fb": [23, 27, 31, 35, 39],
    }


def test_kafka_connect_layout_names_objects_as_confluent_does(moto_server, s3, bucket):
    s = sink(moto_server, bucket, layout="kafka-connect", format="jsonl", compression="gzip")
    s.write([make_batch(orders(10), 0, partition=3), make_batch(orders(5), 10, partition=3)])
    assert sorted(objects(s3, bucket)) == ["topics/orders/partition=3/orders+3+0000000000.json.gz",
                                           "topics/orders/partition=3/orders+3+0000000010.json.gz"]
    # with a template: it replaces the encoded partition (FieldPartitioner, TimeBasedPartitioner)
    s = sink(moto_server, bucket, layout="kafka-connect", prefix="backup", topics_dir="kc", format="parquet",
             path="year={timestamp:%Y}/month={timestamp:%m}/country={value.country}")
    s.write([make_batch(orders(3), 42, partition=0, timestamps=[T0] * 3)])
    assert sorted(k for k in objects(s3, bucket) if k.startswith("backup/")) == [
        "backup/kc/orders/year=2026/month=11/country=DE/orders+0+0000000042.snappy.parquet",
        "backup/kc/orders/year=2026/month=11/country=FR/orders+0+0000000043.snappy.parquet",
        "backup/kc/orders/year=2026/month=11/country=NL/orders+0+0000000044.snappy.parquet"]
    assert sink(moto_server, bucket, layout="kafka-connect", format="avro").layout.key(
        "orders", 1, "partition=1", 7, 9) == "topics/orders/partition=1/orders+1+0000000007.avro"


# -- exactly once ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,compression", [("jsonl", "gzip"), ("csv", "zstd"), ("avro", "gzip"),
                                             ("parquet", "snappy")])
def test_replaying_the_same_offsets_writes_identical_objects(moto_server, s3, bucket, fmt, compression):
    values = orders(900)
    for prefix in ("first", "second"):
        s = sink(moto_server, bucket, prefix=prefix, format=fmt, compression=compression,
                 path="{topic}/country={value.country}")
        s.write([make_batch(values[i:i + 300], i, timestamps=[T0 + i] * 300) for i in range(0, 900, 300)])
    first, second = objects(s3, bucket, "first/"), objects(s3, bucket, "second/")
    assert len(first) == 9
    assert {k[len("first/"):]: v for k, v in first.items()} == {k[len("second/"):]: v for k, v in second.items()}


def test_a_retried_write_skips_what_it_already_committed(moto_server, s3, bucket):
    s = sink(moto_server, bucket, format="jsonl")
    a, b = make_batch(orders(10), 0, partition=0), make_batch(orders(10), 0, partition=1)
    s.write([a, b])
    s.write([a, b])  # the runner retries a whole call when one partition failed
    assert len(objects(s3, bucket)) == 2
    with pytest.raises(OffsetConflict) as info:  # a fresh instance knows nothing: fenced, not duplicated
        sink(moto_server, bucket, format="jsonl").write([a])
    assert info.value.partitions == {("orders", 0): 10}


def test_a_stale_instance_cannot_replace_a_committed_object(moto_server, s3, bucket):
    zombie, owner = sink(moto_server, bucket, format="jsonl"), sink(moto_server, bucket, format="jsonl")
    zombie.write([make_batch(orders(100), 0)])
    assert owner.load_offsets([("orders", 0)]) == {("orders", 0): 100}
    owner.write([make_batch(orders(100, 100), 100)])
    before = objects(s3, bucket)
    # The zombie still holds offsets 100.. (same cut, different content) and the old ETag.
    with pytest.raises(OffsetConflict) as info:
        zombie.write([make_batch(orders(100, 500), 100)])
    assert info.value.partitions == {("orders", 0): 200}
    assert objects(s3, bucket) == before
    assert state_of(s3, bucket, "", "orders", 0) == {"next_offset": 200, "pending": None}


class _Interleaved(S3Sink):
    """Runs ``between()`` once, just before its first object is published (after its fence)."""

    between = None

    def _publish(self, *args, **kwargs):
        if self.between is not None:
            between, self.between = self.between, None
            between()
        return super()._publish(*args, **kwargs)


@pytest.mark.parametrize("same_cut", [True, False])
def test_a_zombie_mid_batch_loses_to_the_new_owner(moto_server, s3, bucket, same_cut):
    """The zombie passed its fence, then the new owner took the partition over and committed;
    the zombie's object write must neither replace the owner's object nor survive as a copy."""
    # The zombie's batch: the same key as the owner's (10..49), or another one (10..34).
    _, owner = _zombie_lands_late(moto_server, bucket, n=40 if same_cut else 25)
    if not same_cut:
        # The zombie's differently-cut object landed after the owner's clean-up; it is one of the
        # owner's orphans and goes at the owner's next sweep (here: forced).
        owner.last_sweep.clear()
        owner.write([make_batch(orders(1, 50), 50)])
    assert _ids(s3, bucket) == list(range(51 if not same_cut else 50)), \
        "a zombie's record survived or a record is missing"


def test_leftovers_of_a_crashed_batch_are_removed_and_uploads_aborted(moto_server, s3, bucket):
    s = sink(moto_server, bucket, format="jsonl", path="{topic}/{partition}/c={value.country}")
    s.write([make_batch(orders(30), 0)])
    # A run that crashed mid-batch: its pending state, one object written, one upload dangling
    # (and one upload of another partition, which is not ours to touch).
    left = "orders/0/c=DE/orders+0+0000000000000000030+0000000000000000057.jsonl"
    dangling = "orders/0/c=FR/orders+0+0000000000000000031+0000000000000000058.jsonl"
    other = "orders/1/c=FR/orders+1+0000000000000000000+0000000000000000003.jsonl"
    s3.put_object(Bucket=bucket, Key=left, Body=b'{"order_id":30}\n')
    s3.create_multipart_upload(Bucket=bucket, Key=dangling)
    s3.create_multipart_upload(Bucket=bucket, Key=other)
    state = state_of(s3, bucket, "", "orders", 0)
    state["pending"] = {"start": 30, "next": 60, "keys": [left, dangling]}
    s3.put_object(Bucket=bucket, Key="_kpipe/state/orders/0.json", Body=__import__("orjson").dumps(state))

    restarted = sink(moto_server, bucket, format="jsonl", path="{topic}/{partition}/c={value.country}")
    assert restarted.load_offsets([("orders", 0)]) == {("orders", 0): 30}
    restarted.write([make_batch(orders(10, 30), 30)])  # a different cut than the crashed run's
    got = objects(s3, bucket)
    assert left not in got
    assert sorted(r["order_id"] for k, v in got.items() for r in read_records(k, v)) == list(range(40))
    assert uploads(s3, bucket) == [other]
    st = state_of(s3, bucket, "", "orders", 0)
    assert st["next_offset"] == 40 and st["pending"] is None
    assert sorted(st["orphans"]) == sorted([left, dangling])  # swept again for a while


def test_large_objects_go_up_in_parts_holding_one_part_at_a_time(moto_server, s3, bucket):
    rng = random.Random(1)
    values = [{"id": i, "blob": "".join(rng.choices(string.ascii_letters, k=2000))} for i in range(6000)]  # ~12 MiB
    peak = []
    real_write = ObjectUpload.write

    def write(self, data):
        n = real_write(self, data)
        peak.append(len(self.buf))
        return n

    ObjectUpload.write = write
    try:
        s = sink(moto_server, bucket, format="jsonl", part_size="5MiB")
        s.write([make_batch(values, 0)])
    finally:
        ObjectUpload.write = real_write
    (key, data), = objects(s3, bucket).items()
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"].endswith('-3"'), "not a 3-part multipart upload"
    assert read_records(key, data) == values
    assert max(peak) < 5 * 1024 * 1024  # never a whole part held: it goes out as it fills
    assert uploads(s3, bucket) == []


def test_empty_batches_move_the_offset_without_objects(moto_server, s3, bucket):
    s = sink(moto_server, bucket)
    s.write([make_batch(orders(5), 0), make_batch([], 5, offsets=[])])
    from kpipe.api import Batch
    s.write([Batch("orders", 0, 5, 9, [], [])])  # a range without records (compaction, markers)
    assert s.load_offsets([("orders", 0)]) == {("orders", 0): 9}
    assert len(objects(s3, bucket)) == 1


# -- errors ----------------------------------------------------------------------------------


def test_a_missing_bucket_is_fatal_and_named(moto_server):
    s = S3Sink({"bucket": "no-such-bucket-kp", "endpoint_url": moto_server.url, "region": "us-east-1"}, CTX)
    with pytest.raises(FatalError, match=r"bucket 'no-such-bucket-kp' does not exist .*create it"):
        s.open()


def test_an_unreachable_endpoint_is_retryable(monkeypatch):
    # Credentials, or boto3 fails before it connects; the moto fixture sets them only for the
    # worker that happens to have started it.
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    s = S3Sink({"bucket": "lake", "endpoint_url": f"http://127.0.0.1:{free_port()}", "region": "us-east-1"}, CTX)
    with pytest.raises(RetryableError, match="lake"):
        s.open()


@pytest.mark.parametrize("code,status,kind,words", [
    ("SlowDown", 503, RetryableError, "SlowDown"),
    ("InternalError", 500, RetryableError, "InternalError"),
    ("AccessDenied", 403, FatalError, "s3:PutObject"),
    ("InvalidAccessKeyId", 403, FatalError, "credentials"),
    ("PermanentRedirect", 301, FatalError, "sink.region"),
])
def test_errors_are_sorted_with_their_fix(code, status, kind, words):
    store = Store.__new__(Store)
    store.bucket, store.prefix, store.where = "lake", "raw", "AWS S3"
    err = store.translate(ClientError({"Error": {"Code": code, "Message": "m"},
                                       "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"), "writing x")
    assert isinstance(err, kind) and words in str(err) and "lake" in str(err)


def test_bad_settings_fail_at_start(moto_server, bucket):
    with pytest.raises(FatalError, match="5MiB"):
        S3Sink({"bucket": bucket, "part_size": "1MiB"}, CTX)
    with pytest.raises(FatalError, match="unknown field"):
        S3Sink({"bucket": bucket, "path": "{valu.x}"}, CTX)


def test_the_issues_spec_validates_with_and_without_an_endpoint(tmp_path):
    import os

    from kit import run_kpipe

    spec = tmp_path / "s3.yaml"
    spec.write_text("""name: orders-to-s3
source: {brokers: localhost:9092, topic: orders}
sink:
  type: s3
  bucket: lake
  prefix: raw/orders
  endpoint_url: ${S3_ENDPOINT:-}       # MinIO, Ceph, moto...; empty means AWS
  region: eu-west-1
  format: jsonl
  compression: gzip
  path: "{topic}/dt={timestamp:%Y-%m-%d}/country={value.country}"
  layout: kpipe
""")
    env = {k: v for k, v in os.environ.items() if k != "S3_ENDPOINT"}
    for extra in ({}, {"S3_ENDPOINT": "http://127.0.0.1:9000"}):
        proc = run_kpipe("validate", str(spec), env={**env, **extra})
        assert proc.returncode == 0, proc.stderr
    assert S3Sink({"bucket": "lake", "endpoint_url": None, "prefix": None}, CTX).endpoint_url is None


def _zombie_lands_late(moto_server, bucket, n: int = 25) -> tuple[dict, S3Sink]:
    """A zombie passes its fence for a batch of ``n`` records at 10; the owner takes the partition
    over right then and commits 10..49 (after cleaning up the zombie's pending keys); then the
    zombie's object lands, and its commit is refused. Returns the sink config and the owner."""
    cfg = {"bucket": bucket, "endpoint_url": moto_server.url, "region": "us-east-1", "format": "jsonl"}
    zombie = _Interleaved(cfg, CTX)
    zombie.open()
    owner = S3Sink(cfg, CTX)
    owner.open()
    zombie.write([make_batch(orders(10), 0)])

    def take_over():
        assert owner.load_offsets([("orders", 0)]) == {("orders", 0): 10}
        owner.write([make_batch(orders(40, 10), 10)])

    zombie.between = take_over
    with pytest.raises(OffsetConflict) as info:
        zombie.write([make_batch(orders(n, 1000), 10)])
    assert info.value.partitions == {("orders", 0): 50}
    return cfg, owner


def _ids(s3, bucket) -> list:
    return sorted(r["order_id"] for k, v in objects(s3, bucket).items() for r in read_records(k, v))


def test_an_idle_owner_sweeps_a_zombies_late_object(moto_server, s3, bucket):
    """The owner writes nothing more: its housekeeping (which the runner calls while no batch
    comes) deletes the zombie's late object all the same."""
    _, owner = _zombie_lands_late(moto_server, bucket)
    assert len(_ids(s3, bucket)) == 50 + 25, "the zombie's late object should be there before the sweep"
    owner.housekeep()  # within SWEEP_EVERY of the owner's last sweep: nothing yet
    assert len(_ids(s3, bucket)) == 75
    owner.last_sweep.clear()  # SWEEP_EVERY later
    owner.housekeep()
    assert _ids(s3, bucket) == list(range(50)), "the idle owner did not sweep the zombie's object"


def test_housekeeping_leaves_a_partition_another_writer_took(moto_server, s3, bucket):
    """Only the instance whose state is the stored one sweeps: once a third instance has written,
    the old owner's housekeeping deletes nothing, and the third's does."""
    cfg, owner = _zombie_lands_late(moto_server, bucket)
    late = {k: v for k, v in objects(s3, bucket).items() if "+0000000000000000010+0000000000000000034" in k}
    assert len(late) == 1
    third = S3Sink(cfg, CTX)
    third.open()
    third.load_offsets([("orders", 0)])
    third.write([make_batch(orders(5, 50), 50)])  # the partition moved on; this commit sweeps
    assert not set(late) & set(objects(s3, bucket))
    (key, data), = late.items()
    s3.put_object(Bucket=bucket, Key=key, Body=data)  # the zombie's PUT, late once more
    owner.last_sweep.clear()
    owner.housekeep()  # not the state's writer any more: touches nothing
    assert key in objects(s3, bucket)
    third.last_sweep.clear()
    third.housekeep()
    assert key not in objects(s3, bucket)
    assert _ids(s3, bucket) == list(range(55))

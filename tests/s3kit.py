"""Helpers for the S3 sink tests: a real S3 server (moto's, over HTTP on a loopback port), a
bucket per test, batches built from real-looking messages, and readers for what landed.

The server is ``python -m moto.server`` in a subprocess (``kpipe.sinks.s3.testing``), shared by
the session; the tests talk to it the way kpipe does, through boto3 over HTTP. AWS credentials
are dummies set in the environment (moto accepts any), so ``kpipe run`` subprocesses find them
through boto3's chain.
"""
from __future__ import annotations

import csv
import gzip
import io
import uuid
from pathlib import Path

import boto3
import orjson
import pytest
import yaml

from kit import SESSION
from kpipe.api import Batch
from kpipe.broker import free_port  # noqa: F401  (re-exported for the tests)
from kpipe.sinks.s3.testing import MotoServer


@pytest.fixture(scope="session")
def moto_server():
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def s3(moto_server):
    return boto3.client("s3", endpoint_url=moto_server.url, region_name="us-east-1")


@pytest.fixture
def bucket(s3) -> str:
    """A fresh bucket, unique to the test."""
    name = f"kp-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


# -- batches without a broker ----------------------------------------------------------------


class Msg:
    """What a sink reads from a confluent_kafka.Message: offset, timestamp, key."""

    __slots__ = ("_offset", "_ts", "_key")

    def __init__(self, offset: int, ts: int | None = None, key: bytes | None = None):
        self._offset, self._ts, self._key = offset, ts, key

    def offset(self) -> int:
        return self._offset

    def timestamp(self):
        return (0, 0) if self._ts is None else (1, self._ts)

    def key(self):
        return self._key

    def headers(self):
        return None


def make_batch(values: list, start: int = 0, *, topic: str = "orders", partition: int = 0,
               timestamps: list | None = None, keys: list | None = None, offsets: list | None = None) -> Batch:
    """A batch of ``values`` at offsets ``start..`` (or ``offsets``), timestamps 2026-11-26 by default."""
    offsets = offsets if offsets is not None else list(range(start, start + len(values)))
    timestamps = timestamps if timestamps is not None else [1_795_000_000_000 + o for o in offsets]
    keys = keys if keys is not None else [None] * len(values)
    msgs = [Msg(o, t, k) for o, t, k in zip(offsets, timestamps, keys)]
    nxt = (offsets[-1] + 1) if offsets else start
    return Batch(topic, partition, offsets[0] if offsets else start, nxt, list(values), msgs)


# -- what landed -----------------------------------------------------------------------------


def objects(s3, bucket: str, prefix: str = "", *, state: bool = False) -> dict[str, bytes]:
    """Every object under ``prefix`` (key -> bytes); kpipe's _kpipe/ state objects and a Parquet
    dataset's reader files (``_common_metadata``, the zero-row ``+schema.parquet``) only if asked."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            name = o["Key"].rsplit("/", 1)[-1]
            if ("/_kpipe/" in "/" + o["Key"] or name in ("_common_metadata", "+schema.parquet")) and not state:
                continue
            out[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def state_of(s3, bucket: str, prefix: str, topic: str, partition: int) -> dict | None:
    key = "/".join(p for p in (prefix, "_kpipe", "state", topic, f"{partition}.json") if p)
    try:
        return orjson.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def uploads(s3, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def read_records(key: str, data: bytes) -> list:
    """Parse one object completely with the format's standard reader (a truncated object fails)."""
    if key.endswith(".gz"):
        data, key = gzip.decompress(data), key[:-3]
    elif key.endswith(".zst"):
        import zstandard
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as r:
            data = r.read()
        key = key[:-4]
    if key.endswith((".jsonl", ".json")):
        assert data.endswith(b"\n"), f"{key}: last line not terminated"
        return [orjson.loads(line) for line in data.splitlines()]
    if key.endswith(".csv"):
        assert data.endswith(b"\r\n"), f"{key}: last row not terminated"
        return list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    if key.endswith(".avro"):
        import fastavro
        return list(fastavro.reader(io.BytesIO(data)))
    if key.endswith(".parquet"):
        import pyarrow.parquet as pq
        return pq.read_table(io.BytesIO(data)).to_pylist()
    raise AssertionError(f"unknown extension: {key}")


def write_s3_spec(tmp_path: Path, brokers: str, topic: str, endpoint: str, bucket: str, prefix: str, *,
                  name: str, max_records: int = 500, max_age: str = "5s", options: dict | None = None,
                  retry: dict | None = None, filename: str = "spec.yaml", **sink) -> Path:
    doc = {
        "name": name,
        "source": {"brokers": brokers, "topic": topic, "options": {**SESSION, **(options or {})}},
        "sink": {"type": "s3", "bucket": bucket, "prefix": prefix, "endpoint_url": endpoint,
                 "region": "us-east-1", **sink},
        "batch": {"max_records": max_records, "max_bytes": "16MiB", "max_age": max_age},
    }
    if retry:
        doc["retry"] = retry
    spec = tmp_path / filename
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def committed(s3, bucket: str, prefix: str, topic: str, partitions=range(4)) -> dict[int, int]:
    """partition -> the next offset its state object holds (partitions without one left out)."""
    out = {}
    for p in partitions:
        st = state_of(s3, bucket, prefix, topic, p)
        if st is not None:
            out[p] = st["next_offset"]
    return out


def object_offsets(key: str) -> tuple[int, int, int]:
    """(partition, first, last) from a kpipe-layout key."""
    _, partition, first, last = key.rsplit("/", 1)[-1].split(".")[0].split("+")
    return int(partition), int(first), int(last)

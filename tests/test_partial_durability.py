"""A files or S3 write of three partitions whose second partition fails: the sink says which
partitions are durable (``WriteOutcome``), the runner commits the first and third, writes only
the second again, and it lands exactly once. Before, the whole call was written again (S3) or
the run stopped (files), and the replay of a published partition could read as another writer.

The real sinks under the real runner, driven by a fake consumer (no broker); the output is
read back with ``json`` and boto3, not with kpipe."""
from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import replace

from botocore.exceptions import ClientError

from kpipe.api import SinkPlugin
from kpipe.plugins import Registry, registry
from kpipe.runtime.fakes import FakeCluster, fake_spec
from kpipe.runtime.retry import Backoff
from kpipe.runtime.runner import Runner
from kpipe.sinks.files.sink import FilesSink
from kpipe.sinks.s3.sink import S3Sink
from s3kit import bucket, moto_server, objects, read_records, s3, state_of  # noqa: F401

FAST = Backoff(attempts=4, base=0.001, cap=0.001, max_elapsed=0.0)
PARTS = 3
N = 6  # records per partition: two batches of three each


def cluster() -> FakeCluster:
    c = FakeCluster({"t": PARTS})
    for p in range(PARTS):
        c.produce("t", p, [json.dumps({"id": p * 100 + i}).encode() for i in range(N)])
    return c


def run_with(sink_cls, sink_type: str, sink_config: dict, c: FakeCluster, max_records: int = N,
             in_flight: int | None = None):
    """Run the runner over ``c`` with plugin ``sink_type`` built by ``sink_cls`` (its declared
    capabilities kept, but ``max_in_flight`` when given)."""
    base = registry()
    plugin = base.plugins["sink"][sink_type]
    caps = plugin.capabilities if in_flight is None else replace(plugin.capabilities, max_in_flight=in_flight)
    mine = SinkPlugin(sink_type, plugin.config_schema, sink_cls, caps)
    plugins = Registry({**{k: dict(v) for k, v in base.plugins.items()},
                        "sink": {**base.plugins["sink"], sink_type: mine}}, base.broken, base.dists)
    spec = fake_spec(sink_type=sink_type, sink_config=sink_config, max_records=max_records)
    return Runner(spec, consumer_factory=c.factory, plugins=plugins, backoff=FAST, until_caught_up=True).run()


def partitions_of(batches) -> list:
    return sorted({b.partition for b in batches})


def assert_only_the_failed_one_again(calls: list) -> None:
    """t[1] failed in a call with other partitions; it alone was written again, once."""
    first = next(i for i, c in enumerate(calls) if 1 in c)
    assert len(calls[first]) > 1 and [c for c in calls[first + 1:] if 1 in c] == [[1]], calls
    assert Counter(p for c in calls for p in c) == {0: 1, 1: 2, 2: 1}, calls


def test_files_a_failing_partition_is_retried_alone_and_lands_once(tmp_path, caplog):
    out = tmp_path / "out"
    blocked = out / "t" / "1" / ".lock"
    calls: list = []

    class Healing(FilesSink):
        def load_offsets(self, partitions):
            found = super().load_offsets(partitions)
            blocked.unlink()
            blocked.mkdir()  # opening the lock fails (EISDIR): t[1] cannot be written
            return found

        def write(self, batches):
            calls.append(partitions_of(batches))
            try:
                return super().write(batches)
            finally:
                shutil.rmtree(blocked, ignore_errors=True)  # the operator fixed it

    with caplog.at_level(logging.INFO, logger="kpipe"):
        result = run_with(Healing, "files", {"path": str(out), "format": "jsonl"}, cluster())
    assert result.exit_code == 0, result.reason
    assert_only_the_failed_one_again(calls)
    for p in range(PARTS):
        files = sorted((out / "t" / str(p)).glob("*.jsonl"))
        assert [f.name.split("+", 2)[2] for f in files] == ["0000000000000000000+0000000000000000005.jsonl"]
        assert [json.loads(line)["id"] for line in files[0].read_text().splitlines()] == \
            [p * 100 + i for i in range(N)]
    assert "another writer" not in caplog.text and "not durable yet: t[1]" in caplog.text


def test_files_a_write_of_three_partitions_states_the_two_that_landed(tmp_path):
    """The sink alone: what the runner is told, and that the retry of the rest lands once."""
    from kpipe.api import Batch, WriteOutcome

    s = FilesSink({"path": str(tmp_path), "format": "jsonl"}, _ctx())
    s.open()
    s.load_offsets([("t", p) for p in range(PARTS)])
    blocked = tmp_path / "t" / "1" / ".lock"
    blocked.unlink()
    blocked.mkdir()
    batches = [Batch("t", p, 0, 3, [{"id": p * 100 + i} for i in range(3)], []) for p in range(PARTS)]
    outcome = s.write(batches)
    assert isinstance(outcome, WriteOutcome) and outcome.durable == {("t", 0), ("t", 2)}
    assert "t/1/.lock" in outcome.reason
    blocked.rmdir()
    assert s.write([batches[1]]) is None
    for p in range(PARTS):
        (f,) = (tmp_path / "t" / str(p)).glob("*.jsonl")
        assert [json.loads(line)["id"] for line in f.read_text().splitlines()] == [p * 100 + i for i in range(3)]


def _ctx():
    from kpipe.api import SinkContext
    return SinkContext(pipeline="p", group="g")


class _FailOnce:
    """Makes the first PUT of a data object of partition 1 fail with S3's 503 SlowDown."""

    def __init__(self, store):
        self.store, self.failed = store, False
        self.real = store.client.put_object

    def __call__(self, **kwargs):
        if not self.failed and "/1/t+1+" in "/" + kwargs["Key"]:
            self.failed = True
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
        return self.real(**kwargs)


def test_s3_a_failing_partition_is_retried_alone_and_lands_once(moto_server, s3, bucket, caplog):
    calls: list = []

    class Faulty(S3Sink):
        def open(self):
            super().open()
            self.store.client.put_object = _FailOnce(self.store)

        def write(self, batches):
            calls.append(partitions_of(batches))
            return super().write(batches)

    config = {"bucket": bucket, "endpoint_url": moto_server.url, "region": "us-east-1", "format": "jsonl"}
    with caplog.at_level(logging.INFO, logger="kpipe"):
        result = run_with(Faulty, "s3", config, cluster())
    assert result.exit_code == 0, result.reason
    assert_only_the_failed_one_again(calls)
    got = objects(s3, bucket)
    assert len(got) == PARTS, sorted(got)
    ids = sorted(r["id"] for key, data in got.items() for r in read_records(key, data))
    assert ids == sorted(p * 100 + i for p in range(PARTS) for i in range(N))
    for p in range(PARTS):
        assert state_of(s3, bucket, "", "t", p) == {"next_offset": N, "pending": None}
    assert "another writer" not in caplog.text and "not durable yet: t[1]" in caplog.text

"""The files sink on a real filesystem: atomic files, offsets from names, fencing of stale writers."""
from __future__ import annotations

import os

import pytest

from kpipe.api import Batch, OffsetConflict, SinkContext
from kpipe.sinks.files.sink import FilesSink, file_name, parse_name

CTX = SinkContext(pipeline="p", group="g")


def batch(start: int, n: int, partition: int = 0) -> Batch:
    return Batch("orders", partition, start, start + n, [{"i": start + k} for k in range(n)], [])


def sink(path) -> FilesSink:
    s = FilesSink({"path": str(path), "format": "jsonl", "fsync": True}, CTX)
    s.open()
    return s


def test_name_round_trip():
    name = file_name("orders.v1", 3, 0, 9_999, ".jsonl")
    assert name == "orders.v1+3+0000000000000000000+0000000000000009999.jsonl"
    assert parse_name(name) == ("orders.v1", 3, 0, 9_999)
    assert parse_name(".orders+0+0000000000000000000+0000000000000000001.jsonl.77.tmp") is None


def test_offsets_come_from_the_files(tmp_path):
    s = sink(tmp_path)
    assert s.load_offsets([("orders", 0)]) == {}
    s.write([batch(0, 10), batch(10, 5), batch(0, 3, partition=1)])
    assert s.load_offsets([("orders", 0), ("orders", 1), ("orders", 2)]) == {("orders", 0): 15, ("orders", 1): 3}
    lines = (tmp_path / "orders" / "0" / file_name("orders", 0, 10, 14, ".jsonl")).read_bytes()
    assert lines == b'{"i":10}\n{"i":11}\n{"i":12}\n{"i":13}\n{"i":14}\n'


def test_a_stale_writer_is_fenced_and_others_still_land(tmp_path):
    owner, zombie = sink(tmp_path), sink(tmp_path)
    owner.write([batch(0, 100)])
    with pytest.raises(OffsetConflict) as info:
        # the zombie still holds offsets 50.. from before it lost the partition
        zombie.write([batch(50, 100), batch(0, 10, partition=1)])
    assert info.value.partitions == {("orders", 0): 100}
    assert sorted(os.listdir(tmp_path / "orders" / "0")) == [".lock", file_name("orders", 0, 0, 99, ".jsonl")]
    assert owner.load_offsets([("orders", 1)]) == {("orders", 1): 10}  # the unfenced batch landed


def test_rewriting_the_same_batch_is_refused_not_duplicated(tmp_path):
    s = sink(tmp_path)
    s.write([batch(0, 10)])
    with pytest.raises(OffsetConflict):
        s.write([batch(0, 10)])
    assert len(list((tmp_path / "orders" / "0").glob("*.jsonl"))) == 1


def test_a_crashed_writers_temp_file_never_counts(tmp_path):
    s = sink(tmp_path)
    s.write([batch(0, 10)])
    d = tmp_path / "orders" / "0"
    orphan = d / f".{file_name('orders', 0, 10, 19, '.jsonl')}.4242.tmp"
    orphan.write_bytes(b'{"i":10}\n')  # what a SIGKILL between write and rename leaves
    assert s.load_offsets([("orders", 0)]) == {("orders", 0): 10}
    assert not orphan.exists()


def test_empty_batch_writes_no_file(tmp_path):
    s = sink(tmp_path)
    s.write([Batch("orders", 0, 0, 5, [], [])])
    assert not list(tmp_path.rglob("*.jsonl"))


def test_a_fully_filtered_batch_still_moves_the_stored_offset(tmp_path):
    """A partition a filter empties must not be read again from its last file on every restart."""
    s = sink(tmp_path)
    s.write([batch(0, 10)])
    s.write([Batch("orders", 0, 10, 500, [], [])])  # offsets 10..499, every record filtered out
    assert not list(tmp_path.rglob("*.jsonl"))[1:]  # still only the first file
    assert sink(tmp_path).load_offsets([("orders", 0)]) == {("orders", 0): 500}
    s.write([batch(500, 5)])  # data after the marker is accepted, and its file is the head again
    assert sink(tmp_path).load_offsets([("orders", 0)]) == {("orders", 0): 505}
    # A stale writer cannot move the marker back over what is stored, nor past it unseen.
    with pytest.raises(OffsetConflict) as info:
        sink(tmp_path).write([Batch("orders", 0, 200, 900, [], [])])
    assert info.value.partitions == {("orders", 0): 505}
    assert sink(tmp_path).load_offsets([("orders", 0)]) == {("orders", 0): 505}


def test_a_partition_filtered_from_the_start_has_a_stored_offset(tmp_path):
    s = sink(tmp_path)
    s.write([Batch("orders", 3, 0, 1000, [], [])])
    assert sink(tmp_path).load_offsets([("orders", 3)]) == {("orders", 3): 1000}
    assert sorted(os.listdir(tmp_path / "orders" / "3")) == [".lock", ".next"]


def test_a_call_written_again_without_its_bad_record_is_not_fenced(tmp_path):
    """The runner's skip/dlq policy: a call whose second batch holds a record the format cannot
    encode fails after the first batch's file was published; the same call again, without that
    record, lands the rest (the first batch is ours, already durable) instead of being taken
    for a stale writer's."""
    from kpipe.api import BadRecordError
    from kpipe.transforms.testing import FakeMessage

    def real(start: int, values: list) -> Batch:  # with messages, so offsets are known
        msgs = [FakeMessage(v, None, None, 0, start + k, "orders", 0) for k, v in enumerate(values)]
        return Batch("orders", 0, start, start + len(values), values, msgs)

    s = sink(tmp_path)
    assert s.load_offsets([("orders", 0)]) == {}
    first, second = real(0, [{"i": 0}, {"i": 1}]), real(2, [{"i": 2}, {"i": 1j}, {"i": 4}])
    with pytest.raises(BadRecordError) as info:
        s.write([first, second])
    assert (info.value.index, info.value.offset) == (1, 3)
    s.write([first, second.without(1)])
    d = tmp_path / "orders" / "0"
    assert sorted(p.name for p in d.glob("*.jsonl")) == [file_name("orders", 0, 0, 1, ".jsonl"),
                                                         file_name("orders", 0, 2, 4, ".jsonl")]
    assert (d / file_name("orders", 0, 2, 4, ".jsonl")).read_bytes() == b'{"i":2}\n{"i":4}\n'
    assert s.load_offsets([("orders", 0)]) == {("orders", 0): 5}
    with pytest.raises(OffsetConflict):  # once a call has returned, a replay is refused again
        s.write([first])

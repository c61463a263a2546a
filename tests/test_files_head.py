"""The files sink's head hint (kept in each partition's ``.lock``): a write lists no directory,
and a hint that is wrong (behind the files, ahead of them, naming a foreign file, garbled) never
makes kpipe skip or overwrite a file: the names are the truth.

Each test sets the hint by hand to what a crash, a copied directory or an edit could leave."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpipe.api import Batch, OffsetConflict
from kpipe.sinks.files import head as heads
from kpipe.sinks.files.sink import FilesSink, file_name
from test_files_sink import CTX, batch

TP = ("orders", 0)
EXAMPLES = int(os.environ.get("KPIPE_HEAD_EXAMPLES", "25"))


def sink(path) -> FilesSink:  # no fsync: these tests are about names, not durability
    s = FilesSink({"path": str(path), "format": "jsonl", "fsync": False}, CTX)
    s.open()
    return s


def set_hint(d, text: str) -> None:
    """What a lost, stale or edited hint looks like: the lock file's content, replaced."""
    (d / ".lock").write_text(text)


def name(first: int, last: int, topic: str = "orders", partition: int = 0) -> str:
    return file_name(topic, partition, first, last, ".jsonl")


def records(d) -> list:
    return [line for f in sorted(d.glob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture
def written(tmp_path):
    """A partition with files 0..9, 10..19, 20..29: (its directory, the writer)."""
    s = sink(tmp_path)
    s.load_offsets([TP])
    s.write([batch(0, 10)])
    s.write([batch(10, 10)])
    s.write([batch(20, 10)])
    return tmp_path / "orders" / "0", s


def test_a_write_lists_no_directory_once_the_partition_is_assigned(written, monkeypatch):
    d, s = written
    s.write([batch(30, 5)])  # the first write after assignment lists it (and sweeps leftovers)

    def no_listing(*args, **kwargs):
        raise AssertionError("a write listed the partition directory")

    monkeypatch.setattr(os, "scandir", no_listing)
    s.write([batch(35, 5)])
    s.write([Batch("orders", 0, 40, 50, [], [])])  # all filtered: .next
    s.write([batch(50, 5)])
    monkeypatch.undo()
    assert sink(d.parent.parent).load_offsets([TP]) == {TP: 55}


def test_a_hint_behind_the_files_is_corrected_on_assignment(written):
    """A writer killed after its rename, before its hint reached the disk (a power loss)."""
    d, _ = written
    set_hint(d, f"{name(0, 9)}\n-\n")
    s = sink(d.parent.parent)
    assert s.load_offsets([TP]) == {TP: 30}
    with pytest.raises(OffsetConflict) as info:
        s.write([batch(20, 10)])  # would overwrite 20..29 if the hint were believed
    assert info.value.partitions == {TP: 30}
    s.write([batch(30, 3)])
    assert len(records(d)) == 33


def test_a_hint_ahead_of_the_files_is_not_believed(written):
    """Files removed by hand, or a hint copied from elsewhere: it names a file that is not there."""
    d, _ = written
    set_hint(d, f"{name(30, 999)}\n{name(1000, 1999)}\n")
    s = sink(d.parent.parent)
    assert s.load_offsets([TP]) == {TP: 30}  # believing it would skip offsets 30..1999
    s.write([batch(30, 5)])
    assert len(records(d)) == 35


def test_a_hint_ahead_on_a_write_is_checked_before_it_fences(written):
    """Even after the first write, a hint that fences a batch is checked against the names: the
    runner seeks to the offset a conflict reports."""
    d, s = written
    s.write([batch(30, 5)])
    set_hint(d, f"{name(35, 5000)}\n-\n")  # not a file: nobody is ahead
    s.write([batch(35, 5)])
    assert len(records(d)) == 40
    assert sink(d.parent.parent).load_offsets([TP]) == {TP: 40}


@pytest.mark.parametrize("foreign", [name(0, 10**6, topic="other"), name(0, 10**6, partition=1), "notes.txt"])
def test_a_foreign_file_never_counts(written, foreign):
    """Another topic's or partition's file in the directory, even named by the hint."""
    d, _ = written
    (d / foreign).write_text('{"i": -1}\n')
    set_hint(d, f"{foreign}\n{foreign}\n")
    s = sink(d.parent.parent)
    assert s.load_offsets([TP]) == {TP: 30}
    s.write([batch(30, 5)])
    assert sink(d.parent.parent).load_offsets([TP]) == {TP: 35}


@pytest.mark.parametrize("garbage", ["", "\x00" * 1024, "-\n", "a\nb\nc\n", "\xff\xfe"])
def test_a_garbled_hint_costs_a_listing_not_a_wrong_head(written, garbage):
    d, s = written
    set_hint(d, garbage)
    assert sink(d.parent.parent).load_offsets([TP]) == {TP: 30}
    set_hint(d, garbage)
    with pytest.raises(OffsetConflict) as info:  # the writer that already listed: the names again
        s.write([batch(25, 10)])
    assert info.value.partitions == {TP: 30}


def test_a_zombie_killed_after_its_rename_is_seen_by_the_owner(written):
    """The zombie published 30..39 and died before anything else: the owner, which has written
    here already (no listing any more), finds it through the pending name and is fenced."""
    d, owner = written
    zombie = sink(d.parent.parent)
    zombie.write([batch(30, 10)])
    with pytest.raises(OffsetConflict) as info:
        owner.write([batch(30, 7)])
    assert info.value.partitions == {TP: 40}
    assert len(records(d)) == 40


# -- a property: any interleaving of two writers and hint damage, against a model ------------

steps = st.lists(st.tuples(st.sampled_from(["a", "b", "damage", "reassign"]), st.integers(0, 3),
                           st.integers(1, 4)), min_size=1, max_size=14)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
@given(steps)
def test_two_writers_and_a_damaged_hint_never_skip_or_duplicate(tmp_path_factory, plan):
    """Two instances write one partition, each from where it last heard (a zombie and an owner),
    while the hint is damaged now and then (ahead of the files, or garbled). The model: a write
    lands exactly when it starts at or past the head the files give; then the files tile what
    landed. (A hint behind the files comes only from a power loss, which every writer restarts
    from: the assignment's listing corrects it, as tested above.)"""
    root = tmp_path_factory.mktemp("head")
    d = root / "orders" / "0"
    writers = {"a": sink(root), "b": sink(root)}
    pos = {k: 0 for k in writers}  # where each writer believes the partition is
    head = 0                         # the model's head
    for who, back, n in plan:
        if who == "damage":
            if d.exists():
                set_hint(d, [f"{name(0, 10**5)}\n-\n", "x", f"{name(head, head + 50)}\n{name(head + 51, head + 60)}\n",
                             "\x00" * 10][back])
            continue
        if who == "reassign":
            w = "ab"[back % 2]
            pos[w] = writers[w].load_offsets([TP]).get(TP, 0)
            assert pos[w] == head
            continue
        start = max(pos[who] - back, 0) if back < 3 else pos[who]
        try:
            writers[who].write([batch(start, n)])
        except OffsetConflict as exc:
            assert start < head and exc.partitions == {TP: head}, (start, head, exc.partitions)
            pos[who] = head
            continue
        assert start >= head, f"a write from {start} landed over the head {head}"
        head = pos[who] = start + n
    if d.exists():
        ranges = sorted(tuple(int(x) for x in f.name.split(".")[0].split("+")[2:]) for f in d.glob("*.jsonl"))
        for (_, last), (first, _) in zip(ranges, ranges[1:]):
            assert first > last, ranges
    assert sink(root).load_offsets([TP]).get(TP, 0) == head


def test_the_hint_is_padded_and_read_back(tmp_path):
    fd = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        heads.write_hint(fd, "x" * 1500, None)
        heads.write_hint(fd, "short", "-")
        assert heads._read_hint(fd) == ("short", "-")
        assert os.fstat(fd).st_size == 2048
    finally:
        os.close(fd)

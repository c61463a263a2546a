"""The OffsetBook against a plain model: only durable positions are committed, a failed commit
is tried again, a dropped partition is never committed; where a partition resumes."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from kpipe.runtime.offsets import OffsetBook, resume_positions, start_position

TPS = [("t", 0), ("t", 1), ("u", 0)]

events = st.lists(st.one_of(
    st.tuples(st.just("assign"), st.sampled_from(TPS), st.integers(0, 50)),
    st.tuples(st.just("drop"), st.sampled_from(TPS)),
    st.tuples(st.just("advance"), st.sampled_from(TPS), st.integers(1, 10)),
    st.tuples(st.just("durable"), st.sampled_from(TPS)),
    st.tuples(st.just("commit"), st.lists(st.sampled_from(TPS), max_size=3)),
    st.tuples(st.just("ack"), st.booleans()),
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(events)
def test_only_durable_positions_of_held_partitions_are_committed(script):
    book = OffsetBook()
    held: dict = {}      # model: tp -> [consumed, handed, durable]
    sent: list = []      # commits not yet answered: [(topic, partition, offset)]
    for ev in script:
        kind = ev[0]
        if kind == "assign":
            book.assign(ev[1], ev[2])
            held[ev[1]] = [ev[2], ev[2], ev[2]]
            assert ev[1] in book.pending or book.committed.get(ev[1]) == ev[2]
        elif kind == "drop":
            book.drop(ev[1])
            held.pop(ev[1], None)
            assert ev[1] not in book and ev[1] not in book.pending
        elif kind == "advance" and ev[1] in held:
            pos = held[ev[1]]
            pos[0] += ev[2]
            book.read(ev[1], pos[0])
            pos[1] = pos[0]
            book.handed(ev[1], pos[1])
        elif kind == "durable" and ev[1] in held:
            held[ev[1]][2] = held[ev[1]][1]
            book.made_durable(ev[1], held[ev[1]][2])
        elif kind == "commit":
            out = book.to_commit(ev[1])
            for t, p, o in out:
                assert (t, p) in held and o == held[(t, p)][2]  # durable, never just handed
            assert {(t, p) for t, p, _ in out} == {tp for tp in ev[1] if tp in held}
            assert not book.pending
            sent += out
        elif kind == "ack" and sent:
            t, p, o = sent.pop(0)
            if ev[1]:
                book.committed_at((t, p), o)
            else:
                book.commit_failed((t, p), o)
                if (t, p) in held and book.committed.get((t, p), -1) < o:
                    assert (t, p) in book.pending  # tried again with the next commit
        for tp, (consumed, handed, durable) in held.items():
            assert book.consumed[tp] == consumed and book.written[tp] == handed and book.durable[tp] == durable
            assert book.durable[tp] <= book.written[tp] <= book.consumed[tp]


def test_settled_needs_the_group_to_agree():
    book = OffsetBook()
    book.assign(("t", 0), 5)
    assert not book.settled(("t", 0), 5)  # durable at 5, but the group has not got it yet
    assert book.to_commit([("t", 0)]) == [("t", 0, 5)]
    book.committed_at(("t", 0), 5)
    assert book.settled(("t", 0), 5) and not book.settled(("t", 0), 6)


def test_rewind_moves_every_position_of_a_held_partition_only():
    book = OffsetBook()
    book.assign(("t", 0), 0)
    book.read(("t", 0), 10)
    book.handed(("t", 0), 10)
    book.rewind(("t", 0), 7)
    assert (book.consumed[("t", 0)], book.written[("t", 0)], book.durable[("t", 0)]) == (7, 7, 7)
    book.rewind(("t", 1), 3)
    assert ("t", 1) not in book


def test_the_sink_wins_and_the_group_is_asked_only_for_the_rest():
    asked: list = []

    def group(tps):
        asked.extend(tps)
        return {("t", 1): 4, ("t", 2): -1001}  # -1001: no committed offset

    got = resume_positions([("t", 0), ("t", 1), ("t", 2)], lambda tps: {("t", 0): 9}, group)
    assert got == {("t", 0): (9, "sink"), ("t", 1): (4, "group")}
    assert asked == [("t", 1), ("t", 2)]
    assert resume_positions([("t", 0)], None, lambda tps: {}) == {}


def test_start_position_falls_back_to_source_start():
    assert start_position(5, 0, 10, "earliest") == 5
    assert start_position(None, 2, 10, "earliest") == 2
    assert start_position(None, 2, 10, "latest") == 10

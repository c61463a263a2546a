"""The runner's split of a consumed chunk by partition: the C-level fast path (``_runs``)
against the message-by-message grouping it stands in for."""
from __future__ import annotations

import random

import pytest
from confluent_kafka import KafkaError, Message

from kpipe.runtime.runner import _runs


def _reference(msgs):
    out: dict = {}
    for m in msgs:
        out.setdefault((m.topic(), m.partition()), []).append(m)
    return out


def _chunk(spec):
    """``spec``: [(topic, partition, count)] runs, offsets counting up per partition."""
    nxt: dict = {}
    msgs = []
    for topic, p, count in spec:
        for _ in range(count):
            o = nxt.get((topic, p), 0)
            nxt[(topic, p)] = o + 1
            msgs.append(Message(topic=topic, partition=p, offset=o, value=b"{}"))
    return msgs


def _as_offsets(groups):
    return {tp: [m.offset() for m in lst] for tp, lst in groups.items()}


@pytest.mark.parametrize("spec", [
    [("t", 0, 5)],
    [("t", 0, 3), ("t", 2, 4)],
    [("t", 3, 1), ("t", 1, 1), ("t", 0, 7), ("t", 2, 2)],
])
def test_contiguous_runs_of_one_topic_are_split_like_the_loop(spec):
    msgs = _chunk(spec)
    groups = _runs(msgs)
    assert groups is not None
    assert list(groups) == list(_reference(msgs))  # same order of partitions
    assert _as_offsets(groups) == _as_offsets(_reference(msgs))


@pytest.mark.parametrize("spec", [
    [("t", 0, 2), ("t", 1, 2), ("t", 0, 1)],   # a partition comes back
    [("t", 0, 2), ("u", 0, 2)],                # two topics
    [("t", 0, 1), ("t", 1, 1), ("t", 0, 1), ("t", 1, 1)],
])
def test_other_chunks_go_message_by_message(spec):
    assert _runs(_chunk(spec)) is None


def test_a_chunk_with_an_error_goes_message_by_message():
    msgs = _chunk([("t", 0, 3)])
    msgs.insert(1, Message(topic="t", partition=0, error=KafkaError(KafkaError._PARTITION_EOF)))
    assert _runs(msgs) is None


def test_random_chunks_agree_with_the_loop():
    rng = random.Random(7)
    for _ in range(300):
        spec = [(rng.choice("tu") if rng.random() < 0.1 else "t", rng.randrange(4), rng.randrange(1, 5))
                for _ in range(rng.randrange(1, 6))]
        msgs = _chunk(spec)
        groups = _runs(msgs)
        if groups is not None:
            assert _as_offsets(groups) == _as_offsets(_reference(msgs)), spec
            assert sum(map(len, groups.values())) == len(msgs)

"""The reset plan without a broker (issue 17): targets clamped to the log as kafka-consumer-groups
does, --topic scoping and the CSV export/import, against a simple model."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpipe.ops.offsets_reset import make_plan, parse_scope, read_csv, targets
from kpipe.ops.positions import Position

EXAMPLES = int(os.environ.get("KPIPE_OFFSETS_EXAMPLES", "200"))


def position(p: int, low: int, high: int, start: int, topic: str = "t") -> Position:
    return Position(topic, p, start, None, low, high, start, "sink")


logs = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 100)), min_size=1, max_size=6)


def args(**kw):
    base = dict(topic=None, from_file=None, to_earliest=False, to_latest=False, to_offset=None, shift_by=None,
                to_datetime=None)
    return SimpleNamespace(**{**base, **kw})


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
@given(logs, st.integers(-200, 200), st.sampled_from(["to_offset", "shift_by"]))
def test_every_target_is_clamped_into_the_log_and_says_so(parts, n, form):
    rows = [position(i, low, low + size, low + min(size, s)) for i, (low, size, s) in enumerate(parts)]
    plan = make_plan(targets(args(**{form: n}), rows, consumer=None), rows)
    assert [m.partition for m in plan.moves] == [r.partition for r in rows]
    for m, r in zip(plan.moves, rows):
        asked = n if form == "to_offset" else r.start + n
        assert m.asked == asked and m.current == r.start and m.stored == r.sink
        assert m.new == min(max(asked, r.log_start), r.log_end)
        assert m.clamped == ("log start" if asked < r.log_start else "log end" if asked > r.log_end else "")


def test_topic_scope_picks_partitions_and_refuses_unknown_ones():
    rows = [position(p, 0, 10, 5, topic) for topic in ("a", "b") for p in range(3)]
    got = targets(args(to_earliest=True, topic=["a:0,2", "b"]), rows, None)
    assert sorted(got) == [("a", 0), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    assert parse_scope(["a:1", "a"]) == {"a": None}
    with pytest.raises(ValueError, match="no partition 7"):
        targets(args(to_latest=True, topic=["a:7"]), rows, None)
    with pytest.raises(ValueError, match="not one of the spec's topics"):
        targets(args(to_latest=True, topic=["c"]), rows, None)


def test_from_file_reads_what_export_writes(tmp_path):
    rows = [position(p, 0, 10, 5) for p in range(3)]
    f = tmp_path / "pos.csv"
    f.write_text("topic,partition,offset\nt,0,3\nt,2,12\n")
    plan = make_plan(targets(args(from_file=str(f)), rows, None), rows)
    assert [(m.partition, m.new, m.clamped) for m in plan.moves] == [(0, 3, ""), (2, 10, "log end")]
    f.write_text("t,0,3\nt,9,1\n")
    with pytest.raises(ValueError, match=r"t\[9\]"):
        targets(args(from_file=str(f)), rows, None)
    f.write_text("t,0\n")
    with pytest.raises(ValueError, match="pos.csv:1"):
        read_csv(str(f))

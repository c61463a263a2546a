"""Property tests of the SQL sink against a model (issue 13).

Random writes of random batches (rows, tombstones, filtered offsets, records the database
rejects, repeated keys, batches with no records, several batches per write) go to the sink
directly, the way the runner hands them over; every record the sink reports is dropped and
the rest written again, as the runner does under ``errors.sink: skip``. Then:

- the table holds what a plain Python replay of the accepted records in offset order gives;
- each rejected record was reported exactly once, at its index in the batch it came in;
- ``kpipe_offsets`` holds each partition's next offset.
"""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlkit import dbs, fake_batch, sink_on, write_like_runner  # noqa: F401

KEYS = st.integers(0, 4)  # few keys: upserts and tombstones meet the same rows often
# What the database (or kpipe's own check) rejects, for each way of declaring the columns.
BAD = {
    "declared": {"null": lambda k: {"id": k, "n": None},            # n is NOT NULL
                 "type": lambda k: {"id": k, "n": "not a number"}},  # n is bigint
    "auto": {"extra": lambda k: {"id": k, "n": 1, "extra": 1},       # evolve: fail
             "type": lambda k: {"id": k, "n": "not a number"}},
}
CONFIGS = {
    "declared": {"columns": {"id": {"type": "bigint", "nullable": False}, "n": {"type": "bigint", "nullable": False}}},
    "auto": {"evolve": "fail"},
}
SEED = (0, 100, {"id": 100, "n": 0})  # the first write (offset 0 of partition 0): it makes the table


def slots(columns: str):
    return st.one_of(
        st.tuples(st.just("row"), KEYS, st.integers(0, 9)),
        st.tuples(st.just("tomb"), KEYS),
        st.just(("gap",)),  # filtered, or a tombstone under tombstones: skip
        st.tuples(st.just("bad"), KEYS, st.sampled_from(sorted(BAD[columns]))),
    )


def writes(columns: str):
    batch = st.tuples(st.integers(0, 1), st.lists(slots(columns), max_size=6))
    return st.lists(st.lists(batch, min_size=1, max_size=3), min_size=1, max_size=4)


def build(plan, columns: str, upsert: bool):
    """The writes as Batches, and what the model expects of each record."""
    nxt = {0: 1, 1: 0}  # partition 0 starts after SEED
    out = []
    for write in plan:
        batches = []
        for partition, kinds in write:
            start, items = nxt[partition], []
            for o, slot in enumerate(kinds, start):
                if slot[0] == "row":
                    items.append((o, slot[1], {"id": slot[1], "n": slot[2]}))
                elif slot[0] == "tomb" and upsert:
                    items.append((o, slot[1], None))
                elif slot[0] == "bad":
                    items.append((o, slot[1], BAD[columns][slot[2]](slot[1])))
            nxt[partition] = start + len(kinds)
            batches.append(fake_batch(start, nxt[partition], items, partition))
        out.append(batches)
    return out, {("orders", p): o for p, o in nxt.items() if o}


def is_bad(value, columns: str) -> bool:
    return value is not None and (value["n"] is None or type(value["n"]) is str or "extra" in value)


def superseded(batch, i: int, upsert: bool) -> bool:
    """A record a later row of the same key in the same run of rows replaces before it is
    written (an upsert keeps each key's last row of a run): the database never sees it, so
    it may go unreported; its effect on the table is nil either way."""
    if not upsert:
        return False
    key = batch.values[i]["id"]
    for v in batch.values[i + 1:]:
        if v is None:
            return False
        if v["id"] == key:
            return True
    return False


def replay(written: list, columns: str, upsert: bool):
    """The model: the accepted records applied in offset order (the order of the writes)."""
    table: dict | list = {} if upsert else []
    for batches in written:
        for b in batches:
            for value, key in zip(b.values, b.keys):
                if value is None:
                    table.pop(int(key), None)
                elif is_bad(value, columns):
                    continue
                elif upsert:
                    table[value["id"]] = value["n"]
                else:
                    table.append((value["id"], value["n"]))
    return sorted(table.items()) if upsert else sorted(table)


def check(db, kind: str, mode: str, columns: str, plan) -> None:
    upsert = mode == "upsert"
    table, group = db.table("prop"), db.group("prop")
    config = {"mode": mode, **({"key": ["id"]} if upsert else {}), **CONFIGS[columns]}
    written, offsets = build(plan, columns, upsert)
    bad = Counter((b.topic, b.partition, b.offset_of(i)) for batches in written for b in batches
                  for i, v in enumerate(b.values) if is_bad(v, columns))
    optional = {(b.topic, b.partition, b.offset_of(i)) for batches in written for b in batches
                for i, v in enumerate(b.values) if is_bad(v, columns) and superseded(b, i, upsert)}
    with sink_on(db, table, group, tombstones="delete" if upsert else "skip", **config) as sink:
        sink.write([fake_batch(0, 1, [SEED])])
        reported = Counter()
        for batches in written:
            reported.update(write_like_runner(sink, batches))
    assert max(reported.values(), default=1) == 1, f"reported more than once: {reported}"
    assert set(reported) <= set(bad), f"good records reported: {set(reported) - set(bad)}"
    assert set(bad) - optional <= set(reported), f"bad records not reported: {set(bad) - optional - set(reported)}"
    rows = db.rows(f"SELECT id, n FROM {db.q(table)}")
    model = replay([[fake_batch(0, 1, [SEED])]] + written, columns, upsert)
    assert sorted(rows) == model
    assert db.offsets(group) == offsets


EXAMPLES = {"sqlite": 100, "postgres": 40}


@pytest.mark.parametrize("columns", sorted(CONFIGS))
@pytest.mark.parametrize("mode", ["insert", "upsert"])
@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_the_sink_matches_the_model(dbs, kind, mode, columns):
    db = dbs(kind)

    @settings(max_examples=EXAMPLES[kind], deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(plan=writes(columns))
    def prop(plan):
        check(db, kind, mode, columns, plan)

    prop()

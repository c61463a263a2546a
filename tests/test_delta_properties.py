"""The delta sink's upsert against a dict: any sequence of writes of records and tombstones over
a few keys, across partitions, leaves exactly the rows the dict holds (the record from the
highest offset of its partition wins; a tombstone deletes), read back by deltalake and checked
against pyarrow over the version's files. Also: a stale replay of any of those writes is fenced
and changes nothing.

More examples locally: ``KPIPE_DELTA_EXAMPLES=200 pytest -n 0 tests/test_delta_properties.py``.
"""
from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltalake import DeltaTable

from kpipe.api import OffsetConflict
from s3kit import make_batch
from test_delta import rows, sink

EXAMPLES = int(os.environ.get("KPIPE_DELTA_EXAMPLES", "10"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

record = st.one_of(st.none(), st.integers(0, 1000))  # None: a tombstone; else the value's "v"
write = st.tuples(st.integers(0, 1), st.lists(st.tuples(st.integers(0, 4), record), min_size=0, max_size=6))


@PROPERTY
@given(st.lists(write, min_size=1, max_size=5), st.data())
def test_upsert_matches_a_dict_and_a_stale_replay_is_fenced(writes, data):
    with tempfile.TemporaryDirectory() as tmp:
        uri = os.path.join(tmp, "t")
        s = sink({"uri": uri, "mode": "upsert", "key": ["k"]}, tombstones="delete")
        model: dict = {}
        nxt = {0: 0, 1: 0}
        done = []
        for partition, recs in writes:
            start = nxt[partition]
            values = [None if v is None else {"k": k, "v": v} for k, v in recs]
            keys = [str(k).encode() for k, _ in recs]
            if not recs:
                continue
            b = make_batch(values, start, partition=partition, keys=keys)
            s.write([b])
            done.append(b)
            nxt[partition] = b.next_offset
            for k, v in recs:
                if v is None:
                    model.pop(k, None)
                else:
                    model[k] = v
        if not DeltaTable.is_deltatable(uri):  # only tombstones so far: no row to delete, nothing stored
            assert not model
            return
        assert {r["k"]: r["v"] for r in rows(uri)} == model
        stored = s.load_offsets([("orders", 0), ("orders", 1)])
        # a write of tombstones only, before any table, stored nothing: replaying it is a no-op
        stale = data.draw(st.sampled_from([b for b in done if (b.topic, b.partition) in stored]))
        with pytest.raises(OffsetConflict):
            sink({"uri": uri, "mode": "upsert", "key": ["k"]}, tombstones="delete").write([stale])
        assert {r["k"]: r["v"] for r in rows(uri)} == model

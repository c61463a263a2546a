"""The typed Parquet path lets pyarrow build a column from Python values in one call when the
values' kinds match its type (``arrowtypes.direct``). Property: that path writes exactly what
fitting value by value writes, and fails at the same record with the same message, for random
mixes of values (booleans beside floats, text beside bytes, extra struct fields, integers a
double would round, nulls) against random column types, inferred from an earlier part of the
stream or declared."""
from __future__ import annotations

import datetime as dt
import io
import os

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpipe.formats import EncodeError
from kpipe.formats import arrowtypes
from kpipe.formats.dataset import widen
from kpipe.formats.parquet import ParquetWriter

EXAMPLES = int(os.environ.get("KPIPE_PROPERTY_EXAMPLES", "40"))
PROPERTY = settings(max_examples=EXAMPLES * 5, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])  # monkeypatch.context() per example
UTC = dt.timezone.utc

FAMILIES = [st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.sampled_from([2**53 + 1, 2**60, -(2**63), 0]),
            st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3), st.binary(max_size=3),
            st.sampled_from([dt.datetime(2026, 11, 26, 10, tzinfo=UTC), dt.datetime(2026, 11, 26, 10),
                             dt.date(2026, 1, 2), "2026-11-26T10:00:00+00:00", 1764151200000])]


@st.composite
def mixes(draw):
    """Values of two families at most, so a column often mixes exactly the pair pyarrow coerces."""
    return st.one_of(*draw(st.lists(st.sampled_from(FAMILIES), min_size=1, max_size=2)))


@st.composite
def values(draw):
    leaf = draw(mixes())
    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["x", "y", "z"]), inner, max_size=3), max_leaves=draw(st.sampled_from([1, 4])))


leaf_types = st.sampled_from(["bigint", "integer", "double", "real", "boolean", "text", "bytes", "json",
                              "timestamptz", "timestamp", "date", "null", "numeric(10,2)"])
types = st.recursive(leaf_types, lambda inner: st.builds(lambda t: {"list": t}, inner) | st.builds(
    lambda f: {"struct": f}, st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, min_size=1, max_size=3)),
    max_leaves=4)


def encode(schema, records, share: bool):
    """Parquet bytes, or the EncodeError's (index, message). ``share``: widen first, as the sinks do."""
    batch = list(records)
    if share:
        widen(schema, batch)
    try:
        w = ParquetWriter(io.BytesIO(), "none", schema=schema)
        w.write(batch)
        w.close()
    except EncodeError as exc:
        return exc.index, str(exc)
    return pq.read_table(io.BytesIO(w.out.getvalue())).to_pylist()


@PROPERTY
@given(data=st.data(), declared=st.fixed_dictionaries({}, optional={"a": types, "b": types}), share=st.booleans())
def test_pyarrow_direct_writes_what_value_by_value_writes(monkeypatch, data, declared, share):
    a, b = data.draw(values()), data.draw(values())
    records = data.draw(st.lists(st.fixed_dictionaries({}, optional={"a": a, "b": b}), min_size=1, max_size=8))
    seen = data.draw(st.integers(1, len(records)))  # the schema of an earlier batch, as a sink's state holds it
    schema = {**widen({}, records[:seen])[0], **declared}
    fast = encode(schema, records, share)
    with monkeypatch.context() as m:
        m.setattr(arrowtypes, "direct", lambda kind, t: False)
        slow = encode(schema, records, share)
    assert fast == slow


@pytest.mark.parametrize("value, column", [(True, 1.5), ("a", b"b"), ({"x": 1, "w": 2}, {"x": 1})])
def test_a_value_pyarrow_would_coerce_is_a_bad_record(value, column):
    records = [{"c": column}, {"c": value}]
    schema = widen({}, [records[0]])[0]
    got = encode(schema, records, share=True)
    assert isinstance(got, tuple) and got[0] == 1, got


def test_integers_a_double_holds_exactly_land_in_a_double_column_and_others_are_bad():
    schema = {"c": "double"}
    assert encode(schema, [{"c": -(2**63)}, {"c": 2**60}, {"c": 1.5}], share=True) == [
        {"c": -9.223372036854776e18}, {"c": 1.152921504606847e18}, {"c": 1.5}]  # pyarrow refuses past 2**53
    for big in (2**53 + 1, 10**400):  # rounded, or past a double's range: a bad record, never a crash
        got = encode(schema, [{"c": 1.5}, {"c": big}], share=True)
        assert isinstance(got, tuple) and got[0] == 1, got

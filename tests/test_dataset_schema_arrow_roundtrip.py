"""``arrowtypes.dataset_type`` reads a table's Arrow column types (Delta, Iceberg) back as dataset
types. Property: it inverts ``arrow_type`` for every type a table column can have, nested too, so
a column kpipe created keeps its type when the next run reads the table back."""
from __future__ import annotations

import os

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from kpipe.formats.arrowtypes import arrow_schema, arrow_type, dataset_schema, dataset_type

EXAMPLES = int(os.environ.get("KPIPE_PROPERTY_EXAMPLES", "40"))

LEAVES = st.sampled_from(["boolean", "bigint", "integer", "smallint", "double", "real", "text", "bytes", "date",
                          "time", "timestamptz", "timestamp"]) | st.builds(
    lambda p, s: f"numeric({p},{min(s, p)})", st.integers(1, 76), st.integers(0, 76))
TYPES = st.recursive(LEAVES, lambda inner: st.builds(lambda t: {"list": t}, inner) | st.builds(
    lambda d: {"struct": d}, st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, min_size=1, max_size=3)),
    max_leaves=6)


@settings(max_examples=EXAMPLES * 2, deadline=None, derandomize=True)
@given(st.dictionaries(st.text("xyz", min_size=1, max_size=3), TYPES, min_size=1, max_size=4))
def test_dataset_type_inverts_arrow_type(schema):
    assert dataset_schema(pa, arrow_schema(pa, schema)) == schema


def test_types_a_table_reports_its_own_way():
    # large and fixed-size variants (Iceberg's fixed, a reader's large_string), uuid and json as text
    assert dataset_type(pa, pa.large_string()) == "text"
    assert dataset_type(pa, pa.large_binary()) == "bytes"
    assert dataset_type(pa, pa.binary(16)) == "bytes"
    assert dataset_type(pa, pa.int8()) == "smallint"
    assert dataset_type(pa, pa.large_list(pa.int32())) == {"list": "integer"}
    assert dataset_type(pa, arrow_type(pa, "uuid")) == dataset_type(pa, arrow_type(pa, "json")) == "text"

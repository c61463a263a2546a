"""``uuid`` columns are Iceberg's ``uuid`` type (16 bytes; Parquet's UUID logical type), read
back as the same UUIDs by pyiceberg's scan, by pyarrow over the data files and by DuckDB; a
key column stays text (pyiceberg's copy-on-write delete cannot compare uuids), as does a
string column of a table written before."""
from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpipe.api import BadRecordError, SinkContext
from kpipe.sinks.iceberg import plugin

pytest.importorskip("pyiceberg")
from pyiceberg.types import StringType, UUIDType  # noqa: E402
from test_iceberg import _scan, _typed_batch  # noqa: E402


def config_at(root) -> dict:
    return {"catalog": {"type": "sql", "uri": f"sqlite:///{root}/catalog.db", "warehouse": f"file://{root}/warehouse"},
            "table": "kpipe.records"}


def _sink(config, tombstones="skip"):
    sink = plugin.create(config, SinkContext(pipeline="t", group="g", tombstones=tombstones))
    sink.open()
    return sink


def _files(config) -> list:
    return [t.file.file_path.removeprefix("file://") for t in _scan(config).scan().plan_files()]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.one_of(st.none(), st.uuids()), min_size=1, max_size=8), as_text=st.booleans())
def test_uuids_are_stored_as_iceberg_uuids_and_read_back_the_same(tmp_path_factory, ids, as_text):
    import duckdb

    root = tmp_path_factory.mktemp("uuid")
    config = config_at(root) | {"columns": {"ref": "uuid"}}
    values = [{"n": i, "ref": None if u is None else (str(u).upper() if as_text else u)} for i, u in enumerate(ids)]
    _sink(config).write([_typed_batch(values)])
    field = _scan(config).schema().find_field("ref")
    assert isinstance(field.field_type, UUIDType), field
    assert [r["ref"] for r in sorted(_scan(config).scan().to_arrow().to_pylist(), key=lambda r: r["n"])] == ids
    direct = ds.dataset(_files(config), format="parquet").to_table().sort_by("n")
    assert direct.schema.field("ref").type == pa.uuid()
    assert [None if b is None else uuid.UUID(bytes=b) for b in direct.column("ref").cast(pa.binary(16)).to_pylist()] == ids
    got = duckdb.connect().execute(f"SELECT ref FROM read_parquet({_files(config)!r}) ORDER BY n").fetchall()
    assert [r[0] for r in got] == ids


def test_a_value_that_is_not_a_uuid_is_a_bad_record_at_its_index(tmp_path):
    config = config_at(tmp_path) | {"columns": {"ref": "uuid"}}
    sink = _sink(config)
    sink.write([_typed_batch([{"id": "a", "ref": str(uuid.uuid4())}])])
    with pytest.raises(BadRecordError) as exc:
        sink.write([_typed_batch([{"id": "b", "ref": str(uuid.uuid4())}, {"id": "c", "ref": "nope"}], start=1)])
    assert exc.value.index == 1
    assert [r["id"] for r in _scan(config).scan().to_arrow().to_pylist()] == ["a"]


def test_upsert_keeps_a_uuid_key_as_text_and_a_uuid_value_as_uuid(tmp_path):
    k1, k2, v1, v2 = (uuid.uuid4() for _ in range(4))
    config = config_at(tmp_path) | {"mode": "upsert", "key": ["id"],
                                                   "columns": {"id": "uuid", "ref": "uuid"}}
    sink = _sink(config, tombstones="delete")
    sink.write([_typed_batch([{"id": str(k1), "ref": str(v1)}, {"id": str(k2), "ref": str(v1)}])])
    sink.write([_typed_batch([{"id": str(k2), "ref": str(v2)}, None], start=2, keys=[b"x", str(k1).encode()])])
    schema = _scan(config).schema()
    assert isinstance(schema.find_field("id").field_type, StringType)
    assert isinstance(schema.find_field("ref").field_type, UUIDType)
    assert _scan(config).scan().to_arrow().to_pylist() == [{"id": str(k2), "ref": v2}]


def test_a_string_column_of_an_older_table_stays_text(tmp_path):
    u = uuid.uuid4()
    config = config_at(tmp_path)
    _sink(config).write([_typed_batch([{"id": "a", "ref": str(u)}])])  # no declared type: inferred as text
    _sink(config | {"columns": {"ref": "uuid"}}).write([_typed_batch([{"id": "b", "ref": u}], start=1)])
    assert isinstance(_scan(config).schema().find_field("ref").field_type, StringType)
    assert sorted(r["ref"] for r in _scan(config).scan().to_arrow().to_pylist()) == sorted([str(u)] * 2)

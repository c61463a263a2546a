"""The remembered (inferred) Avro schema of a dataset never drops a field a record holds: a record
it cannot hold (a key that is not UTF-8 text, an integer key from a transform) is a bad record
(issue 15 item 1; the files value table's avro cells for the same values)."""
from __future__ import annotations

import fastavro
import pytest

from kpipe.api import BadRecordError, SinkContext
from kpipe.sinks.files.sink import FilesSink
from s3kit import make_batch


@pytest.mark.parametrize("bad", [{"id": 1, "w": {"x": 2, 1: "int key"}}, {"id": 1, "\udc00": 1},
                                 {"id": 1, 7: "top-level int key"}])
def test_a_record_the_remembered_schema_cannot_hold_is_a_bad_record(tmp_path, bad):
    # A key no stored schema can name stays out of the remembered schema; the writer must then
    # refuse the record (fastavro would write it without that field), not crash or drop it.
    s = FilesSink({"path": str(tmp_path), "format": "avro", "fsync": False}, SinkContext("p", "g"))
    s.open()
    s.write([make_batch([{"id": 0, "w": {"x": 1}}], 0, topic="t")])
    with pytest.raises(BadRecordError) as info:
        s.write([make_batch([bad], 1, topic="t")])
    assert info.value.index == 0
    rows = [r for f in sorted(tmp_path.glob("t/*/*.avro")) for r in fastavro.reader(open(f, "rb"))]
    assert rows == [{"id": 0, "w": {"x": 1}}]

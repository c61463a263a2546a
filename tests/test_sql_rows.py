"""COPY text: the column-at-a-time ``copy_text`` against the record-by-record reference."""
from __future__ import annotations

import math
import random

import orjson
import pytest

from kpipe.api import BadRecordError, Batch
from kpipe.sinks.sql.columns import METADATA_TYPES, Column
from kpipe.sinks.sql.rows import ROW_MAJOR_FIELDS, _copy_lines_by_record, copy_text, copy_text_lines


class _Msg:
    def __init__(self, offset: int, key, ts):
        self._offset, self._key, self._ts = offset, key, ts

    def offset(self):
        return self._offset

    def key(self):
        return self._key

    def timestamp(self):
        return (0, None) if self._ts is None else (1, self._ts)


_STRINGS = ["", "plain", "tab\there", "new\nline", "cr\rhere", "back\\slash", "\\N", "ünï", "\u2028",
            "nul\x00", "mixed\t\n\r\\"]
_FLOATS = [0.0, -0.0, 1.5, 0.1, 1 / 3, 1e-5, 1e300, 123456789.125, math.nan, math.inf, -math.inf, 0.0001]


def _value(rng: random.Random, shape: str):
    if shape == "str":
        return rng.choice(_STRINGS) + str(rng.randrange(100))
    if shape == "int":
        return rng.choice([0, -1, 7, 2**62, 2**70, -(2**64)])
    if shape == "float":
        return rng.choice(_FLOATS) if rng.random() < 0.5 else rng.uniform(-1e6, 1e6)
    if shape == "bool":
        return rng.random() < 0.5
    if shape == "none":
        return None
    return rng.choice([{"a": [1, "x\ty"]}, [1, 2.5, None], "s", 3, 4.5, True, None, b"\x00\xff"])


def _batch(rng: random.Random, n: int, fields: dict) -> Batch:
    values = []
    for _ in range(n):
        rec = {}
        for name, shapes in fields.items():
            if rng.random() < 0.05:
                continue  # missing field
            rec[name] = _value(rng, rng.choice(shapes))
        rec["nested"] = {"inner": _value(rng, rng.choice(["str", "int", "none"]))}
        values.append(rec)
    msgs = [_Msg(100 + i, rng.choice([None, b"k\t1", b"\xff", "s"]), rng.choice([None, 1_700_000_000_123]))
            for i in range(n)]
    return Batch("top\tic", 3, 100, 100 + n, values, msgs)


_TYPES = ["text", "bigint", "double", "boolean", "json", "timestamptz", "date", "bytes", "numeric"]
# Each field's value shapes: one shape (the fast paths) or a mix (the value-by-value path).
_SHAPES = [["str"], ["int"], ["float"], ["int", "float"], ["bool"], ["str", "none"], ["int", "none"],
           ["float", "none"], ["str", "int", "float", "bool", "none", "other"]]


@pytest.mark.parametrize("seed", range(150))
def test_copy_text_equals_the_record_by_record_reference(seed):
    rng = random.Random(seed)
    # narrow, or wide enough to be read record by record (rows.ROW_MAJOR_FIELDS)
    width = rng.randrange(1, 6) if seed % 3 else rng.randrange(ROW_MAJOR_FIELDS, ROW_MAJOR_FIELDS + 40)
    fields = {f"f{i}": rng.choice(_SHAPES) for i in range(width)}
    batch = _batch(rng, rng.choice([1, 2, 17, 300]), fields)
    # wide: types that take every shape, or one bad value would send the whole batch record by record
    types = _TYPES if width < ROW_MAJOR_FIELDS else ["text", "json"]
    columns = [Column(name, rng.choice(types), (name,)) for name in fields]
    columns.append(Column("deep", rng.choice(_TYPES), ("nested", "inner")))
    for meta in rng.sample(sorted(METADATA_TYPES), rng.randrange(0, 3)):
        columns.insert(rng.randrange(len(columns) + 1), Column(meta, METADATA_TYPES[meta]))
    while True:  # as the runner does: each record the reference rejects, copy_text rejects too
        try:
            expected = "".join(_copy_lines_by_record(batch, columns))
            break
        except BadRecordError as exc:
            with pytest.raises(BadRecordError) as got:
                copy_text(batch, columns)
            assert (got.value.index, got.value.offset) == (exc.index, exc.offset)
            batch = batch.without(exc.index)
    text = copy_text(batch, columns)
    assert text == expected
    assert copy_text_lines(text) == _copy_lines_by_record(batch, columns)
    if batch.values:  # (every record may have been rejected)
        assert copy_text_lines(text)[0].count("\t") == len(columns) - 1


def test_copy_text_seq_numbers_the_rows_as_a_last_column():
    rng = random.Random(1)
    batch = _batch(rng, 5, {"a": ["str"], "b": ["int", "float"]})
    columns = [Column("a", "text", ("a",)), Column("b", "double", ("b",))]
    lines = copy_text_lines(copy_text(batch, columns, seq=True))
    assert lines == [f"{line[:-1]}\t{i}\n" for i, line in enumerate(_copy_lines_by_record(batch, columns))]


def test_copy_text_seq_on_the_record_by_record_path():
    # A value no encoder can write in a json column: a bad record at its own index...
    batch = Batch("t", 0, 0, 3, [{"a": 1}, {"a": object()}, {"a": 2}], [_Msg(i, None, None) for i in range(3)])
    with pytest.raises(BadRecordError) as exc:
        copy_text(batch, [Column("a", "json", ("a",))], seq=True)
    assert (exc.value.index, exc.value.offset) == (1, 1)
    # ...bytes, which orjson refuses, take the jsonl writer's encoder (base64), numbered too...
    batch = Batch("t", 0, 0, 2, [{"a": b"x"}, {"a": 1}], [_Msg(0, None, None), _Msg(1, None, None)])
    assert copy_text(batch, [Column("a", "json", ("a",))], seq=True) == '"eA=="\t0\n1\t1\n'
    # ...and a mixed column the fast path hands to the value-by-value converters still numbers its rows.
    batch = Batch("t", 0, 0, 2, [{"a": "x\ty"}, {"a": 2.5}], [_Msg(0, None, None), _Msg(1, None, None)])
    assert copy_text(batch, [Column("a", "text", ("a",))], seq=True) == "x\\ty\t0\n2.5\t1\n"


def test_copy_text_empty_batch_and_no_columns():
    assert copy_text(Batch("t", 0, 0, 0, [], []), [Column("a", "text", ("a",))]) == ""
    batch = Batch("t", 0, 0, 2, [{}, {"x": 1}], [_Msg(0, None, None), _Msg(1, None, None)])
    assert copy_text(batch, []) == "\n\n"
    assert copy_text_lines("\n\n") == ["\n", "\n"]

"""COPY text joined as it is sent (rows.CopyPieces): whole lines, the same text on every pass."""
from __future__ import annotations

import pytest

from kpipe.api import BadRecordError, Batch
from kpipe.sinks.sql import rows
from kpipe.sinks.sql.columns import Column
from kpipe.sinks.sql.rows import _copy_lines_by_record


class _Msg:
    def __init__(self, offset: int):
        self._offset = offset

    def offset(self):
        return self._offset

    def key(self):
        return None

    def timestamp(self):
        return (0, None)


def _batch(values: list) -> Batch:
    return Batch("t", 0, 0, len(values), values, [_Msg(i) for i in range(len(values))])


COLUMNS = [Column("a", "text", ("a",)), Column("b", "double", ("b",))]


def test_copy_chunks_are_joined_as_sent_and_can_be_sent_again(monkeypatch):
    monkeypatch.setattr(rows, "CHUNK_CHARS", 64)  # many pieces from a small batch
    batch = _batch([{"a": "x\ty" * (i % 7), "b": i / 4} for i in range(300)])
    expected = "".join(_copy_lines_by_record(batch, COLUMNS))
    pieces = rows.copy_chunks(batch, COLUMNS)
    first, again = list(pieces), list(pieces)  # a retry or a narrowing iterates it again
    assert len(first) > 10 and first == again and "".join(first) == expected
    assert all(p.endswith("\n") for p in first)  # whole lines: copy_text_lines splits them back


@pytest.mark.parametrize("at", [0, 200, 299])
def test_a_lone_surrogate_is_a_bad_record_before_any_piece_is_sent(monkeypatch, at):
    monkeypatch.setattr(rows, "CHUNK_CHARS", 64)
    values = [{"a": "x", "b": 1}] * 300
    values[at] = {"a": "bad\ud800", "b": 1}
    with pytest.raises(BadRecordError) as exc:
        rows.copy_chunks(_batch(values), COLUMNS)
    assert exc.value.index == at

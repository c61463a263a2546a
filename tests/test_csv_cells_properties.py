"""Property test of CSV cells (issue 15 items 2-4): random records of JSON-like values and the
values Avro's logical types decode to (datetimes with any fixed zone, dates, times, uuids,
decimals, bytes) plus durations and sets, written through the real files sink and the S3 sink as
the runner does it (a reported record is dropped and the rest written again), read back with
csv.reader and pyarrow's CSV reader. Each record is reported bad exactly when the model says so
(a lone surrogate anywhere, a non-finite number inside JSON text), and every cell of the others
is the documented text (docs/sinks/files.md, Formats): null an empty unquoted cell, "" a quoted
empty cell, everything else its plain text, built here by a model that does not use kpipe.

More examples locally: ``KPIPE_CSV_EXAMPLES=1000 pytest -n 0 tests/test_csv_cells_properties.py``.
"""
from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import math
import os
import uuid
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pa_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3kit import bucket, moto_server, s3  # noqa: F401
from test_formats_hostile import through_s3, through_sink

EXAMPLES = int(os.environ.get("KPIPE_CSV_EXAMPLES", "60"))
UTC = dt.timezone.utc

# -- values ---------------------------------------------------------------------------------------

TEXT = st.text(max_size=5) | st.sampled_from(["", " ", ",", '"', 'a"b', "\r\n", "\n", "x,y", "\x00", "null",
                                              "\ud800", "é€𝄞"])
ZONES = st.none() | st.just(UTC) | st.builds(dt.timezone, st.timedeltas(
    min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59)))
DECIMALS = st.builds(lambda n, e: Decimal(f"{n}E{e}"), st.integers(-(10**30), 10**30), st.integers(-30, 30)) \
    | st.sampled_from([Decimal("-0.00"), Decimal("0E+3"), Decimal("1E+5000"), Decimal("NaN"), Decimal("-Infinity")])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, 1e16, 5e-324])
LOGICAL = st.datetimes(timezones=ZONES) | st.dates() | st.times(timezones=ZONES) | st.uuids() \
    | st.binary(max_size=6) | st.timedeltas() | DECIMALS
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | FLOATS | TEXT
# inside JSON text, the shared encoder's strings: zones in whole minutes (orjson drops a zone's seconds)
MINUTE_ZONES = st.none() | st.just(UTC) | st.builds(lambda m: dt.timezone(dt.timedelta(minutes=m)),
                                                    st.integers(-23 * 60 - 59, 23 * 60 + 59))
NESTED_LEAVES = SCALARS | st.datetimes(timezones=MINUTE_ZONES) | st.times(timezones=MINUTE_ZONES) | st.dates() \
    | st.uuids() | st.binary(max_size=4) | DECIMALS
NESTED = st.recursive(NESTED_LEAVES, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
                      max_leaves=6).filter(lambda v: isinstance(v, (list, dict))) \
    | st.frozensets(st.integers(-3, 3), max_size=3)
CELLS = SCALARS | LOGICAL | NESTED
KEYS = st.sampled_from(["a", "b", "c", "value"]) | TEXT
RECORDS = st.lists(st.dictionaries(KEYS, CELLS, max_size=4) | CELLS, min_size=1, max_size=6)

# -- the model ------------------------------------------------------------------------------------


def _strings(v):
    """Every string in ``v``: values and keys, at any depth."""
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for k, x in v.items():
            yield from _strings(k)
            yield from _strings(x)
    elif isinstance(v, (list, frozenset)):
        for x in v:
            yield from _strings(x)


def _numbers(v):
    if isinstance(v, dict):
        v = list(v.values())
    if isinstance(v, (list, frozenset)):
        for x in v:
            yield from _numbers(x)
    elif isinstance(v, (float, Decimal)):
        yield v


def is_bad(record) -> bool:
    """A lone surrogate anywhere (no UTF-8 for it), or Infinity/NaN inside JSON text."""
    row = record if isinstance(record, dict) else {"value": record}
    for s in _strings(row):
        try:
            s.encode()
        except UnicodeEncodeError:
            return True
    return any(not (x.is_finite() if isinstance(x, Decimal) else math.isfinite(x))
               for x in row.values() if isinstance(x, (list, dict, frozenset)) for x in _numbers(x))


def _offset(off: dt.timedelta | None) -> str:
    if off is None:
        return ""
    sign, off = ("-", -off) if off < dt.timedelta(0) else ("+", off)
    text = f"{sign}{off.seconds // 3600:02d}:{off.seconds // 60 % 60:02d}"
    if off.seconds % 60 or off.microseconds:
        text += f":{off.seconds % 60:02d}"
    return text + (f".{off.microseconds:06d}" if off.microseconds else "")


def _clock(v) -> str:
    return f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}" + (f".{v.microsecond:06d}" if v.microsecond else "")


def _decimal(d: Decimal) -> str:
    if not d.is_finite() or abs(d.as_tuple().exponent) > 1000:
        return str(d)
    sign, digits, exp = d.as_tuple()
    text = "".join(map(str, digits))
    if exp >= 0:
        body = str(int(text + "0" * exp))
    else:
        text = text.rjust(-exp + 1, "0")
        body = text[:exp] + "." + text[exp:]
    return ("-" if sign else "") + body


def _duration(v: dt.timedelta) -> str:
    sign, v = ("-", -v) if v < dt.timedelta(0) else ("", v)
    text = f"{v.days}D" if v.days else ""
    if v.seconds or v.microseconds:
        text += f"T{v.seconds}" + (f".{v.microseconds:06d}".rstrip("0") if v.microseconds else "") + "S"
    return sign + "P" + (text or "0D")


def text_of(v) -> str:
    """The documented text of a non-null scalar cell."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, str)):
        return str(v)
    if isinstance(v, Decimal):
        return _decimal(v)
    if isinstance(v, dt.datetime):
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{_clock(v)}{_offset(v.utcoffset())}"
    if isinstance(v, dt.date):
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d}"
    if isinstance(v, dt.time):
        return _clock(v) + _offset(v.utcoffset())
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, dt.timedelta):
        return _duration(v)
    raise AssertionError(f"no scalar text for {v!r}")


def same_json(got, want) -> bool:
    """``got`` (parsed with numbers kept as text) is JSON text of ``want``: strings as ``text_of``
    gives them, numbers exact, sets as arrays in any order."""
    if want is None or isinstance(want, bool):
        return got is want
    if isinstance(want, (int, float, Decimal)):
        if not isinstance(got, (int, str)) or isinstance(got, bool):
            return False
        if isinstance(want, float):
            g = float(got)
            return math.isnan(g) if math.isnan(want) else g == want and math.copysign(1, g) == math.copysign(1, want)
        return Decimal(got) == want
    if isinstance(want, (str, dt.date, dt.time, uuid.UUID, bytes)):
        return got == text_of(want)
    if isinstance(want, frozenset):
        return isinstance(got, list) and sorted(got) == sorted(want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(same_json, got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(same_json(got[k], want[k]) for k in want)
    raise AssertionError(f"unexpected {want!r}")


def cell_ok(cell: str, want) -> bool:
    """``cell`` (as csv.reader reads it) is the documented text of ``want`` (not None)."""
    if isinstance(want, float):
        return same_json(cell, want)  # as Python writes it: nan, inf, -0.0, 1e+16
    if isinstance(want, (list, dict, frozenset)):
        return same_json(json.loads(cell, parse_float=str, parse_constant=str), want)
    return cell == text_of(want)


# -- the check ------------------------------------------------------------------------------------


def check(values: list, rejected: list[int], files: list[bytes]) -> None:
    assert len(set(rejected)) == len(rejected), f"a record reported bad twice: {rejected}"
    assert sorted(rejected) == [i for i, v in enumerate(values) if is_bad(v)], (rejected, values)
    kept = [v if isinstance(v, dict) else {"value": v} for i, v in enumerate(values) if i not in rejected]
    if not kept:
        assert files == []
        return
    (data,) = files
    text = data.decode()
    header, *rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == len(kept)
    assert all(k in header for row in kept for k in row)
    nulls = _arrow_cells(data, header)
    for i, (row, want) in enumerate(zip(rows, kept)):
        cells = dict(zip(header, row)) if row else dict.fromkeys(header, "")  # one column: [] for null
        for c in header:
            w = want.get(c)
            if nulls is not None:  # null is an unquoted empty cell, "" a quoted one
                assert (nulls[c][i] is None) == (w is None), (c, nulls[c][i], w)
            assert w is None and cells[c] == "" or w is not None and cell_ok(cells[c], w), (c, cells[c], w)


def _arrow_cells(data: bytes, header: list[str]) -> dict | None:
    """Each column as pyarrow's CSV reader reads it, told only an unquoted empty cell is null."""
    if not header:
        return None
    convert = pa_csv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False, null_values=[""],
                                    column_types={c: pa.string() for c in header})
    parse = pa_csv.ParseOptions(ignore_empty_lines=False, newlines_in_values=True)
    table = pa_csv.read_csv(io.BytesIO(data), parse_options=parse, convert_options=convert)
    return {c: table.column(i).to_pylist() for i, c in enumerate(header)}


PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@PROPERTY
@given(values=RECORDS)
def test_files_sink_csv_cells_are_the_documented_text(tmp_path_factory, values):
    rejected, files = through_sink(tmp_path_factory.mktemp("csv"), "csv", values)
    check(values, rejected, files)


@settings(PROPERTY, max_examples=max(1, EXAMPLES // 3))
@given(values=RECORDS)
def test_s3_sink_csv_cells_are_the_documented_text(moto_server, s3, bucket, values):
    rejected, files = through_s3(moto_server, s3, bucket, "csv", values)
    check(values, rejected, files)

"""Value tables: how each edge value lands in each column (or format) of a sink, kept as data,
so that a sink's docs and its tests come from one source and cannot drift apart.

A ``ValueTable`` has rows (a value, or a few values that read alike) and columns (column types,
or formats), and is tested on one or more targets (``dialects``: SQL dialects, or for a files
table e.g. the local and the S3 sink). Each cell says what each value becomes: ``BAD`` (a bad
record, handled by the spec's ``errors`` policy) or the value an independent reader gets back,
with overrides for the targets where it differs, and the text shown in the docs.

``render`` turns a table into Markdown; ``python -m kpipe.value_table`` writes it between the
table's markers in its doc page (``--check`` fails when a page is stale, as ``kpipe docs --check``
does for docs/reference/). The tests iterate ``ValueTable.cases()`` and assert each expectation
against the real sink, read back with independent readers.

How a second table plugs in (e.g. the files/S3 formats of docs/sinks/files.md):

1. Write a module with ``TABLE = ValueTable(name="files", doc="docs/sinks/files.md",
   columns=("jsonl", "csv", "avro", "parquet"), dialects=("files", "s3"), rows=[...])``; the
   expected value of a cell is whatever its reader gives back (a parsed JSON value for jsonl, a
   cell string for csv, fastavro's or pyarrow's Python value).
2. Add the module's name to ``TABLES`` below, and put the markers
   ``<!-- value-table: files -->`` and ``<!-- /value-table -->`` in the doc page where the
   table goes. tests/test_value_tables.py then checks the page is current and each cell's text
   agrees with its expectations.
3. A test module parametrizes over ``TABLE.cases()``, writes each case's value through the sink
   and compares what its reader returns with ``case.expect`` (``BAD``: the record was reported),
   e.g. by ``disagreements``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from decimal import Decimal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

__all__ = ["BAD", "MISSING", "Cell", "Row", "ValueTable", "Case", "TABLES", "load", "render", "disagreements",
           "splice", "stale", "main", "json_form"]

#: The modules that hold a ``TABLE``, one per sink (or format family).
TABLES = ("kpipe.sinks.sql.value_table", "kpipe.formats.value_table")

ROOT = Path(__file__).resolve().parent.parent


class _Mark:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The expectation "a bad record": reported once, at its own index; nothing written for it.
BAD = _Mark("BAD")
#: As an input value: the record has no such field at all.
MISSING = _Mark("MISSING")


def _all_bad(expect) -> bool:
    return expect is BAD or (type(expect) is tuple and all(e is BAD for e in expect))


@dataclass(frozen=True)
class Cell:
    """What a row's values become in one column.

    ``expect``: for a row of one value, the value read back (or ``BAD``); for a row of several,
    a tuple with one such expectation per value, or ``BAD`` for all of them. ``text``: the docs cell. ``overrides``: a
    target (dialect) name -> its own ``expect``, where it differs."""
    expect: Any
    text: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __init__(self, expect, text: str | None = None, **overrides):
        if text is None:
            if not _all_bad(expect) or overrides:
                raise ValueError("a cell that is not simply BAD needs its docs text")
            text = "bad record"
        object.__setattr__(self, "expect", expect)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "overrides", dict(overrides))

    def on(self, dialect: str):
        return self.overrides.get(dialect, self.expect)


@dataclass(frozen=True)
class Row:
    """One line of the table: its label in the docs, the input values (Python values, built as
    a deserializer or a transform would hand them over), and a cell per column. A bare ``BAD``
    stands for ``Cell(BAD)``."""
    label: str
    values: tuple
    cells: Mapping[str, Cell]

    def __init__(self, label: str, values: Sequence, **cells):
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "values", tuple(values))
        object.__setattr__(self, "cells", {k: v if isinstance(v, Cell) else Cell(v) for k, v in cells.items()})


@dataclass(frozen=True)
class Case:
    """One value of one row in one column on one target, with what must come of it."""
    row: Row
    column: str
    dialect: str
    value: Any
    expect: Any


@dataclass(frozen=True)
class ValueTable:
    """A sink's table: checked when built (a cell per column, one expectation per value, overrides
    only for known targets), so a mistake in the data fails at import, not in a test's output."""
    name: str          # the marker's name in the doc page
    doc: str           # the page, relative to the repository
    columns: tuple     # column types or formats, in the order shown
    dialects: tuple    # the targets every cell is tested on
    rows: tuple
    dialect_names: Mapping[str, str] = field(default_factory=dict)  # as written in the docs
    corner: str = "value"

    def __post_init__(self):
        for row in self.rows:
            if set(row.cells) != set(self.columns):
                raise ValueError(f"{row.label}: cells for {sorted(row.cells)}, columns are {self.columns}")
            for col, cell in row.cells.items():
                for exp in [cell.expect, *cell.overrides.values()]:
                    if len(row.values) > 1 and exp is not BAD and not (type(exp) is tuple and len(exp) == len(row.values)):
                        raise ValueError(f"{row.label} / {col}: one expectation per value, in a tuple")
                unknown = set(cell.overrides) - set(self.dialects)
                if unknown:
                    raise ValueError(f"{row.label} / {col}: overrides for unknown targets {unknown}")

    def cases(self) -> Iterator[Case]:
        """Every (row value, column, target) with its expectation, in table order."""
        for row in self.rows:
            for col in self.columns:
                cell = row.cells[col]
                for dialect in self.dialects:
                    exp = cell.on(dialect)
                    each = (exp,) * len(row.values) if exp is BAD else exp if len(row.values) > 1 else (exp,)
                    for value, e in zip(row.values, each):
                        yield Case(row, col, dialect, value, e)


def json_form(v):
    """A JSON value made comparable, for a test that reads JSON back: numbers by exact decimal
    value and the sign of zero (JSON has one number type: ``2`` and ``2.0`` are equal, and
    PostgreSQL's JSONB writes ``1e300`` out as its digits), booleans apart from numbers. Parse
    what was read with ``json.loads(text, parse_float=Decimal, parse_int=Decimal)``."""
    if type(v) is bool or v is None or type(v) is str:
        return v
    if isinstance(v, (int, float, Decimal)):
        d = Decimal(repr(v)) if type(v) is float else Decimal(v)
        return ("number", d, d.is_signed())
    if isinstance(v, dict):
        return {k: json_form(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_form(x) for x in v]
    raise TypeError(f"not a JSON value: {v!r}")


def disagreements(cases: Sequence[Case], bad, got: Mapping, same, show=repr, label=lambda case: "") -> list[str]:
    """Where a write broke its table, one line each: case ``i`` was record ``i``; ``bad`` holds
    the records reported bad, ``got`` what a reader gave back by record, ``same(read, expect)``
    compares one. One loop for every table's test, so each judges a case alike."""
    wrong = []
    for i, c in enumerate(cases):
        name = f"{label(c)}{show(c.value)}"
        if c.expect is BAD:
            if i not in bad or i in got:
                wrong.append(f"{name}: should be a bad record; read back {show(got.get(i))}")
        elif i in bad:
            wrong.append(f"{name}: reported bad; the table says {show(c.expect)}")
        elif i not in got:
            wrong.append(f"{name}: missing")
        elif not same(got[i], c.expect):
            wrong.append(f"{name}: read back {show(got[i])}; the table says {show(c.expect)}")
    return wrong


def load(module: str) -> ValueTable:
    return importlib.import_module(module).TABLE


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(table: ValueTable) -> str:
    """The Markdown table, one line per row, ending in a newline."""
    lines = ["| " + " | ".join([table.corner, *table.columns]) + " |",
             "|" + "---|" * (len(table.columns) + 1)]
    for row in table.rows:
        lines.append("| " + " | ".join([_cell(row.label)] + [_cell(row.cells[c].text) for c in table.columns]) + " |")
    return "\n".join(lines) + "\n"


def _markers(table: ValueTable) -> tuple[str, str]:
    return f"<!-- value-table: {table.name} -->", "<!-- /value-table -->"


def splice(text: str, table: ValueTable, source: str) -> str:
    """``text`` with the region between the table's markers replaced by ``render(table)``, under
    a comment naming ``source``, the module to edit instead."""
    begin, end = _markers(table)
    start = text.find(begin)
    stop = text.find(end, start + 1)
    if start < 0 or stop < 0:
        raise ValueError(f"{table.doc}: no '{begin}' ... '{end}' markers")
    note = f"<!-- generated from {source} by python -m kpipe.value_table: edit that, not this -->\n"
    return text[:start + len(begin)] + "\n" + note + render(table) + text[stop:]


def stale(modules: Sequence[str] = TABLES, root: Path = ROOT) -> dict[Path, str]:
    """{page: its up-to-date text} for every page whose table is not current."""
    out = {}
    for module in modules:
        table = load(module)
        path = root / table.doc
        current = out.get(path) or path.read_text(encoding="utf-8")
        fresh = splice(current, table, module.replace(".", "/") + ".py")
        if fresh != current:
            out[path] = fresh
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kpipe.value_table",
                                     description="Write the value tables into their doc pages.")
    parser.add_argument("--check", action="store_true", help="only report stale pages (exit 1)")
    args = parser.parse_args(argv)
    pages = stale()
    for path, text in pages.items():
        if args.check:
            print(f"{path}: stale value table; run: python -m kpipe.value_table", file=sys.stderr)
        else:
            path.write_text(text, encoding="utf-8")
            print(path)
    return 1 if args.check and pages else 0


if __name__ == "__main__":
    sys.exit(main())

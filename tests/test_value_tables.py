"""The value tables (kpipe/value_table.py): the doc pages show them as generated, and every
cell's docs text agrees with what its tests expect, so neither can drift from the other."""
from __future__ import annotations

import pytest

from kpipe.value_table import BAD, TABLES, ValueTable, load, main, render, splice


def test_doc_pages_show_the_current_tables(capsys):
    assert main(["--check"]) == 0, capsys.readouterr().err


def _expectations(table: ValueTable, cell) -> list:
    out = []
    for d in table.dialects:
        e = cell.on(d)
        out.extend(e if type(e) is tuple else [e])
    return out


@pytest.mark.parametrize("module", TABLES)
def test_cell_texts_say_what_the_tests_expect(module):
    table = load(module)
    wrong = []
    for row in table.rows:
        for col, cell in row.cells.items():
            bad = any(e is BAD for e in _expectations(table, cell))
            if bad != ("bad record" in cell.text):
                wrong.append(f"{row.label} / {col}: {cell.text!r} but bad record is {'' if bad else 'not '}expected")
            unnamed = [d for d in cell.overrides if table.dialect_names.get(d, d) not in cell.text]
            if unnamed:
                wrong.append(f"{row.label} / {col}: {cell.text!r} does not name {unnamed}, which differ")
    assert not wrong, "\n".join(wrong)


def test_splice_replaces_only_between_the_markers():
    from kpipe.value_table import Cell, Row
    t = ValueTable(name="t", doc="x.md", columns=("a",), dialects=("d",),
                   rows=(Row("`1`", [1], a=Cell(1, "one")), Row("x", [object()], a=BAD)))
    page = "before\n<!-- value-table: t -->\nold | table\n<!-- /value-table -->\nafter\n"
    out = splice(page, t, "m.py")
    assert out.startswith("before\n<!-- value-table: t -->\n<!-- generated from m.py")
    assert out.endswith(render(t) + "<!-- /value-table -->\nafter\n")
    assert render(t).splitlines() == ["| value | a |", "|---|---|", "| `1` | one |", "| x | bad record |"]
    assert splice(out, t, "m.py") == out
    with pytest.raises(ValueError):
        splice("no markers", t, "m.py")

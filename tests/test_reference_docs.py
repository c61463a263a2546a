"""CI fails when docs/reference/ is stale: regenerate with `kpipe docs --dist kpipe`."""
from pathlib import Path

from kpipe.cli import main

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference"


def test_reference_docs_are_up_to_date(capsys):
    code = main(["docs", "--check", "--dist", "kpipe", "-o", str(REFERENCE)])
    assert code == 0, capsys.readouterr().err + "\nrun: kpipe docs --dist kpipe"
